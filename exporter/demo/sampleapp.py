"""A small real HTTP app with the runbooks' health endpoints, for the demo and end-to-end tests.

    app = SampleApp(host="127.0.0.1", port=0).start()
    app.url                        # http://127.0.0.1:<port>
    app.set_incident("pool_exhausted")   # or "slow", "down", "errors", "degraded", None
    app.stop()

Endpoints (shapes from runbooks 001 and 004):
  /api/health               {"status": "ok", "database": "connected", "supabase": "connected"}
  /api/health/live          {"alive": true}
  /api/health/ready         {"ready": true, "checks": {...}}
  /api/health/quick         {"healthy": true, "status": "healthy"}
  /api/health/detailed      {"status": "healthy", "checks": {"database": {"status": "up"}, ...}}
  /api/monitoring/health    {"status": "ok", "checks": {...}, "pool": {SQLAlchemy QueuePool}}
  /api/health/metrics       {"responseTime": {"avg", "p50", "p95", "p99"} (ms), "errorRate",
                             "memory": {"usedPercent"},
                             "database": {"connections": {"active", "idle", "waiting"}}}
  POST /admin/incident      body {"incident": "slow"} or {"incident": null}; 204

Incidents: pool_exhausted (checked_out = pool_size + max_overflow, requests waiting), slow
(every answer takes `slow_delay`, 3.5 s by default: above runbook 000's 3 s critical), down
(health endpoints answer 503 with the database check down), errors (error rate 8 %), degraded
(what the app reports: error rate 6 %, P95 2.5 s, average 900 ms, memory 80 %; its answers
stay fast).
Only stdlib; binds 127.0.0.1 by default.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INCIDENTS = ("pool_exhausted", "slow", "down", "errors", "degraded")


class SampleApp:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, slow_delay: float = 3.5) -> None:
        self.host, self.port, self.slow_delay = host, port, slow_delay
        self.incident: str | None = None
        self.requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> SampleApp:
        app = self

        class Handler(_Handler):
            owner = app

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.name = "sample-app"
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a "slow" incident
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> SampleApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_incident(self, incident: str | None) -> None:
        if incident is not None and incident not in INCIDENTS:
            raise ValueError(f"unknown incident {incident!r}; choose from {list(INCIDENTS)}")
        with self._lock:
            self.incident = incident

    # --- documents ------------------------------------------------------------------------

    def pool(self) -> dict[str, int]:
        # SQLAlchemy QueuePool: pool_size 5, max_overflow 10
        if self.incident == "pool_exhausted":
            return {
                "pool_size": 5,
                "checked_in": 0,
                "checked_out": 15,
                "overflow": 10,
                "max_overflow": 10,
            }
        return {
            "pool_size": 5,
            "checked_in": 3,
            "checked_out": 2,
            "overflow": 0,
            "max_overflow": 10,
        }

    def checks(self) -> dict[str, dict[str, str]]:
        db = "down" if self.incident == "down" else "up"
        return {"database": {"status": db}, "supabase": {"status": "up"}}

    def document(self, path: str) -> tuple[int, dict[str, Any]] | None:
        down = self.incident == "down"
        code = 503 if down else 200
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if path == "/api/health":
            db = "disconnected" if down else "connected"
            status = "error" if down else "ok"
            return code, {
                "status": status,
                "database": db,
                "supabase": "connected",
                "timestamp": now,
            }
        if path == "/api/health/live":
            return 200, {"alive": True, "timestamp": now}  # the process itself is alive
        if path == "/api/health/ready":
            return code, {"ready": not down, "checks": self.checks(), "timestamp": now}
        if path == "/api/health/quick":
            status = "unhealthy" if down else "healthy"
            return code, {"healthy": not down, "status": status, "timestamp": now}
        if path == "/api/health/detailed":
            checks: dict[str, Any] = {**self.checks(), "schema": {"status": "up"}}
            return code, {"status": "unhealthy" if down else "healthy", "checks": checks}
        if path == "/api/monitoring/health":
            status = "error" if down else "ok"
            return code, {"status": status, "checks": self.checks(), "pool": self.pool()}
        if path == "/api/health/metrics":
            slow = self.incident == "slow"
            exhausted = self.incident == "pool_exhausted"
            degraded = self.incident == "degraded"
            if slow:
                times = {"avg": 2400, "p50": 1900, "p95": 6200, "p99": 9100}
            elif degraded:
                times = {"avg": 900, "p50": 600, "p95": 2500, "p99": 4000}
            else:
                times = {"avg": 120, "p50": 85, "p95": 310, "p99": 640}
            errors = {"errors": 0.08, "degraded": 0.06}.get(self.incident or "", 0.002)
            return 200, {
                "requests": {"total": self.requests},
                "responseTime": times,
                "errorRate": errors,
                "memory": {"usedPercent": 80.0 if degraded else 42.5},
                "database": {
                    "connections": {
                        "active": 10 if exhausted else 2,
                        "idle": 0 if exhausted else 8,
                        "waiting": 7 if exhausted else 0,
                    }
                },
            }
        return None


class _Handler(BaseHTTPRequestHandler):
    owner: SampleApp
    server_version = "sample-app"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(self, code: int, doc: Any | None) -> None:
        body = b"" if doc is None else json.dumps(doc).encode()
        self.send_response(code)
        if doc is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        app = self.owner
        with app._lock:
            app.requests += 1
            incident = app.incident
        if incident == "slow":
            app._stopping.wait(app.slow_delay)
        path = self.path.split("?", 1)[0]
        found = app.document(path)
        if found is None:
            self._send(404, {"error": "not found"})
        else:
            self._send(*found)

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/admin/incident":
            self._send(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            data = json.loads(self.rfile.read(min(length, 4096)) or b"{}")
            self.owner.set_incident(data.get("incident"))
        except (ValueError, AttributeError) as e:
            self._send(400, {"error": str(e)})
            return
        self._send(204, None)


def main() -> None:  # python -m exporter.demo.sampleapp: serve until interrupted
    import argparse

    p = argparse.ArgumentParser(description="sample app with the runbooks' health endpoints")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)"
    )
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--incident", choices=INCIDENTS, default=None)
    args = p.parse_args()
    app = SampleApp(host=args.host, port=args.port).start()
    app.set_incident(args.incident)
    print(f"sample app on {app.url}/api/monitoring/health", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()


if __name__ == "__main__":
    main()
