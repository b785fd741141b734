"""The words `runbook-exporter discover` reads a database with: status values by role, the
names of timestamp and retry-count columns, and dead-letter names."""

from __future__ import annotations

import re

# Status values by role, compared lower-cased with '-' and ' ' read as '_'. Decided:
# - retry/retrying/retryable are `failed`: failed, a retry still to come (runbook 000 counts
#   these as failed and the exhausted ones by retry_count);
# - dead, discarded, abandoned... are `dead` (dead letters a person has to look at);
# - cancelled/canceled map to nothing: a deliberate stop is neither a success, a failure nor a
#   dead letter, and an unmapped value is not counted (it is listed in a comment instead).
ROLE_WORDS: dict[str, tuple[str, ...]] = {
    "pending": (
        "pending", "queued", "enqueued", "new", "waiting", "ready", "scheduled", "available",
        "todo", "created",
    ),
    "processing": (
        "processing", "running", "active", "in_progress", "started", "locked", "executing",
        "working", "claimed", "reserved", "busy",
    ),
    "completed": (
        "completed", "complete", "done", "succeeded", "success", "successful", "finished",
        "processed", "ok",
    ),
    "failed": (
        "failed", "failure", "error", "errored", "retry", "retrying", "retryable", "timeout",
        "timed_out",
    ),
    "dead": (
        "dead", "dead_letter", "dead_lettered", "deadletter", "discarded", "abandoned", "poisoned",
        "poison", "exhausted", "buried",
    ),
}  # fmt: skip
ROLES = tuple(ROLE_WORDS)
_ROLE_OF = {w: role for role, words in ROLE_WORDS.items() for w in words}
NOT_MAPPED_ON_PURPOSE = {"cancelled", "canceled", "cancel"}

CREATED_NAMES = ("created_at", "inserted_at", "enqueued_at", "queued_at", "created", "created_on")
UPDATED_NAMES = ("updated_at", "modified_at", "last_updated_at", "changed_at", "updated")
RETRY_NAMES = (
    "retry_count", "retries", "attempts", "attempt", "attempt_count", "attempts_count",
    "retry_attempts", "num_retries", "tries", "try_count", "retried",
)  # fmt: skip
QUEUE_NAME_HINT = re.compile(r"job|task|queue|work|outbox|inbox|message", re.I)
# `<x>_dlq`, `<x>_dead_letters`, `dead_letter_<x>`, `dlq_<x>`: the dead letters of queue x
_DLQ_SUFFIX = re.compile(r"^(?P<base>.+?)_(?:dlq|dead|dead_?letters?|deadletters?)$", re.I)
_DLQ_PREFIX = re.compile(r"^(?:dlq|dead_?letters?|deadletters?)_(?P<base>.+)$", re.I)
TIMESTAMP_TYPES = ("timestamp with time zone", "timestamp without time zone")


def normalise(value: str) -> str:
    return re.sub(r"[\s-]+", "_", value.strip().lower())


def role_of(value: str) -> str | None:
    return _ROLE_OF.get(normalise(value))


def dlq_base(name: str) -> str | None:
    """The queue a dead-letter name points at (`jobs_dlq` -> `jobs`), or None."""
    for pattern in (_DLQ_SUFFIX, _DLQ_PREFIX):
        m = pattern.match(name)
        if m:
            return m["base"]
    return None


def map_values(values: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Status values by role, and the values no role takes (in the order seen)."""
    statuses: dict[str, list[str]] = {r: [] for r in ROLES}
    unmapped: list[str] = []
    for v in values:
        r = role_of(v)
        if r is None:
            unmapped.append(v)
        elif v not in statuses[r]:
            statuses[r].append(v)
    return statuses, unmapped


def job_like(statuses: dict[str, list[str]], unmapped: list[str], table: str) -> bool:
    """Whether a status column's values say "job queue": a pending value plus two other roles
    (or one, when the table's name says job/task/queue...), and not more unknown values than
    known ones. A users table's active/inactive or an orders table's pending/shipped fail."""
    roles = {r for r, vs in statuses.items() if vs}
    mapped = sum(len(vs) for vs in statuses.values())
    others = len(roles - {"pending"})
    enough = others >= 2 or (others >= 1 and bool(QUEUE_NAME_HINT.search(table)))
    return "pending" in roles and enough and len(unmapped) <= mapped


def label_value(text: str) -> str:
    """`text` made a valid label value (LABEL_VALUE_RE): other characters become _."""
    out = re.sub(r"[^A-Za-z0-9_.:-]", "_", text)
    if not re.match(r"[A-Za-z_]", out[:1]):
        out = f"_{out}"
    return out[:63]
