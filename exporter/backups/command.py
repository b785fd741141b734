"""Run a configured command for its JSON, bounded every way, or read the JSON from a file.

The command is `argv` exactly as configured: no shell, stdin closed, its own process group
(so a tool that starts helpers -- pgBackRest's ssh, WAL-G's storage workers -- is killed with
it), the exporter's environment plus the configured `env`. Within `timeout` it must exit 0
with at most `max_output` bytes on stdout; otherwise the group is killed (SIGKILL) and the
check fails with a reason. Neither the environment nor stdout is ever logged; the message of a
failure carries the exit status and the last stderr line, cut short and redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from exporter.backups.base import SourceFailure
from exporter.backups.config import Command, ToolListing
from exporter.secrets import redact

STDERR_KEPT = 64 * 1024  # bytes of stderr kept for the failure message; the rest is drained
CHUNK = 64 * 1024
SHOWN = 200  # characters of the last stderr line in a message


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Up to `cap` bytes; True when more came (the reader stops there)."""
    buf = bytearray()
    while True:
        chunk = await stream.read(CHUNK)
        if not chunk:
            return bytes(buf), False
        buf += chunk
        if len(buf) > cap:
            return bytes(buf[:cap]), True


async def _drain_stderr(stream: asyncio.StreamReader) -> bytes:
    """All of stderr read (a full pipe would block the command), the first STDERR_KEPT kept."""
    kept = bytearray()
    while chunk := await stream.read(CHUNK):
        if len(kept) < STDERR_KEPT:
            kept += chunk[: STDERR_KEPT - len(kept)]
    return bytes(kept)


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    line = redact(lines[-1])
    return line if len(line) <= SHOWN else line[: SHOWN - 1] + "…"


async def run_command(cmd: Command, timeout: float) -> bytes:
    """The command's stdout, or SourceFailure (exit_status, timeout, output_too_large,
    unreadable when it cannot be started)."""
    name = cmd.argv[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **cmd.env},
            start_new_session=True,  # its own process group, killed whole
        )
    except OSError as e:
        raise SourceFailure("unreadable", f"cannot run {name}: {e.strerror or e}") from None
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.ensure_future(_drain_stderr(proc.stderr))
    try:
        async with asyncio.timeout(timeout):
            out, too_large = await _read_capped(proc.stdout, cmd.max_output)
            if too_large:
                _kill_group(proc)
                await proc.wait()
                raise SourceFailure(
                    "output_too_large",
                    f"{name} printed more than {cmd.max_output} bytes; killed",
                )
            status = await proc.wait()
            stderr = await stderr_task
    except TimeoutError:
        _kill_group(proc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
        raise SourceFailure(
            "timeout", f"{name} did not finish within {timeout:g}s; killed"
        ) from None
    except BaseException:  # cancelled (the job stops) or failed: leave nothing running
        _kill_group(proc)
        raise
    finally:
        stderr_task.cancel()
    if status != 0:
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        last = _last_line(stderr)
        raise SourceFailure("exit_status", f"{name} {how}" + (f": {last}" if last else ""))
    return out


def read_file_capped(path: Path, cap: int) -> bytes:
    """A JSON file's bytes (blocking: run it in a thread), at most `cap` of them."""
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except IsADirectoryError:
        raise SourceFailure("unreadable", f"{path} is a directory") from None
    except OSError as e:
        raise SourceFailure("unreadable", f"{path}: {(e.strerror or str(e)).lower()}") from None
    if len(data) > cap:
        raise SourceFailure("output_too_large", f"{path} is larger than {cap} bytes")
    return data


async def listing(src: ToolListing, timeout: float) -> bytes:
    """The JSON a pgbackrest or walg source reads: from its file or its command."""
    if src.command is not None:
        return await run_command(src.command, timeout)
    cap = 4 * 1024 * 1024
    return await asyncio.to_thread(read_file_capped, src.file, cap)  # type: ignore[arg-type]
