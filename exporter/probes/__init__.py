"""HTTP probes of app endpoints: availability, latency, health JSON and the app's pool."""
