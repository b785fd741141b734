"""A real PgBouncer (Debian's package) in front of a test PostgreSQL, for the pooler tests.

It listens on 127.0.0.1 on a free port, trusts its one user (the server trusts it too), and runs
in the foreground as an unprivileged user when the tests run as root (PgBouncer refuses root).
`server_round_robin` makes it hand each transaction to the next server connection of the pool
instead of the one used last, so whatever a client leaves on a server connection (a session
setting, a prepared statement) meets another client's next transaction -- the failures a
transaction-mode pooler causes, made certain rather than left to timing.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.demo.pgserver import SERVICE_USER, _service_user, free_port

BINARY = "/usr/sbin/pgbouncer"


def binary() -> str:
    found = shutil.which("pgbouncer") or BINARY
    assert Path(found).exists(), "pgbouncer is missing: scripts/setup.sh installs it (Debian)"
    return found


class PgBouncer:
    def __init__(
        self,
        server_dsn: str,
        pool_size: int = 2,
        pool_mode: str = "transaction",
        stats_user: tuple[str, str] | None = None,
    ):
        """`stats_user`: (name, password) of a `stats_users` account for the admin console,
        authenticated by password (md5 over the auth_hba_file) while the pooled user stays
        trusted."""
        server = conninfo_to_dict(server_dsn)
        self.user = server.get("user", "postgres")
        self.pool_size = pool_size
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="runbook-pgbouncer-"))
        self.log = self.root / "pgbouncer.log"
        self.os_user = _service_user()  # None unless root
        users = f'"{self.user}" ""\n'
        auth = "auth_type = trust\n"
        if stats_user:
            name, password = stats_user
            users += f'"{name}" "{password}"\n'
            (self.root / "hba.conf").write_text(
                f"host pgbouncer {name} 127.0.0.1/32 md5\nhost all all 127.0.0.1/32 trust\n"
            )
            auth = (
                f"auth_type = hba\nauth_hba_file = {self.root / 'hba.conf'}\nstats_users = {name}\n"
            )
        (self.root / "userlist.txt").write_text(users)
        (self.root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={server['host']} port={server['port']}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            f"{auth}"
            f"auth_file = {self.root / 'userlist.txt'}\n"
            f"pool_mode = {pool_mode}\n"
            f"default_pool_size = {pool_size}\n"
            f"min_pool_size = {pool_size}\n"
            "server_round_robin = 1\n"
            "max_client_conn = 100\n"
            f"logfile = {self.log}\n"
            f"pidfile = {self.root / 'pgbouncer.pid'}\n"
        )
        if self.os_user:
            for p in [self.root, *self.root.iterdir()]:
                shutil.chown(p, SERVICE_USER)
        self.proc: subprocess.Popen[bytes] | None = None

    def dsn(self, dbname: str) -> str:
        return make_conninfo(
            "", host="127.0.0.1", port=str(self.port), user=self.user, dbname=dbname
        )

    def start(self) -> PgBouncer:
        self.proc = subprocess.Popen(
            [binary(), str(self.root / "pgbouncer.ini")],
            user=self.os_user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
        )
        deadline = time.monotonic() + 15
        while True:  # until it accepts and reaches the server
            try:
                self._fill_pool("postgres")
                return self
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"pgbouncer did not start:\n{self.log_text()}") from None
                time.sleep(0.1)

    def _fill_pool(self, dbname: str) -> None:
        """Open the pool's server connections now (transactions held at once need one each),
        so round robin has them all to turn through from the first transaction on."""
        clients = [
            psycopg.connect(self.dsn(dbname), connect_timeout=2) for _ in range(self.pool_size)
        ]
        try:
            for c in clients:
                c.execute("SELECT 1")  # psycopg opened a transaction: each holds a server
            for c in clients:
                c.commit()  # a client leaving mid-transaction would take its server along
        finally:
            for c in clients:
                c.close()

    def fill_pool(self, dbname: str) -> None:
        self._fill_pool(dbname)

    def admin_dsn(self, user: str, password: str | None = None) -> str:
        """The admin console (the `pgbouncer` database) as `user`."""
        extra = {"password": password} if password is not None else {}
        return make_conninfo(
            "", host="127.0.0.1", port=str(self.port), user=user, dbname="pgbouncer", **extra
        )

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_pid(conn: psycopg.Connection) -> int:
    """The server backend serving this transaction (changes between transactions)."""
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]
