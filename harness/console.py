"""The console tables print to; shared by the CLI and its subcommand modules (estimate, fit), so they do
not import harness.cli back."""

from __future__ import annotations

from rich.console import Console


def table_console() -> Console:
    """stdout; in logs and CI (not a terminal) 160 columns rather than rich's 80, so tables stay readable."""
    out = Console()
    return out if out.is_terminal else Console(width=160)
