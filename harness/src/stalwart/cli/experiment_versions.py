"""Experiment versions, registered on ``experiment``: ``fork``, ``continue`` and ``versions``.

``--config`` takes either a YAML file (a partial config, deep-merged over the experiment's) or
``KEY=VALUE`` (a dotted key, a YAML value), repeatable and applied in order; ``--config-file``
is Determined's spelling for the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stalwart.cli._errors import CliError
from stalwart.cli._overrides import apply_to
from stalwart.cli._shared import JsonOption, client, fmt_time, print_json, print_masked_json, print_table
from stalwart.cli.experiment import ExperimentId, app
from stalwart.client import Experiment

OverrideOption = Annotated[
    list[str] | None,
    typer.Option(
        "--config",
        metavar="FILE|KEY=VALUE",
        help="A YAML file of fields to change, or one field as KEY=VALUE, e.g. max_restarts=10 "
        "(dotted key, YAML value; repeatable, applied in order).",
        show_default=False,
    ),
]
ConfigFileOption = Annotated[
    Path | None,
    typer.Option(
        "--config-file", metavar="FILE", help="A YAML file of fields to change.", show_default=False
    ),
]


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _load_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CliError(f"config file {path} is not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise CliError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise CliError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise CliError(f"config file {path} holds a {type(loaded).__name__}, not a mapping of fields")
    return loaded


def config_overrides(config_file: Path | None, values: list[str] | None) -> dict[str, Any]:
    """One nested mapping from ``--config-file`` and the ``--config`` values, in that order.

    A ``--config`` value is a file when one exists by that name or it has no ``=``.
    """
    overrides: dict[str, Any] = _load_file(config_file) if config_file else {}
    for value in values or ():
        if "=" not in value or Path(value).is_file():
            _merge(overrides, _load_file(Path(value)))
        else:
            apply_to(overrides, [value])
    return overrides


@app.command()
def fork(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    overrides: OverrideOption = None,
    config_file: ConfigFileOption = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a new experiment from ID's config (with changes) and model code; prints its id."""
    changes = config_overrides(config_file, overrides)
    exp = client(ctx).fork_experiment(experiment_id, changes, paused=paused)
    for warning in exp.raw.get("warnings") or ():
        typer.echo(f"warning: {warning.get('field')}: {warning.get('message')}", err=True)
    if as_json:
        print_masked_json(exp.raw)
    else:
        typer.echo(f"Forked experiment {experiment_id} as experiment {exp.id}")


@app.command("continue")
def continue_(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    overrides: OverrideOption = None,
    config_file: ConfigFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a finished experiment again: its failed or canceled trials (or its only trial) resume
    from their latest checkpoints. Only how trials run may change (max_restarts, resources,
    checkpoint GC and periods; searcher.max_length of a single trial)."""
    changes = config_overrides(config_file, overrides)
    exp = client(ctx).continue_experiment(experiment_id, changes)
    if as_json:
        print_masked_json(exp.raw)
        return
    trials = ", ".join(str(t) for t in exp.raw.get("resumed_trial_ids") or ())
    typer.echo(f"Continued experiment {exp.id}: {exp.state}, resuming trial(s) {trials}")


def _ordered(versions: list[Experiment]) -> list[tuple[int, Experiment]]:
    """Depth-first with depths; an experiment whose parent is not listed (hidden) starts a tree."""
    ids = {v.id for v in versions}
    children: dict[int | None, list[Experiment]] = {}
    for v in versions:
        children.setdefault(v.parent_id if v.parent_id in ids else None, []).append(v)
    ordered: list[tuple[int, Experiment]] = []

    def walk(parent: int | None, depth: int) -> None:
        for v in children.get(parent, []):
            ordered.append((depth, v))
            walk(v.id, depth + 1)

    walk(None, 0)
    return ordered


@app.command()
def versions(ctx: typer.Context, experiment_id: ExperimentId, as_json: JsonOption = False) -> None:
    """Show ID's fork tree: its root ancestor and every descendant you can see."""
    found = client(ctx).experiment_versions(experiment_id)
    if as_json:
        print_json([dict(v.raw) for v in found])
        return
    rows = [
        (
            v.id,
            ("  " * (depth - 1) + "└─ " if depth else "") + v.name,
            v.state,
            v.owner,
            v.parent_id if v.parent_id is not None else "",
            fmt_time(v.created_at),
        )
        for depth, v in _ordered(found)
    ]
    print_table(["ID", "Name", "State", "Owner", "Parent", "Created"], rows)
