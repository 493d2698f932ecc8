"""``stalwart token`` (alias ``tkn``): API tokens that act as you, for scripts and CI.

The secret appears once, on ``create``; ``list`` shows what each token is, never the secret.
"""

from typing import Annotated

import typer

from stalwart.cli._shared import JsonOption, client, fmt_time, print_json, print_table

app = typer.Typer(help="Create, list and revoke your API tokens.", no_args_is_help=True)


@app.command()
def create(
    ctx: typer.Context,
    description: Annotated[
        str, typer.Option("--description", "-d", help="What the token is for.", show_default=False)
    ] = "",
    expires_in_days: Annotated[
        float | None,
        typer.Option(
            min=0.001, max=3650, help="Expire after this many days [default: never].", show_default=False
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API token and print its secret, which is not shown again.

    Only the secret goes to stdout, so `export STALWART_TOKEN=$(stalwart token create)` works.
    """
    created = client(ctx).create_token(description, expires_in_days)
    if as_json:
        print_json({**created.raw, "token": created.token})
        return
    info = created.info
    expires = f"expires {fmt_time(info.expires_at)}" if info.expires_at else "never expires"
    typer.echo(
        f"Created API token {info.id} for {info.username} ({expires}); store it now, it is not shown again:",
        err=True,
    )
    typer.echo(created.token)


@app.command("list")
def list_(
    ctx: typer.Context,
    all_users: Annotated[
        bool, typer.Option("--all", "-a", help="Everyone's tokens (cluster admins).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List live sessions and API tokens, newest first; `*` marks the one in use here."""
    tokens = client(ctx).list_tokens(all_users=all_users)
    if as_json:
        print_json([t.raw for t in tokens])
        return
    print_table(
        ["ID", "Kind", "User", "Description", "Created", "Expires", "Last used", ""],
        (
            [
                t.id,
                t.kind,
                t.username,
                t.description,
                fmt_time(t.created_at),
                fmt_time(t.expires_at) or "never",
                fmt_time(t.last_used_at),
                "*" if t.current else "",
            ]
            for t in tokens
        ),
    )


app.command("ls", hidden=True)(list_)


@app.command()
def revoke(
    ctx: typer.Context,
    token_id: Annotated[int, typer.Argument(min=1, metavar="ID", help="Token id.", show_default=False)],
) -> None:
    """Revoke one of your sessions or API tokens (cluster admins: anyone's); it fails from now on."""
    client(ctx).revoke_token(token_id)
    typer.echo(f"Revoked token {token_id}")
