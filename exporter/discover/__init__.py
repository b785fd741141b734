"""`runbook-exporter discover --dsn ...`: inspect a database and print a ready configuration.

Read-only and bounded: the session is opened like the exporter's own (exporter/db.py:
read-only, statement_timeout, lock_timeout) and every statement reads the catalog, planner
statistics or a handful of small bookkeeping tables (pgmq.meta), costing O(catalog). A user
table is read only when it has no statistics, and then only a bounded sample of its status
column (`LIMIT 10000`), never the whole table.

What it looks for:

- **Hand-rolled job queues**: a table with a status-like column (status, state, *_status,
  *_state) of type text, varchar or an enum whose values are job-like (statuses.ROLE_WORDS), a
  created-at and an updated-at timestamp, and optionally a retry-count column. The values come
  from the enum's labels, else a CHECK constraint's literals, else the planner statistics
  (most common values and histogram), else the bounded sample; the column's DEFAULT counts too.
- **Dead-letter tables** named like `<queue>_dlq`, `dead_letter_<queue>`: the
  `dead_letter_table` of the matching queue.
- **pgmq queues** (rows of pgmq.meta), with `<queue>_dlq`-style queues as their
  `dead_letter_queue`.
- **Job libraries** (pg-boss, Procrastinate, ... every preset of exporter/queuekinds/): their
  tables found together in a schema; the preset tells the version and lists the queues, and
  a `<library>: "*"` item is written (discover/presets.py). Their tables are not reported as
  hand-rolled queues.
- **pg_cron** (cron.job, cron.job_run_details) and **pg_net** (net._http_response): their
  collectors are switched on when this exporter has them (exporter.sources).
- Then the doctor (exporter/doctor.py) checks the generated target on the same session:
  pg_monitor, pg_stat_statements, each queue's privileges and indexes. Its findings, and the
  GRANTs for relations the role cannot read, become comments and go to stderr.

What it prints passes `--check-config` unchanged: it is validated with the configuration's own
models before it is written, and an item kind this exporter does not know yet (a pgmq queue
before pgmq support, a cron collector before the cron collector) is written as a comment.

The package: catalog.py reads the database, statuses.py holds the words it reads it with,
output.py writes the YAML, and this module runs the command.

Exit codes: 0 a configuration was written that monitors at least one queue, pg_cron or pg_net;
1 it was written but found nothing of the kind (only the database-health collectors run);
2 the DSN, the options or the connection failed (one line on stderr, no password, nothing
written).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import psycopg
import yaml
from pydantic import ValidationError

from exporter.config import ConfigError, Target, parse_config
from exporter.configtypes import LABEL_VALUE_RE
from exporter.db import describe_error, open_connection, run_transaction
from exporter.discover.catalog import Discovery, all_rows, error_text, inspect
from exporter.discover.output import Rendered, accepts_pgmq, render
from exporter.discover.statuses import label_value
from exporter.secrets import redact

APPLICATION_NAME = "runbook-exporter-discover"


# --- privileges and the doctor --------------------------------------------------------------


async def grants(conn: psycopg.AsyncConnection, found: Discovery) -> list[str]:
    """GRANT statements for relations the configuration reads that the role cannot."""
    rels: list[tuple[str, str]] = list(found.unreadable)
    for q in found.queues:
        if not q.readable:
            rels.append((q.schema, q.table))
        if q.dead_letter_table and not q.dlq_readable:
            rels.append(q.dead_letter_table)
    named = [*(found.pgmq.unreadable if found.pgmq else [])]
    for lib in found.libraries:
        named.extend(lib.unreadable)
    for e in found.extensions:
        if e.found:
            named.extend(e.unreadable)
    rels.extend((schema, table) for schema, table in (n.split(".", 1) for n in named))
    if not rels:
        return []
    # quoted as PostgreSQL prints names: bare when it can be
    rows = await all_rows(
        conn,
        "SELECT quote_ident(s) || '.' || quote_ident(t), quote_ident(current_user)"
        " FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS r(s, t, i) ORDER BY i",
        ([s for s, _ in rels], [t for _, t in rels]),
    )
    return [f"GRANT SELECT ON {r} TO {role};" for r, role in rows]


async def doctor_lines(conn: psycopg.AsyncConnection, config_text: str) -> tuple[list[str], int]:
    """The doctor's checks of the generated target on this session (pg_monitor, every
    collector's checks such as pg_stat_statements, each queue's privileges and indexes), as
    text lines, and its number of findings."""
    from exporter.doctor import Report, check_target

    config = parse_config(config_text, "discover")
    report = Report()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            await check_target(conn, config.targets[0], report)
        except psycopg.Error as e:
            report.error(f"check aborted: {error_text(e)}")
        except Exception as e:  # a check that cannot run here must not cost the configuration
            report.error(f"check aborted: {type(e).__name__}: {redact(str(e))}")
    return [line.rstrip() for line in buf.getvalue().splitlines() if line.strip()], report.findings


# --- the command --------------------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"error: {redact(message)}", file=sys.stderr)
    return 2


def _connection_target(dsn: str) -> Target:
    # pooler: transaction sets nothing on the session, and every read below runs in one
    # read-only transaction with SET LOCAL timeouts: safe whatever sits in front of the
    # database (a transaction-mode pooler on port 6543 included)
    return Target.model_validate({"name": "discover", "dsn": dsn, "pooler": "transaction"})


async def _discover(dsn: str, name: str | None) -> tuple[Rendered, list[str]] | str:
    """The configuration and the lines for stderr, or the one-line error."""
    try:
        target = _connection_target(dsn)
    except ValidationError as e:
        msg = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
        return f"--dsn: {msg}"
    pgmq_live = accepts_pgmq()  # asked once: both renderings must agree
    try:
        conn = await open_connection(target, application_name=APPLICATION_NAME)
    except ConfigError as e:
        return str(e)
    except Exception as e:
        return f"cannot connect to {target.safe_dsn()}: {describe_error(e)}"
    try:
        async with conn:
            async with run_transaction(conn, target):
                found = await inspect(conn)
            label = name if name is not None else label_value(found.database)
            first = render(found, dsn, label, pgmq_live=pgmq_live)
            problem = _check(first)
            if problem is not None:
                return problem
            checks, _ = await doctor_lines(conn, first.text)  # its own bounded transactions
            async with run_transaction(conn, target):
                fixes = await grants(conn, found)
    except psycopg.Error as e:
        return f"inspecting the database failed: {error_text(e)}"
    if fixes:
        checks = [*checks, "  FINDING  the role cannot read relations the configuration names:"]
        checks += [f"             {g}" for g in fixes]
    out = render(found, dsn, label, checks, pgmq_live=pgmq_live)
    return out, checks


def _check(rendered: Rendered) -> str | None:
    """Why the generated text is not what it means to say, or None: its YAML must read back
    as the data it was written from, and the configuration must validate."""
    if yaml.safe_load(rendered.text) != rendered.data:
        return "the generated configuration does not read back as written (a bug: please report)"
    try:
        parse_config(rendered.text, "discover")
    except ConfigError as e:
        return f"the generated configuration is not valid (a bug: please report): {e}"
    return None


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def run_discover(dsn: str, name: str | None, output: str | None, force: bool = False) -> int:
    if name is not None and not re.match(LABEL_VALUE_RE, name):
        return _fail(
            f"--name {json.dumps(name)}: a target name is a label value: a letter or _, then "
            "letters, digits, _ . : - (at most 63)"
        )
    out_path = Path(output) if output else None
    if out_path is not None and out_path.exists() and not force:
        return _fail(f"--output {out_path}: the file exists; give --force to replace it")
    try:
        result = asyncio.run(_discover(dsn, name))
    except KeyboardInterrupt:
        return _fail("interrupted")
    except Exception as e:  # a bug: one line, never a traceback (nor the DSN)
        return _fail(f"discover failed (a bug: please report): {error_text(e)}")
    if isinstance(result, str):
        return _fail(result)
    rendered, checks = result
    problem = _check(rendered)
    if problem is not None:
        return _fail(problem)
    text = rendered.text
    if redact(text) != text:  # the net under target_dsn: no secret is ever written
        return _fail(
            "the DSN's password also appears elsewhere in the configuration (a database, role "
            "or table name?): refusing to print it"
        )
    if out_path is not None:
        try:
            write_atomically(out_path, text)
        except OSError as e:
            return _fail(f"--output {out_path}: {e.strerror}")
    else:
        sys.stdout.write(text)
    for line in checks:
        print(redact(line), file=sys.stderr)
    what = f"{rendered.monitored} item(s) to monitor"
    if rendered.commented:
        what += f", {rendered.commented} left as comments (not supported by this version)"
    where = f" to {out_path}" if out_path is not None else ""
    print(f"discover: wrote the configuration{where}: {what}", file=sys.stderr)
    return 0 if rendered.monitored else 1
