"""``stalwart user`` (alias ``u``): log in and out, and manage accounts."""

import contextlib
import os
from typing import Annotated

import typer

from stalwart.cli._errors import CliError
from stalwart.cli._shared import JsonOption, client, fmt_time, print_json, print_table, state
from stalwart.client import Client, UnauthorizedError, User, auth

app = typer.Typer(help="Log in and out, and manage user accounts.", no_args_is_help=True)

PasswordOption = Annotated[
    str | None,
    typer.Option("--password", "-p", help="Password; prompted for (hidden) when absent.", show_default=False),
]


@app.command()
def login(
    ctx: typer.Context,
    username: Annotated[
        str | None, typer.Argument(help="Prompted for when absent.", show_default=False)
    ] = None,
    password: PasswordOption = None,
) -> None:
    """Log in and remember the token for this master (also read from $STALWART_PASSWORD)."""
    master = state(ctx).master
    username = username or typer.prompt("Username")
    password = password or os.environ.get("STALWART_PASSWORD") or typer.prompt("Password", hide_input=True)
    try:
        result = client(ctx).login(username, password)
    except UnauthorizedError as exc:
        # A wrong password is not "not logged in, go log in": say only what the master said.
        raise CliError(str(exc)) from None
    auth.save_token(master, result.user.username, result.token)
    typer.echo(f"Logged in to {master} as {result.user.username}")


@app.command()
def logout(ctx: typer.Context) -> None:
    """Revoke this master's token on the master and forget it here."""
    master = state(ctx).master
    cached = auth.resolve_token(master)
    if cached is None:
        typer.echo(f"Not logged in to {master}", err=True)
        return
    # An expired or revoked token (401) needs no revoking: forgetting it here is all that is left.
    with Client(master, token=cached.token) as c, contextlib.suppress(UnauthorizedError):
        c.logout()
    auth.forget_token(master)
    typer.echo(f"Logged out of {master}")


@app.command()
def whoami(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show the user this master knows you as."""
    me = client(ctx).me()
    if as_json:
        print_json(me.raw)
        return
    role = " (admin)" if me.admin else ""
    typer.echo(f"{me.username}{role} on {state(ctx).master}")


def _print_users(users: list[User]) -> None:
    print_table(
        ["ID", "Username", "Admin", "Active", "Created"],
        (
            [u.id, u.username, "yes" if u.admin else "", "yes" if u.active else "no", fmt_time(u.created_at)]
            for u in users
        ),
    )


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List user accounts."""
    users = client(ctx).list_users()
    if as_json:
        print_json([u.raw for u in users])
    else:
        _print_users(users)


app.command("ls", hidden=True)(list_)


@app.command()
def create(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(show_default=False)],
    admin: Annotated[bool, typer.Option("--admin", help="Make the new user an admin.")] = False,
    password: PasswordOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a user account (admins only)."""
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = client(ctx).create_user(username, password, admin=admin)
    if as_json:
        print_json(user.raw)
    else:
        typer.echo(f"Created user {user.username} (id {user.id}){' as admin' if user.admin else ''}")
