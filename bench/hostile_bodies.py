"""Peak memory of the prober against hostile bodies. Run by hand:

    .venv/bin/python bench/hostile_bodies.py [--probes 4] [--before-ref 7426c17]

A server on 127.0.0.1 (a thread of this process) serves each hostile body. For each body a
fresh child process (this script with --child) imports the exporter, builds one Prober for an
endpoint with the default 1 MiB cap and an assertion (so the body is wanted as JSON), probes it
--probes times and reports its peak RSS (VmHWM) before and after probing, and the outcome.

--before-ref runs the same bodies against the exporter of that git commit too (extracted with
`git archive` to a temporary directory), for before/after figures; its child gets an address
space limit (--before-limit-gib) so a bomb cannot take the machine down: hitting it reads
"MemoryError".
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
GiB = 1024 * MiB


def compressed_zeros(size: int, wbits: int) -> bytes:
    """`size` zero bytes compressed in 1 MiB steps (never held decoded)."""
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(MiB)
    return b"".join([c.compress(block) for _ in range(size // MiB)] + [c.flush()])


def bodies() -> dict[str, tuple[str, dict[str, str], bytes, str]]:
    """name -> (what it is, extra headers, body on the wire, decoded size as text)."""
    gzip_1g = compressed_zeros(GiB, 31)
    gzip_2g = compressed_zeros(2 * GiB, 31)
    stacked = gzip.compress(gzip_2g, 9)
    deep = b"[" * 300_000 + b"]" * 300_000
    wide = b"[" + b",".join([b"{}"] * (MiB // 3 - 1)) + b"]"
    return {
        "gzip,gzip": ("two gzip layers", {"Content-Encoding": "gzip, gzip"}, stacked, "2 GiB"),
        "gzip": ("one gzip layer", {"Content-Encoding": "gzip"}, gzip_1g, "1 GiB"),
        "deflate": (
            "one zlib deflate layer",
            {"Content-Encoding": "deflate"},
            compressed_zeros(GiB, 15),
            "1 GiB",
        ),
        "br": ("unknown coding", {"Content-Encoding": "br"}, b"\x1b" * 1000, "-"),
        "deep-json": ("[ x300000 ] x300000", {}, deep, "-"),
        "wide-json": ("[{},{},...] up to the cap", {}, wide, "-"),
        "plain-100M": ("100 MiB, no Content-Length", {"Stream": "1"}, b"x" * (100 * MiB), "-"),
    }


class Server:
    """Serves /<name> from `bodies` on 127.0.0.1; one response per connection."""

    def __init__(self, served: dict[str, tuple[str, dict[str, str], bytes, str]]) -> None:
        self.served = served
        self.port = 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> Server:
        self.thread.start()
        if not self.ready.wait(10):
            raise SystemExit("the hostile server did not start")
        return self

    async def _main(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        async with server:
            await server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            name = head.split(b" ", 2)[1].decode().lstrip("/")
            _, headers, body, _ = self.served[name]
            lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", "Connection: close"]
            stream = headers.get("Stream") == "1"
            if not stream:
                lines.append(f"Content-Length: {len(body)}")
            lines += [f"{k}: {v}" for k, v in headers.items() if k != "Stream"]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            for i in range(0, len(body), 64 * 1024):  # bounded by the body's length
                writer.write(body[i : i + 64 * 1024])
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, KeyError):
            pass
        finally:
            writer.close()


def hwm() -> int:
    """Peak resident set size of this process so far, in bytes (Linux: VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM in /proc/self/status")


def child(code: str, url: str, probes: int) -> None:
    """Probe `url` `probes` times with the exporter at `code`; print one JSON line."""
    sys.path.insert(0, code)
    from exporter.probes.config import App
    from exporter.probes.http import Clients
    from exporter.probes.runner import Prober

    ep = {"name": "hostile", "url": url, "timeout": "20s", "interval": "60s"}
    ep["assertions"] = [{"path": "status", "equals": "ok"}]
    app = App.model_validate({"name": "bench", "endpoints": [ep]})
    clients = Clients()
    prober = Prober(app, app.endpoints[0], clients)
    outcome: list[str] = []

    async def run() -> None:
        for _ in range(probes):  # bounded by --probes
            try:
                fams = await prober.probe()
            except MemoryError:
                outcome.append("MemoryError")
                continue
            except Exception as e:  # the old code lost the endpoint's series here
                outcome.append(f"raised {type(e).__name__}")
                continue
            reason = [
                s.labels["reason"]
                for f in fams
                if f.name == "runbook_probe_failure_reason"
                for s in f.samples
                if s.value == 1
            ]
            outcome.append(reason[0] if reason else "success")
        await clients.aclose()

    base = hwm()
    asyncio.run(run())
    print(json.dumps({"base": base, "peak": hwm(), "outcome": sorted(set(outcome))}))


def measure(code: str, url: str, probes: int, limit: int | None) -> dict:
    def set_limit() -> None:
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    cmd = [sys.executable, __file__, "--child", code, url, "--probes", str(probes)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, preexec_fn=set_limit, check=False
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"base": 0, "peak": 0, "outcome": [f"died: {tail[0][:60]}"]}
    return json.loads(lines[-1])


def before_tree(ref: str, into: str) -> str:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "exporter"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--before-ref", help="also run the exporter of this git commit")
    ap.add_argument("--before-limit-gib", type=float, default=8.0)
    ap.add_argument("--child", nargs=2, metavar=("CODE", "URL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.probes)
        return
    served = bodies()
    server = Server(served).start()
    runs = [("after", str(ROOT), None)]
    tmp = tempfile.TemporaryDirectory()
    if args.before_ref:
        limit = int(args.before_limit_gib * GiB)
        runs.insert(0, ("before", before_tree(args.before_ref, tmp.name), limit))
    print(f"{args.probes} probes per body, max_body_size 1 MiB; peak RSS growth over the")
    print("child's RSS after imports (VmHWM), and the failure reason(s)\n")
    header = f"{'body':<11} {'what':<27} {'wire':>9} {'decoded':>8}"
    for label, _, _ in runs:
        header += f" | {label + ' growth':>13} {label + ' outcome':<28}"
    print(header)
    for name, (what, _, body, decoded) in served.items():
        wire = f"{len(body) / 1024:.1f} KiB" if len(body) < MiB else f"{len(body) / MiB:.0f} MiB"
        row = f"{name:<11} {what:<27} {wire:>9} {decoded:>8}"
        for _, code, limit in runs:
            r = measure(code, f"http://127.0.0.1:{server.port}/{name}", args.probes, limit)
            growth = (r["peak"] - r["base"]) / MiB
            row += f" | {growth:>9.1f} MiB {', '.join(r['outcome'])[:28]:<28}"
        print(row, flush=True)
    print(f"\nchild RSS after imports: ~{r['base'] / MiB:.0f} MiB; pid {os.getpid()}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
