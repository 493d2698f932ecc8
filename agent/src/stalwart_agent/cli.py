"""``stalwart-agent``: the command line of the agent daemon.

Every failure ends as one ``Error: ...`` line on stderr and exit status 1; ``STALWART_DEBUG=1``
shows the traceback of an unexpected one.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from stalwart.client._http import CA_CERT_ENV, tls_verify
from stalwart.client.errors import StalwartError
from stalwart_agent import __version__
from stalwart_agent.daemon import Agent, AgentConfig, default_agent_id
from stalwart_agent.errors import AgentError
from stalwart_agent.launcher import resolve_trial_user
from stalwart_agent.slots import discover_slots, parse_visible_gpus

log = logging.getLogger("stalwart_agent")
# What the master accepts as an agent id; checked here so a bad hostname fails before registering.
_AGENT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


class SlotTypeOption(enum.StrEnum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


app = typer.Typer(
    name="stalwart-agent",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stalwart-agent {__version__}")
        raise typer.Exit()


@app.command()
def run(
    master: Annotated[
        str, typer.Option("--master", envvar="STALWART_MASTER", help="Master URL, e.g. http://master:8080.")
    ],
    token: Annotated[
        str,
        typer.Option(
            "--token",
            envvar="STALWART_AGENT_TOKEN",
            help="Agent token from `stalwart agent token create`.",
            show_envvar=True,
        ),
    ],
    ca_cert: Annotated[
        Path | None,
        typer.Option(
            "--ca-cert",
            envvar=CA_CERT_ENV,
            show_envvar=True,
            help="PEM CA bundle to verify an https:// master with, e.g. a private CA's (default: the "
            "usual public CAs); also passed to the trials.",
        ),
    ] = None,
    agent_id: Annotated[
        str | None, typer.Option("--agent-id", help="Name of this agent (default: the hostname).")
    ] = None,
    resource_pool: Annotated[str, typer.Option("--resource-pool", help="Resource pool to join.")] = "default",
    artificial_slots: Annotated[
        int,
        typer.Option("--artificial-slots", min=0, help="Offer N slots with no device behind them (testing)."),
    ] = 0,
    slot_type: Annotated[
        SlotTypeOption, typer.Option("--slot-type", help="auto: GPUs if any, else one CPU slot.")
    ] = SlotTypeOption.auto,
    visible_gpus: Annotated[
        str | None, typer.Option("--visible-gpus", help="Only these GPU indexes, e.g. 0,1 (default: all).")
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            "--work-dir",
            help="Where the agent keeps each allocation's files, so a restarted agent adopts its "
            "trials (default: $TMPDIR/stalwart-agent-<agent id>).",
        ),
    ] = None,
    shutdown_grace: Annotated[
        float,
        typer.Option(
            "--shutdown-grace", min=0, help="Seconds trials get between SIGTERM and SIGKILL when stopped."
        ),
    ] = 10.0,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            min=0,
            help="After SIGTERM, seconds to wait for the trials to checkpoint and move before stopping them.",
        ),
    ] = 600.0,
    max_retry_delay: Annotated[
        float,
        typer.Option(
            "--max-retry-delay",
            min=0.1,
            help="Longest wait between two tries to reach the master (exponential backoff with jitter).",
        ),
    ] = 10.0,
    trial_user: Annotated[
        str | None,
        typer.Option(
            "--trial-user",
            envvar="STALWART_AGENT_TRIAL_USER",
            show_envvar=True,
            help="Run trials as this user (name or uid; needs the agent to run as root), so trial code "
            "cannot read the agent's token or files. Default: the agent's own user.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Offer this machine's GPUs (or CPU) to a Stalwart master and run the trials it assigns."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise AgentError(f"--log-level must be debug, info, warning or error, not {log_level!r}")
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # httpx logs every request at INFO: one line per poll and per log batch is noise, not news.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if not token.strip():
        raise AgentError("--token (or STALWART_AGENT_TOKEN) is empty")
    if ca_cert is not None:
        _trust_ca(ca_cert, master)
    agent_id = agent_id or default_agent_id()
    if not _AGENT_ID.fullmatch(agent_id):
        raise AgentError(
            f"agent id {agent_id!r} must be 1-128 letters, digits, '.', '_' or '-' (set --agent-id)"
        )
    slots = discover_slots(
        slot_type.value,
        parse_visible_gpus(visible_gpus),
        artificial_slots,
        agent_id=agent_id,
    )
    for slot in slots:
        log.info(
            "agent %s: slot %d: %s %s %s (%d MiB)",
            agent_id,
            slot.index,
            slot.type,
            slot.uuid,
            slot.name,
            slot.memory_mb,
        )
    run_as = resolve_trial_user(trial_user)
    config = AgentConfig(
        master_url=master.rstrip("/"),
        token=token.strip(),
        agent_id=agent_id,
        slots=slots,
        work_dir=work_dir or Path(tempfile.gettempdir()) / f"stalwart-agent-{agent_id}",
        resource_pool=resource_pool,
        shutdown_grace=shutdown_grace,
        drain_timeout=drain_timeout,
        backoff_cap=max_retry_delay,
        trial_user=run_as,
    )
    Agent(config).run()


def _trust_ca(ca_cert: Path, master: str) -> None:
    """Check the CA bundle now and publish it as ``$STALWART_CA_CERT``: the agent's own HTTP client
    reads it there, and the launcher hands it to every trial, which talks to the same master."""
    path = ca_cert.expanduser().resolve()  # trials run in another working directory
    try:
        tls_verify(path)
    except StalwartError as exc:
        raise AgentError(f"--ca-cert: {exc}") from None
    if not master.startswith("https://"):
        log.warning("--ca-cert %s is not used: the master URL %s is not https://", path, master)
    os.environ[CA_CERT_ENV] = str(path)


def main() -> None:
    """Console-script entry point: typer's own errors as usual, ours as one line."""
    try:
        app()
    except AgentError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        if os.environ.get("STALWART_DEBUG"):
            raise
        typer.echo(
            f"Error: unexpected {type(exc).__name__}: {exc} (set STALWART_DEBUG=1 for the traceback)",
            err=True,
        )
        raise SystemExit(1) from None
