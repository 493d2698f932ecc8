"""``stalwart master``: what the master says about itself."""

import typer

from stalwart.cli._shared import JsonOption, client, print_fields, print_json, state

app = typer.Typer(help="Show information about the master.", no_args_is_help=True)


@app.command()
def info(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Version, cluster id and name of the master (no login needed)."""
    master = client(ctx, as_user=False).master_info()
    if as_json:
        print_json(master.raw)
        return
    print_fields(
        {
            "Master": state(ctx).master,
            "Version": master.version,
            "Cluster": master.cluster_name,
            "Cluster id": master.cluster_id,
        }
    )
