"""``stalwart agent`` (alias ``a``): the machines that run trials, and the tokens they register with."""

from typing import Annotated

import typer

from stalwart.cli._shared import JsonOption, client, fmt_time, print_json, print_table
from stalwart.client import Agent

app = typer.Typer(help="List, enable and disable agents; create agent tokens.", no_args_is_help=True)
token_app = typer.Typer(help="Tokens that let an agent register.", no_args_is_help=True)
app.add_typer(token_app, name="token")

AgentId = Annotated[str, typer.Argument(help="Agent id.", show_default=False)]


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _summary(agent: Agent, as_json: bool) -> None:
    if as_json:
        print_json(agent.raw)
        return
    status = "enabled" if agent.enabled else "disabled (draining)" if agent.draining else "disabled"
    typer.echo(f"Agent {agent.id} is {status}")


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List agents with their resource pool and status."""
    agents = client(ctx).list_agents()
    if as_json:
        print_json([a.raw for a in agents])
        return
    print_table(
        ["ID", "Resource pool", "Version", "Enabled", "Draining", "Connected", "Registered", "Last seen"],
        (
            [
                a.id,
                a.resource_pool,
                a.version,
                _yes(a.enabled),
                _yes(a.draining),
                _yes(a.connected),
                fmt_time(a.registered_at),
                fmt_time(a.last_seen_at),
            ]
            for a in agents
        ),
    )


app.command("ls", hidden=True)(list_)


@app.command()
def enable(ctx: typer.Context, agent_id: AgentId, as_json: JsonOption = False) -> None:
    """Let the scheduler place trials on the agent again (admins only)."""
    _summary(client(ctx).enable_agent(agent_id), as_json)


@app.command()
def disable(
    ctx: typer.Context,
    agent_id: AgentId,
    drain: Annotated[
        bool,
        typer.Option("--drain", help="Let running trials finish there instead of moving them now."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Schedule nothing new on the agent; its trials checkpoint and move, or finish with --drain."""
    _summary(client(ctx).disable_agent(agent_id, drain=drain), as_json)


@token_app.command("create")
def token_create(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Create a token for `stalwart-agent --token` (admins only); it is shown only this once."""
    token = client(ctx).create_agent_token()
    if as_json:
        print_json({"token": token})
        return
    typer.echo(token)
