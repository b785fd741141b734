"""The configuration `runbook-exporter discover` prints: YAML written line by line so each
item carries its comments (what was found, where the values came from, what is left out),
read back by the caller to check that it says what it means."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter import sources
from exporter.config import ConfigError, parse_config, parse_dsn
from exporter.discover.catalog import (
    PGMQ_NAMED_MAX,
    PGMQ_WILDCARD_MAX,
    Discovery,
    FoundLibrary,
    PgmqQueues,
    TableQueue,
    one_line,
    shown,
)
from exporter.discover.statuses import (
    NOT_MAPPED_ON_PURPOSE,
    RETRY_NAMES,
    ROLES,
    label_value,
    normalise,
)
from exporter.secrets import looks_secret, register_secret

PASSWORD_ENV = "RUNBOOK_DB_PASSWORD"

# --- what the exporter can take -----------------------------------------------------------


def accepts_pgmq() -> bool:
    """Whether this exporter's configuration takes a `pgmq:` queue item (PLAN13's shape),
    found by validating one rather than by a version number."""
    try:
        parse_config("targets: [{name: t, dsn: 'host=localhost', queues: [{pgmq: q}]}]")
    except ConfigError:
        return False
    return True


def has_collector(name: str) -> bool:
    return name in sources.collector_names()


# --- rendering ----------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}


def scalar(value: object) -> str:
    """A YAML scalar: plain when unambiguous, else double-quoted with every character the
    config reader refuses (controls, surrogates) escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif unicodedata.category(ch) in ("Cc", "Cs", "Cn", "Co") or ch in "\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def flow_list(values: list[str]) -> str:
    return "[" + ", ".join(scalar(v) for v in values) + "]"


