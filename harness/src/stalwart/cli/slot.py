"""``stalwart slot``: the devices (GPUs, CPUs) agents offer, and which trial holds each."""

import typer

from stalwart.cli._shared import JsonOption, client, print_json, print_table

app = typer.Typer(help="List the slots of every agent.", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List every agent's slots and the trial holding each."""
    slots = client(ctx).list_slots()
    if as_json:
        print_json([s.raw for s in slots])
        return
    print_table(
        ["Agent", "Index", "Type", "Name", "UUID", "Memory", "Trial", "Allocation"],
        (
            [
                s.agent_id,
                s.index,
                s.type,
                s.name,
                s.uuid,
                f"{s.memory_mb} MiB" if s.memory_mb else "",
                s.trial_id,
                s.allocation_id,
            ]
            for s in slots
        ),
    )


app.command("ls", hidden=True)(list_)
