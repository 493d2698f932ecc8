"""What every command module shares: the master URL, the client, and the two output shapes.

Tables go through rich; ``--json`` prints the master's own JSON and nothing else, so scripts can
pipe it into ``jq``. rich is imported only when a table is drawn.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer

from stalwart._masking import mask_answer
from stalwart.cli._errors import CliError
from stalwart.client import Client, UnauthorizedError, auth

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")]
CsvOption = Annotated[bool, typer.Option("--csv", help="Print CSV to stdout instead of a table.")]


@dataclass
class CliState:
    """Options given before the command (``stalwart -m URL -u USER ...``), kept on the root context."""

    master: str
    user: str | None = None


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):  # a sub-app invoked on its own, as some tests do
        obj = CliState(master=auth.resolve_master(None), user=auth.resolve_user(None))
    return obj


def client(ctx: typer.Context, *, as_user: bool = True) -> Client:
    """A client for the chosen master with the token from $STALWART_TOKEN or the cache.

    With ``-u USER`` (or $STALWART_USER / $DET_USER) and a cached token of someone else, it logs
    in as USER first (password from $STALWART_PASSWORD / $DET_PASS, else asked for) and caches
    that token, as ``det -u USER`` does. ``as_user=False`` is for commands that need no login.
    """
    current = state(ctx)
    c = Client(current.master)
    ctx.call_on_close(c.close)
    if as_user and current.user and not os.environ.get("STALWART_TOKEN"):
        cached = auth.load_token(current.master)
        if cached is None or cached.username != current.user:
            password = auth.env_password() or typer.prompt(
                f"Password for {current.user}", hide_input=True, err=True
            )
            try:
                login = c.login(current.user, password)
            except UnauthorizedError as exc:
                # A wrong password is not "not logged in, go log in": say only what the master said.
                raise CliError(str(exc)) from None
            auth.save_token(current.master, login.user.username, login.token)
    return c


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def print_masked_json(data: Any) -> None:
    """``print_json`` for experiments, checkpoints and lineages: secrets are masked here too, by
    the same rule as the master's (``stalwart._masking``), whatever the master sent."""
    print_json(mask_answer(data))


def fmt_time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def fmt_size(size: int) -> str:
    amount = float(size)
    for unit in ("B", "KiB", "MiB"):
        if amount < 1024 or unit == "MiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, caption: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(caption=caption, box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")  # wrap long ids and URLs rather than cut them
    for row in rows:
        # Text() so user data such as a "[red]" label is shown, not interpreted as rich markup.
        table.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
    Console().print(table)


def print_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, caption: str | None = None) -> None:
    """The same rows as ``print_table``, as CSV (header first) for spreadsheets and scripts."""
    import csv
    import sys

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(["" if cell is None else cell for cell in row] for row in rows)
    if caption:
        typer.echo(caption, err=True)


def print_fields(fields: Mapping[str, Any]) -> None:
    """A two-column "field  value" view of one object."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in fields.items():
        table.add_row(key, Text("" if value is None else str(value)))
    Console().print(table)