class Writer:
    """Lines of YAML and comments, every comment kept on one line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def comment(self, indent: int, text: str = "") -> None:
        pad = " " * indent
        self.lines.append(f"{pad}# {one_line(text)}".rstrip())

    def line(self, indent: int, text: str, comment: str | None = None) -> None:
        tail = f"  # {one_line(comment)}" if comment else ""
        self.lines.append(" " * indent + text + tail)

    def blank(self) -> None:
        self.lines.append("")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def target_dsn(dsn: str) -> tuple[str, list[str]]:
    """The DSN to write (every password-like parameter removed) and what was removed."""
    from psycopg.conninfo import make_conninfo

    params = parse_dsn(dsn)
    removed = [k for k in params if looks_secret(k)]
    for k in removed:
        if params[k]:
            register_secret(params[k])
        del params[k]
    return make_conninfo("", **params), removed


@dataclass
class Rendered:
    text: str
    data: dict
    monitored: int  # queues and collectors the configuration monitors
    commented: int  # items left as comments because this exporter cannot take them yet


def table_item(q: TableQueue) -> dict:
    item: dict[str, Any] = {"table": q.qualified}
    if q.name:
        item["name"] = q.name
    item["status_column"] = q.status_column
    item["statuses"] = {r: q.statuses[r] for r in ROLES if q.statuses[r] or r == "dead"}
    item["created_at_column"] = q.created_at
    item["updated_at_column"] = q.updated_at
    item["retry_count_column"] = q.retry_count
    if q.dead_letter_table:
        item["dead_letter_table"] = ".".join(q.dead_letter_table)
    return item


def pgmq_items(p: PgmqQueues) -> list[dict]:
    """The pgmq queue items of PLAN13: one per queue up to PGMQ_NAMED_MAX (a queue that is
    another's dead-letter queue is named as its `dead_letter_queue` instead), else one
    `pgmq: "*"` following up to the number found."""
    if len(p.names) > PGMQ_NAMED_MAX:
        return [{"pgmq": "*", "max_queues": min(len(p.names), PGMQ_WILDCARD_MAX)}]
    dlqs = set(p.dead_letter_of.values())
    items = []
    for n in p.names:
        if n in dlqs:
            continue
        item: dict[str, Any] = {"pgmq": n}
        if n in p.dead_letter_of:
            item["dead_letter_queue"] = p.dead_letter_of[n]
        items.append(item)
    return items


def _write_item(w: Writer, indent: int, item: dict, comments: dict[str, str], live: bool) -> None:
    """One queue item (a mapping), each key on its line; `live` False writes it commented."""
    lines: list[tuple[str, str | None]] = []
    for i, (key, value) in enumerate(item.items()):
        head = "- " if i == 0 else "  "
        if isinstance(value, dict):
            lines.append((f"{head}{key}:", comments.get(key)))
            for k, v in value.items():
                shown = flow_list(v) if isinstance(v, list) else scalar(v)
                lines.append((f"    {k}: {shown}", comments.get(f"{key}.{k}")))
        else:
            shown = "null" if value is None else scalar(value)
            lines.append((f"{head}{key}: {shown}", comments.get(key)))
    for text, comment in lines:
        if live:
            w.line(indent, text, comment)
        else:
            w.comment(indent, text + (f"  # {comment}" if comment else ""))


def _write_table_queue(w: Writer, q: TableQueue) -> dict:
    """A table queue with the comments that say why: the values found and where from, the
    roles assumed, what is left unmapped."""
    item = table_item(q)
    w.comment(6, f"{q.qualified}: a job queue, by its column {q.status_column} ({q.status_type})")
    w.comment(6, f"  status values from {q.values_from}:")
    for role in ROLES:
        if role not in q.assumed:
            for v in q.statuses[role]:
                w.comment(6, f"    {shown(v)} -> {role}")
    if q.assumed:
        w.comment(
            6,
            f"  no value seen for {', '.join(q.assumed)}: runbook 000's name for it is kept "
            "(it matches nothing until the app writes it)",
        )
    if not q.statuses["dead"]:
        w.comment(6, "  no dead status seen: dead: [] (a value here would be counted as dead)")
    if q.unmapped:
        why = [
            f"{shown(v)} (a deliberate stop: neither completed, failed nor dead)"
            if normalise(v) in NOT_MAPPED_ON_PURPOSE
            else shown(v)
            for v in q.unmapped
        ]
        w.comment(
            6, "  not mapped, so not counted (add them to a role if they matter): " + ", ".join(why)
        )
    if q.retry_count is None:
        names = ", ".join(RETRY_NAMES[:4])
        w.comment(6, f"  no retry-count column ({names}, ...): retries_exhausted stays 0")
    for note in q.notes:
        w.comment(6, f"  {note}")
    comments = {"dead_letter_table": "inferred from its name"} if q.dead_letter_table else {}
    _write_item(w, 6, item, comments, live=True)
    return item


def _write_pgmq(w: Writer, p: PgmqQueues, live: bool) -> list[dict]:
    """The pgmq items, live or as comments; returns them."""
    what = f"{len(p.names)}{'+' if p.truncated else ''} queue(s) in pgmq.meta"
    if p.names and len(p.names) <= PGMQ_NAMED_MAX:
        what += f": {', '.join(p.names)}"
    w.comment(6, f"pgmq: {what}")
    if len(p.names) > PGMQ_NAMED_MAX:
        w.comment(
            6,
            f'  more than {PGMQ_NAMED_MAX}: one `pgmq: "*"` item follows them all (up to '
            "max_queues); name a queue in its own item to give it its own thresholds",
        )
        if p.dead_letter_of:
            pairs = ", ".join(f"{d} for {q}" for q, d in sorted(p.dead_letter_of.items()))
            w.comment(
                6, f"  dead-letter queues by their names (configure by name to use them): {pairs}"
            )
    if not live:
        w.comment(
            6,
            "  this runbook-exporter cannot monitor pgmq queues yet: the items are commented "
            "out (a version with pgmq support takes them as they are)",
        )
    items = pgmq_items(p) if p.names else []
    for item in items:
        _write_item(w, 6, item, {"dead_letter_queue": "inferred from its name"}, live)
    return items


def _write_library(w: Writer, lib: FoundLibrary, taken: set[str]) -> list[dict]:
    """A job library's `"*"` item with what was found (version, queues); commented out, with
    the reason, when the preset cannot read it. A queue whose name another item already serves
    as its `queue` label (Oban's and River's `default`) gets a named item of its own with a
    longer label first ("*" skips named queues). Returns the live items; adds the labels."""
    where = f"{lib.library} found in schema {lib.schema}"
    item = lib.item()
    if lib.problem is not None:
        w.comment(6, f"{where}: {lib.problem}")
        w.comment(6, "  not configured; the item, once that is fixed:")
        _write_item(w, 6, item, {}, live=False)
        return []
    names = ", ".join(lib.queues) + (", ..." if lib.truncated else "")
    count = f"{len(lib.queues)}{'+' if lib.truncated else ''} queue(s)"
    w.comment(6, f"{where}: {lib.version}; {count}{': ' + names if lib.queues else ''}")
    items = []
    for queue in lib.queues:
        if queue in taken:
            named = {lib.key: queue, "name": label_value(f"{lib.key}_{queue}")}
            if "schema" in item:
                named["schema"] = item["schema"]
            _write_item(w, 6, named, {"name": "the name is another item's label"}, live=True)
            items.append(named)
            taken.add(str(named["name"]))
        else:
            taken.add(queue)
    w.comment(
        6,
        f"  every queue, as it comes and goes; name one ({lib.key}: <queue>) for its own"
        " thresholds",
    )
    _write_item(w, 6, item, {}, live=True)
    return [*items, item]


TRANSACTION_POOLER_PORT = "6543"


def _ports(dsn: str) -> list[str]:
    from psycopg.conninfo import conninfo_to_dict

    return [p.strip() for p in str(conninfo_to_dict(dsn).get("port", "")).split(",")]


def render(
    found: Discovery,
    dsn: str,
    name: str,
    checks: list[str] | None = None,
    pgmq_live: bool | None = None,
) -> Rendered:
    """The configuration text with its comments. `checks` are the doctor's lines (comments);
    `pgmq_live` whether pgmq items are configuration or comments (None: ask accepts_pgmq)."""
    w = Writer()
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    w.comment(0, f"runbook-exporter configuration written by `runbook-exporter discover`, {now}")
    w.comment(
        0,
        f'from database "{found.database}" as role "{found.user}" (PostgreSQL {found.version}).',
    )
    w.comment(0, "Review it, then: runbook-exporter --config.file=<this file> --check-config")
    safe, removed = target_dsn(dsn)
    monitored = commented = 0
    target: dict[str, Any] = {"name": name, "dsn": safe}
    w.line(0, "targets:")
    w.line(2, f"- name: {scalar(name)}")
    if removed:
        said = f"the DSN given had a {' and '.join(removed)}: it is not written here"
        if "password" in removed:
            said += f"; the exporter reads the password from the variable {PASSWORD_ENV}"
        w.comment(4, said)
    w.line(4, f"dsn: {scalar(safe)}")
    if "password" in removed:
        target["password_env"] = PASSWORD_ENV
        w.line(4, f"password_env: {PASSWORD_ENV}")
    if TRANSACTION_POOLER_PORT in _ports(safe):
        # Supabase's Supavisor (and PgBouncer set up like it) pools by transaction on 6543
        w.comment(4, f"port {TRANSACTION_POOLER_PORT}: a transaction-mode pooler, docs/supabase.md")
        target["pooler"] = "transaction"
        w.line(4, "pooler: transaction")

    live = found.pgmq is not None and (accepts_pgmq() if pgmq_live is None else pgmq_live)
    if live and found.pgmq is not None:
        # a pgmq queue's label is its name: a table queue of the same name takes a longer one
        taken = {str(i["pgmq"]) for i in pgmq_items(found.pgmq)}
        for q in found.queues:
            if (q.name or q.table) in taken:
                q.name = label_value(f"{q.schema}_{q.table}")
    items: list[dict] = []
    if found.queues or found.pgmq is not None or found.libraries:
        w.line(4, "queues:")
        at = len(w.lines) - 1
        items = [_write_table_queue(w, q) for q in found.queues]
        monitored += len(items)
        taken = {str(i.get("name") or i["table"].split(".", 1)[1]) for i in items}
        if found.pgmq is not None:
            taken |= set(found.pgmq.names)
        for lib in found.libraries:
            written = _write_library(w, lib, taken)
            items += written
            monitored += len(written)
        if found.pgmq is not None:
            pgmq = _write_pgmq(w, found.pgmq, live)
            if live:
                items += pgmq
                monitored += len(pgmq)
            else:
                commented += len(pgmq)
        if not items:  # only commented items: an empty list keeps `queues:` valid
            w.lines[at] = "    queues: []"
        target["queues"] = items

    on = [e for e in found.extensions if e.found and has_collector(e.collector)]
    off = [e for e in found.extensions if e.found and not has_collector(e.collector)]
    if on:
        w.line(4, "collectors:")
        target["collectors"] = {}
        for e in on:
            w.comment(6, f"{e.title}: {', '.join(e.tables)} found")
            for note in e.notes:
                w.comment(6, f"  {note}")
            w.line(6, f"{e.collector}:")
            w.line(8, "enabled: true")
            target["collectors"][e.collector] = {"enabled": True}
            monitored += 1
    for e in off:
        w.comment(4, f"{e.title}: {', '.join(e.tables)} found; this runbook-exporter has no")
        w.comment(4, f"{e.collector} collector yet. A version that has one takes:")
        w.comment(4, f"collectors: {{{e.collector}: {{enabled: true}}}}")
        commented += 1
    if found.notes:
        w.blank()
        w.comment(0, "Seen but not configured:")
        for note in found.notes:
            w.comment(0, f"  - {note}")
    if checks:
        w.blank()
        w.comment(0, "Checks (the doctor's, on this database and this configuration):")
        for line in checks:
            w.comment(0, line)
    return Rendered(w.text(), {"targets": [target]}, monitored, commented)
