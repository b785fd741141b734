from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.config import Config, parse_config
from exporter.demo.sampleapp import SampleApp
from exporter.runtime import Exporter
from exporter.server import HTTPServer
from tests.helpers import Scrape, scrape, wait_for
from tests.pg import postgres_server
from tests.test_probe_support import LocalServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Superuser DSN of a real throwaway PostgreSQL with pg_stat_statements preloaded."""
    with postgres_server() as dsn:
        yield dsn


def dsn_for(server_dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = dbname
    return make_conninfo("", **params)


@contextmanager
def new_database(pg_server: str) -> Iterator[str]:
    """A new empty database with pg_stat_statements, dropped on exit (sessions forced out)."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    dsn = dsn_for(pg_server, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        yield dsn
    finally:
        with psycopg.connect(pg_server, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_db(pg_server: str) -> Iterator[str]:
    """A new empty database for one test."""
    with new_database(pg_server) as dsn:
        yield dsn


@dataclass
class RunningExporter:
    exporter: Exporter
    server: HTTPServer
    config: Config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/metrics"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def scrape(self) -> Scrape:
        return scrape(self.url)

    def wait_for(
        self, predicate: Callable[[Scrape], Any], timeout: float = 20, what: str = ""
    ) -> Scrape:
        return wait_for(self.url, predicate, timeout, what)


@pytest.fixture
def run_exporter() -> Iterator[Callable[[dict | str], RunningExporter]]:
    """Start the real exporter (collection loop + HTTP server on 127.0.0.1) from a config."""
    started: list[RunningExporter] = []

    def start(config: dict | str) -> RunningExporter:
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        cfg = parse_config(text, "test-config.yml")
        exp = Exporter(cfg)
        srv = HTTPServer(exp, "127.0.0.1:0")
        exp.start()
        srv.start()
        handle = RunningExporter(exp, srv, cfg)
        started.append(handle)
        return handle

    yield start
    for h in started:
        h.server.stop()
        h.exporter.stop()


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A local HTTP server on 127.0.0.1 whose routes a test sets (tests/test_probe_support.py)."""
    s = LocalServer()
    yield s
    s.stop()


@pytest.fixture
def sample_app() -> Iterator[SampleApp]:
    """The sample app (exporter/demo/sampleapp.py) on a free port of 127.0.0.1, healthy."""
    app = SampleApp(host="127.0.0.1", port=0).start()
    yield app
    app.stop()
