"""`supabase:` the Management API's list of a project's backups (runbook 001: "Supabase
handles daily backups").

GET {base_url}/v1/projects/{ref}/database/backups with `Authorization: Bearer <token>` (a
personal access token, read from env or file at every check so it can rotate). The documented
answer: `region`, `walg_enabled`, `pitr_enabled`, `backups` (a list of `{status,
is_physical_backup, inserted_at}`, status one of COMPLETED, FAILED, PENDING, REMOVED,
ARCHIVED, CANCELLED) and `physical_backup_data` {`earliest_physical_backup_date_unix`,
`latest_physical_backup_date_unix`}. The last backup is the newest COMPLETED one, or the
latest physical backup point when PITR reports a newer one; the API gives no size.

The token is registered as a secret (redacted from every message) and sent only in the
header; redirects are not followed (they could carry it elsewhere); the body is read up to
`max_body` bytes.
"""

from __future__ import annotations

from typing import Any

import httpx

from exporter.backups.base import BackupSource, Reading, SourceFailure, parse_json, parse_time
from exporter.probes.config import SecretError
from exporter.secrets import redact, safe_url

COMPLETED = "COMPLETED"


def parse(doc: Any) -> Reading:
    if not isinstance(doc, dict) or not isinstance(doc.get("backups", []), list):
        raise SourceFailure("invalid_output", "not the backups list: expected {backups: [...]}")
    stamps = []
    for i, b in enumerate(doc.get("backups", [])):
        if isinstance(b, dict) and b.get("status") == COMPLETED:
            stamps.append(parse_time(b.get("inserted_at"), f"backups[{i}].inserted_at"))
    count = len(stamps)
    physical = doc.get("physical_backup_data")
    if isinstance(physical, dict) and physical.get("latest_physical_backup_date_unix") is not None:
        stamps.append(
            parse_time(
                physical["latest_physical_backup_date_unix"],
                "physical_backup_data.latest_physical_backup_date_unix",
            )
        )
        count = max(count, 1)
    flags = ", ".join(
        f"{k} {doc[k]}" for k in ("region", "pitr_enabled", "walg_enabled") if k in doc
    )
    detail = f"{count} completed backup(s)" + (f" ({flags})" if flags else "")
    return Reading(max(stamps) if stamps else None, count, detail=detail)


class Supabase(BackupSource):
    key = "supabase"

    def url(self) -> str:
        s = self.settings
        return f"{s.base_url}/v1/projects/{s.project_ref}/database/backups"

    async def read(self) -> Reading:
        s = self.settings
        try:
            token = s.token.load()
        except SecretError as e:
            raise SourceFailure("auth", f"token ({s.token.describe()}): {e}") from None
        shown = safe_url(self.url())
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            async with (
                httpx.AsyncClient(
                    timeout=httpx.Timeout(self.backup.timeout), follow_redirects=False
                ) as client,
                client.stream("GET", self.url(), headers=headers) as r,
            ):
                if r.status_code in (401, 403):
                    raise SourceFailure(
                        "auth", f"{shown}: status {r.status_code}, the token was refused"
                    )
                if not 200 <= r.status_code < 300:
                    raise SourceFailure("http_status", f"{shown}: status {r.status_code}")
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > s.max_body:
                        raise SourceFailure(
                            "output_too_large", f"{shown}: body larger than {s.max_body} bytes"
                        )
        except httpx.TimeoutException:
            raise SourceFailure(
                "timeout", f"{shown}: no answer within {self.backup.timeout:g}s"
            ) from None
        except httpx.HTTPError as e:
            why = redact(str(e).splitlines()[0][:200]) if str(e) else type(e).__name__
            raise SourceFailure("connect", f"{shown}: {why}") from None
        return parse(parse_json(bytes(body), f"the answer of {shown}"))
