"""Configuration of apps and their HTTP endpoints (see issue 4 for the full prober)."""

from __future__ import annotations

from exporter.configtypes import LabelValue, Model


class Endpoint(Model):
    name: LabelValue
    url: str


class App(Model):
    name: LabelValue
    endpoints: list[Endpoint] = []
