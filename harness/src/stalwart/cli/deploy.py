"""``stalwart deploy local``: a whole cluster on this machine, as background processes.

The supervisor lives in the master distribution (``stalwart_master.local``); it is imported only
inside the commands so the harness keeps no dependency on the master.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from stalwart.cli._errors import CliError, fail
from stalwart.cli._shared import JsonOption, print_fields, print_json, print_table

NEEDS_MASTER = "stalwart deploy local needs the stalwart-master package: pip install stalwart-master"

app = typer.Typer(help="Deploy a Stalwart cluster.", no_args_is_help=True)
local_app = typer.Typer(
    help="A cluster on this machine: embedded PostgreSQL and Redis, the master, a Celery worker, agents.",
    no_args_is_help=True,
)
app.add_typer(local_app, name="local")

DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="STALWART_DATA_DIR",
        help="Where databases, logs, pid files and checkpoints live.",
        show_default="~/.stalwart",
    ),
]
PortOption = Annotated[
    int, typer.Option("--port", min=1, max=65535, help="Port for the master's API and web UI.")
]
HOME_DATA_DIR = Path("~/.stalwart")


AgentsOption = Annotated[int, typer.Option("--agents", min=0, max=64, help="Agent daemons to run trials.")]
SlotsOption = Annotated[
    int | None,
    typer.Option(
        "--artificial-slots",
        min=1,
        max=1024,
        help="Give each agent this many artificial (CPU) slots instead of detecting GPUs.",
        show_default=False,
    ),
]
TrialUserOption = Annotated[
    str | None,
    typer.Option(
        "--trial-user",
        envvar="STALWART_AGENT_TRIAL_USER",
        help="Run trials as this user, so trial code cannot read the cluster's secrets. As root the "
        "default is the system user stalwart-trial (created if missing); otherwise trials run as you.",
        show_default=False,
    ),
]


@local_app.command("up")
def up(
    data_dir: DataDirOption = HOME_DATA_DIR,
    port: PortOption = 8080,
    agents: AgentsOption = 1,
    artificial_slots: SlotsOption = None,
    trial_user: TrialUserOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start the local cluster (what is already running is kept) and print how to log in.

    The admin password is printed by the start that creates it, and never again: afterwards it
    is only in <data dir>/admin-password, readable by you alone.
    """
    local = _local()
    try:
        result = local.up(
            data_dir.expanduser(),
            port,
            agents=agents,
            artificial_slots=artificial_slots,
            trial_user=trial_user,
        )
    except local.LocalClusterError as exc:
        raise fail(CliError(str(exc))) from None
    _report(result, as_json, show_login=True)


@local_app.command("down")
def down(data_dir: DataDirOption = HOME_DATA_DIR, as_json: JsonOption = False) -> None:
    """Stop the processes `up` started; databases and checkpoints stay in the data dir."""
    local = _local()
    try:
        result = local.down(data_dir.expanduser())
    except local.LocalClusterError as exc:
        raise fail(CliError(str(exc))) from None
    _report(result, as_json, show_login=False)


@local_app.command("status")
def status(data_dir: DataDirOption = HOME_DATA_DIR, as_json: JsonOption = False) -> None:
    """Show each component: running, stopped, or stale (its pid file outlived the process)."""
    local = _local()
    _report(local.status(data_dir.expanduser()), as_json, show_login=True)


def _local() -> ModuleType:
    try:
        from stalwart_master import local
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "stalwart_master":
            raise fail(CliError(NEEDS_MASTER)) from None
        raise
    return local


def _report(result: Any, as_json: bool, *, show_login: bool) -> None:
    if as_json:
        print_json(result.to_dict())
        return
    print_table(
        ["Component", "State", "PID", "URL", "Detail"],
        [(c.name, c.state, c.pid, c.url, c.detail) for c in result.components],
    )
    for note in result.notes:
        typer.echo(f"Note: {note}", err=True)
    if (
        show_login
        and result.master_url
        and any(c.name == "master" and c.state == "running" for c in result.components)
    ):
        if result.admin_password:
            password = f"{result.admin_password}  (shown this once; kept in {result.admin_password_file})"
        elif result.admin_password_file:
            password = f"in {result.admin_password_file}"
        else:  # the master was given STALWART_ADMIN_PASSWORD, so it wrote no file
            password = f"(not in {result.data_dir / 'admin-password'})"
        print_fields(
            {
                "Master": result.master_url,
                "User": result.admin_username,
                "Password": password,
                "Data dir": result.data_dir,
                "Logs": result.data_dir / "logs",
            }
        )
