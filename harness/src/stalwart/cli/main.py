"""The ``stalwart`` / ``stw`` entry point: global options and the command groups.

Kept cheap to import (no httpx, rich or YAML at module level) so ``stalwart --help`` and shell
completion answer at once; those load when a command actually needs them.
"""

from typing import Annotated

import typer

from stalwart.cli import (
    agent,
    audit,
    checkpoint,
    deploy,
    downloads,  # noqa: F401 (registers `trial download` and `experiment download`)
    experiment,
    experiment_tools,  # noqa: F401 (registers list-trials, list-checkpoints, ... on `experiment`)
    experiment_versions,  # noqa: F401 (registers fork, continue and versions on `experiment`)
    master,
    model,
    preview,
    project,
    slot,
    token,
    trial,
    user,
    workspace,
)
from stalwart.cli._errors import CliGroup
from stalwart.cli._shared import CliState, JsonOption, client, print_fields, print_json, state
from stalwart.client import auth

app = typer.Typer(
    name="stalwart",
    cls=CliGroup,
    help="Stalwart: train deep-learning models on your cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# det-style short aliases are the same groups registered again under a hidden name.
for _group, _name, _alias in (
    (experiment.app, "experiment", "e"),
    (trial.app, "trial", "t"),
    (checkpoint.app, "checkpoint", "c"),
    (model.app, "model", "m"),
    (agent.app, "agent", "a"),
    (slot.app, "slot", None),
    (user.app, "user", "u"),
    (token.app, "token", "tkn"),
    (workspace.app, "workspace", "w"),
    (project.app, "project", "p"),
    (audit.app, "audit", None),
    (master.app, "master", None),
):
    app.add_typer(_group, name=_name)
    if _alias:
        app.add_typer(_group, name=_alias, hidden=True)
app.add_typer(deploy.app, name="deploy")
app.command("preview-search")(preview.preview_search)


def _version(value: bool) -> None:
    if value:
        from stalwart import __version__

        typer.echo(f"stalwart {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    master_url: Annotated[
        str | None,
        typer.Option(
            "--master",
            "-m",
            help=f"Master URL (env STALWART_MASTER, DET_MASTER; default {auth.DEFAULT_MASTER}).",
            show_default=False,
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            "-u",
            help="Act as this user (env STALWART_USER, DET_USER; default: whoever is logged in).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Stalwart: train deep-learning models on your cluster."""
    ctx.obj = CliState(master=auth.resolve_master(master_url), user=auth.resolve_user(user))


@app.command("version")
def version_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Show this client's version and the master's (Determined's `det version`)."""
    from stalwart import __version__

    current = state(ctx)
    if not as_json:
        # The client's half first, so it is shown even when the master cannot be reached.
        print_fields({"Client": __version__})
    info = client(ctx, as_user=False).master_info()
    if as_json:
        print_json({"client": {"version": __version__}, "master": {"url": current.master, **info.raw}})
        return
    print_fields({"Master": info.version, "Master address": current.master, "Cluster": info.cluster_name})


def main() -> None:
    """Console-script entry point for ``stalwart`` and ``stw``."""
    app()
