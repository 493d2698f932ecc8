"""``stalwart preview-search CONFIG``: what the searcher would run (Determined's ``det preview-search``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from stalwart.cli._errors import CliError
from stalwart.cli._overrides import apply_overrides
from stalwart.cli._shared import JsonOption, client, print_fields, print_json, print_table


def _flat(hparams: dict[str, Any], prefix: str = "") -> list[str]:
    """``a.b=1`` for each leaf, so a nested hyperparameter reads on one line."""
    out: list[str] = []
    for key, value in hparams.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.extend(_flat(value, f"{name}."))
        else:
            out.append(f"{name}={json.dumps(value, default=str)}")
    return out


def _length(plan: dict[str, Any]) -> str:
    if plan["searcher"] == "bayesian" and not plan["brackets"]:
        return "as long as the trial's code trains (no pruning)"
    if plan["time_metric"]:
        return f"up to {plan['time_metric']} reaching each rung below"
    if plan["max_length"]:
        unit, value = next(iter(plan["max_length"].items()))
        return f"{value} {unit} (searcher.max_length)"
    return "as long as the trial's code trains"


def preview_search(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML).", show_default=False)],
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            metavar="KEY=VALUE",
            help="Set one config field, e.g. searcher.max_trials=8 (dotted key, YAML value; repeatable).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=0, max=10_000, help="List at most this many trials.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Show the trials CONFIG's searcher would create and the training each gets; creates nothing."""
    try:
        text = config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read config file {config}: {exc}") from None
    plan = client(ctx).preview_search(apply_overrides(text, overrides or ()), limit=limit)
    if as_json:
        print_json(plan)
        return
    concurrency = plan["max_concurrent_trials"] or "no limit"
    print_fields(
        {
            "Searcher": plan["searcher"],
            "Metric": f"{plan['metric']} ({'smaller' if plan['smaller_is_better'] else 'larger'} is better)",
            "Trials": plan["total_trials"],
            "Max concurrent trials": concurrency,
            "Training per trial": _length(plan),
            "Experiment seed": plan["experiment_seed"],
        }
    )
    for index, bracket in enumerate(plan["brackets"]):
        typer.echo(f"\nBracket {index}: {bracket['trials']} trials")
        rows = [
            (rung, f"{r['time']:g}", r["trials"], r["stop_here"]) for rung, r in enumerate(bracket["rungs"])
        ]
        print_table(["Rung", plan["time_metric"] or "time", "Trials reaching it", "Stopped there"], rows)
    if plan["adaptive"]:
        typer.echo("\nHyperparameters are chosen one trial at a time by TPE from the results so far.")
        return
    typer.echo("")
    show_bracket = len(plan["brackets"]) > 1
    columns = ["Trial", *(["Bracket"] if show_bracket else []), "Hyperparameters"]
    rows = [
        (t["ordinal"], *([t["bracket"]] if show_bracket else []), " ".join(_flat(t["hparams"])) or "-")
        for t in plan["trials"]
    ]
    caption = f"first {len(plan['trials'])} of {plan['total_trials']}" if plan["truncated"] else None
    print_table(columns, rows, caption=caption)
