"""Files the package ships beside its code: the runbook docs and the Alertmanager example.

Both are written where the repository links them: the runbooks in docs/runbooks/ (every alert's
runbook_url points there, at RUNBOOK_URL_BASE), the Alertmanager example in alerts/. setup.py
maps those two directories into the wheel as exporter/_shipped/runbooks/ and
exporter/_shipped/alerts/, so there is one copy of each file. Installed (pip, the container
image) they are read from the package; run from a source checkout (an editable install, the
tests) from the repository. A shipped file is named by where it lives below those two
directories: `runbooks/QueueJobsStuck.md`, `alerts/alertmanager.yml`.

The rule definitions and the dashboards (exporter/rules/, exporter/dashboards/) live inside the
package; their data files ship through pyproject.toml's package-data and are read beside their
modules, not through here.
"""

from __future__ import annotations

import sys
from pathlib import Path

# where every shipped alert's runbook_url points by default (`rules --runbook-url-base`
# changes it): the runbook docs of the repository's main branch
RUNBOOK_URL_BASE = "https://github.com/runbook-exporter/runbook-exporter/blob/main/docs/runbooks/"

PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED = PACKAGE_DIR / "_shipped"
# the first part of a shipped name -> its directory in a source checkout (setup.py's SHIPPED)
SOURCES = {"runbooks": "docs/runbooks", "alerts": "alerts"}
# what of each directory ships (pyproject.toml's package-data for exporter._shipped.*)
PATTERNS = {"runbooks": "*.md", "alerts": "alertmanager.yml"}
ALERTMANAGER_EXAMPLE = "alerts/alertmanager.yml"


class NotShipped(LookupError):
    """A name that is not a shipped file, or an installation that lacks its shipped files."""


def _directory(top: str) -> Path:
    if INSTALLED.is_dir():
        return INSTALLED / top
    checkout = PACKAGE_DIR.parent
    # a source checkout has its pyproject.toml beside exporter/; site-packages has not (and may
    # hold some other distribution's docs/ or alerts/)
    if (checkout / "pyproject.toml").is_file():
        return checkout / SOURCES[top]
    raise NotShipped(
        f"this installation of runbook-exporter has no shipped files ({INSTALLED} is missing): "
        "reinstall it from a wheel or a source checkout"
    )


def locate(name: str) -> Path:
    """The path of the shipped file `name` (e.g. `runbooks/QueueJobsStuck.md`)."""
    top, _, rest = name.partition("/")
    parts = Path(rest).parts
    if top not in SOURCES or not parts or ".." in parts or Path(rest).is_absolute():
        raise NotShipped(f"{name!r} is not a shipped file: names start with {sorted(SOURCES)}")
    path = _directory(top) / rest
    if not path.is_file() or not path.match(PATTERNS[top]):
        raise NotShipped(f"{name!r} is not a shipped file")
    return path


def read_text(name: str) -> str:
    return locate(name).read_text(encoding="utf-8")


def names() -> list[str]:
    """Every shipped file, sorted."""
    return sorted(
        f"{top}/{p.name}"
        for top, pattern in PATTERNS.items()
        for p in _directory(top).glob(pattern)
        if p.is_file()
    )


def runbooks() -> dict[str, str]:
    """Alert name -> its runbook doc (Markdown)."""
    return {Path(n).stem: read_text(n) for n in names() if n.startswith("runbooks/")}


def write_runbooks(output: Path) -> list[Path]:
    """Write every runbook doc as <output>/<AlertName>.md (replacing those there), e.g. to host
    them where `rules --runbook-url-base` points."""
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for alert, text in runbooks().items():
        path = output / f"{alert}.md"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def run_runbooks(output: str) -> int:
    """`runbook-exporter runbooks --output DIR`: 0, or 1 with one line on stderr."""
    try:
        written = write_runbooks(Path(output))
    except (OSError, NotShipped) as e:
        print(f"error: cannot write the runbooks to {output}: {_reason(e)}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} runbooks to {output}")
    return 0


def run_alertmanager_example() -> int:
    """`runbook-exporter alertmanager-example`: the example configuration on stdout."""
    try:
        text = read_text(ALERTMANAGER_EXAMPLE)
    except (OSError, NotShipped) as e:
        print(f"error: {_reason(e)}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def _reason(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return str(e)
