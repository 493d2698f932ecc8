"""``stalwart user`` (alias ``u``): log in and out, and manage accounts."""

import contextlib
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
Username = Annotated[str, typer.Argument(help="User name.", show_default=False)]


@app.command()
def login(
    ctx: typer.Context,
    username: Annotated[
        str | None, typer.Argument(help="Prompted for when absent.", show_default=False)
    ] = None,
    password: PasswordOption = None,
) -> None:
    """Log in and remember the token for this master (password also read from $STALWART_PASSWORD
    or $DET_PASS; user name from -u, $STALWART_USER or $DET_USER)."""
    master = state(ctx).master
    username = username or state(ctx).user or typer.prompt("Username")
    password = password or auth.env_password() or typer.prompt("Password", hide_input=True)
    try:
        result = client(ctx, as_user=False).login(username, password)
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


def _updated(user: User, as_json: bool, message: str) -> None:
    if as_json:
        print_json(user.raw)
    else:
        typer.echo(message)


@app.command()
def activate(ctx: typer.Context, username: Username, as_json: JsonOption = False) -> None:
    """Let a deactivated user log in again (admins only)."""
    user = client(ctx).update_user(username, active=True)
    _updated(user, as_json, f"User {user.username} is active")


@app.command()
def deactivate(ctx: typer.Context, username: Username, as_json: JsonOption = False) -> None:
    """Stop a user from logging in; every session and API token of theirs ends now (admins only)."""
    user = client(ctx).update_user(username, active=False)
    _updated(user, as_json, f"User {user.username} is deactivated; their sessions and API tokens are revoked")


@app.command()
def edit(
    ctx: typer.Context,
    username: Username,
    admin: Annotated[
        bool | None,
        typer.Option(
            "--admin/--no-admin", help="Make the user a cluster admin, or no longer one.", show_default=False
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Promote or demote a user (admins only; the last active admin stays one)."""
    if admin is None:
        raise CliError("nothing to change: give --admin or --no-admin")
    user = client(ctx).update_user(username, admin=admin)
    _updated(user, as_json, f"User {user.username} is {'now' if user.admin else 'no longer'} an admin")


@app.command("change-password")
def change_password(
    ctx: typer.Context,
    username: Annotated[
        str | None,
        typer.Argument(
            help="Reset this user's password (admins only) [default: your own].", show_default=False
        ),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            "-p",
            help="The new password; prompted for (hidden) when absent.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Change your password (asks for the current one), or reset another user's as an admin.

    Either way every other session and API token of that user is revoked.
    """
    c = client(ctx)
    if username is None:
        old = typer.prompt("Current password", hide_input=True)
        new = password or typer.prompt("New password", hide_input=True, confirmation_prompt=True)
        c.change_password(old, new)
        typer.echo("Password changed; your other sessions and API tokens are revoked")
        return
    new = password or typer.prompt(f"New password for {username}", hide_input=True, confirmation_prompt=True)
    user = c.update_user(username, password=new)
    typer.echo(f"Password of {user.username} reset; their sessions and API tokens are revoked")
