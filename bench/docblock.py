"""Write a benchmark's measured block into its doc, between its start and end markers (the
block includes them), or append it under `heading` the first time."""

from __future__ import annotations

import re
from pathlib import Path


def write_block(doc: Path, start: str, end: str, block: str, heading: str) -> None:
    text = doc.read_text() if doc.exists() else ""
    if start in text and end in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n{heading}\n\n" + block + "\n"
    doc.write_text(text)
