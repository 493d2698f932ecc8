"""``stalwart agent`` (alias ``a``): the machines that run trials, and the tokens they register with."""

from typing import Annotated

import typer

from stalwart.cli._shared import JsonOption, client, fmt_time, print_json, print_table
from stalwart.client import Agent

app = typer.Typer(help="List, enable and disable agents; manage agent tokens.", no_args_is_help=True)
token_app = typer.Typer(
    help="Tokens that let an agent register, each bound to one agent id.", no_args_is_help=True
)
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
def token_create(
    ctx: typer.Context,
    agent_id: Annotated[
        str,
        typer.Argument(
            help="The agent id the token is for: the agent's --agent-id. It can act as no other.",
            show_default=False,
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Create a token for `stalwart-agent --agent-id AGENT_ID --token ...` (admins only).

    The secret goes to stdout, shown only this once; its id (to revoke it by) to stderr.
    """
    issued = client(ctx).issue_agent_token(agent_id)
    if as_json:
        print_json({"token": issued.token, "id": issued.id, "agent_id": issued.agent_id})
        return
    typer.echo(issued.token)
    typer.echo(
        f"Agent token {issued.id} for agent {issued.agent_id}; "
        f"revoke it with `stalwart agent token revoke {issued.id}`",
        err=True,
    )


@token_app.command("list")
def token_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List agent tokens, revoked and expired ones too, without their secrets (admins only)."""
    tokens = client(ctx).list_agent_tokens()
    if as_json:
        print_json([t.raw for t in tokens])
        return
    print_table(
        ["ID", "Agent", "Created by", "Created", "Expires", "Revoked"],
        (
            [
                t.id,
                t.agent_id or "(none)",
                t.created_by,
                fmt_time(t.created_at),
                fmt_time(t.expires_at) or "never",
                fmt_time(t.revoked_at),
            ]
            for t in tokens
        ),
    )


token_app.command("ls", hidden=True)(token_list)


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[int, typer.Argument(help="Token id, from `stalwart agent token list`.", min=1)],
) -> None:
    """Revoke an agent token: the agent holding it is refused from its next request on (admins only)."""
    client(ctx).revoke_agent_token(token_id)
    typer.echo(f"Revoked agent token {token_id}")
