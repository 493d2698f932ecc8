"""How every failure reaches the user: one ``Error: ...`` line on stderr and a non-zero exit.

The root command group wraps the whole invocation, so no command repeats try/except for the
common cases and no traceback ever escapes (``STALWART_DEBUG=1`` re-raises, for developers).
"""

from __future__ import annotations

import os
from typing import Any

import typer
from typer.core import TyperGroup

from stalwart.client.errors import APIError, StalwartError, UnauthorizedError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


class CliError(StalwartError):
    """A failure found by the CLI itself (unreadable file, bad local input); printed as is."""


def error_lines(exc: BaseException) -> list[str]:
    """The lines to print for ``exc``; the first is always ``Error: ...``."""
    if isinstance(exc, UnauthorizedError):
        return [f"Error: {exc}; run `stalwart user login`"]
    if isinstance(exc, APIError):
        lines = [f"Error: {exc}"]
        # With one field error the detail already says it; with several, give each its own line.
        if len(exc.errors) > 1:
            lines.extend(f"  {err}" for err in exc.errors)
        return lines
    if isinstance(exc, StalwartError):
        return [f"Error: {exc}"]
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return [f"Error: {exc.strerror or exc}{where}"]
    return [f"Error: unexpected {type(exc).__name__}: {exc} (set STALWART_DEBUG=1 for the traceback)"]


def fail(exc: BaseException) -> typer.Exit:
    """Print ``exc`` the CLI way and return the ``Exit`` to raise."""
    for line in error_lines(exc):
        typer.echo(line, err=True)
    return typer.Exit(EXIT_ERROR)


class CliGroup(TyperGroup):
    """Root group: turns any exception a command lets through into one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, EOFError, BrokenPipeError):
            # Typer's own exits, usage errors, prompt aborts and a closed pipe (`| head`) are
            # already handled by typer the right way.
            raise
        except KeyboardInterrupt:
            typer.echo("\nInterrupted.", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if os.environ.get("STALWART_DEBUG") and not isinstance(exc, StalwartError):
                raise
            raise fail(exc) from None
