"""The shipped alert rules: one definition per alert (exporter/rules/groups/), rendered for the
user's Prometheus by `render(Options(...))` or `runbook-exporter rules`.

The renderer (and PyYAML) loads on first use: the CLI's parser imports this package for its
`rules` arguments on every start, serving included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporter.rules.renderer import Options, RulesOptionError, job_selector_for, render

__all__ = ["Options", "RulesOptionError", "job_selector_for", "render"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from exporter.rules import renderer

        return getattr(renderer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
