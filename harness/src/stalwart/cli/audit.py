"""``stalwart audit``: read the master's audit log (cluster admins): who did what, from where."""

import json
import re
from datetime import datetime, timedelta
from typing import Annotated

import typer

from stalwart.cli._errors import CliError
from stalwart.cli._shared import JsonOption, client, fmt_time, print_json, print_table

app = typer.Typer(help="Read the audit log (cluster admins).", no_args_is_help=True)

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> datetime:
    """``30m``, ``2h``, ``7d`` ago, or an ISO 8601 time (local time when it names no zone)."""
    relative = _RELATIVE.match(text.strip().lower())
    if relative:
        amount, unit = relative.groups()
        return datetime.now().astimezone() - timedelta(**{_UNIT[unit]: int(amount)})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(f"--since {text!r} is neither a duration (30m, 2h, 7d) nor an ISO 8601 time") from None
    # The master compares with aware times; a bare time means the user's own clock.
    return moment if moment.tzinfo else moment.astimezone()


@app.command("list")
def list_(
    ctx: typer.Context,
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Only this user's.", show_default=False)
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(help="Exact (auth.login) or a prefix ending in '.' (experiment.).", show_default=False),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Since this long ago (30m, 2h, 7d) or this ISO 8601 time.", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """List audit events, newest first."""
    page = client(ctx).list_audit_events(
        username=user,
        action=action,
        since=parse_since(since) if since is not None else None,
        limit=limit,
        offset=offset,
    )
    if as_json:
        print_json(page.raw)
        return
    shown = len(page.items)
    caption = f"{shown} of {page.total} shown (use --offset/--limit)" if offset + shown < page.total else None
    print_table(
        ["ID", "Time", "User", "Credential", "Address", "Action", "Target", "Outcome", "Details"],
        (
            [
                e.id,
                fmt_time(e.at),
                e.username,
                e.credential,
                e.address,
                e.action,
                f"{e.target_type} {e.target_id}".strip(),
                e.outcome,
                json.dumps(dict(e.details), sort_keys=True) if e.details else "",
            ]
            for e in page.items
        ),
        caption=caption,
    )


app.command("ls", hidden=True)(list_)
