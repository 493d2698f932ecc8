"""``stalwart experiment`` (alias ``e``): create, follow, inspect, steer and tidy up experiments."""

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from stalwart._masking import mask_yaml_text
from stalwart.cli._errors import EXIT_ERROR, EXIT_INTERRUPTED, CliError
from stalwart.cli._overrides import apply_overrides
from stalwart.cli._shared import (
    CsvOption,
    JsonOption,
    client,
    fmt_size,
    fmt_time,
    print_csv,
    print_fields,
    print_masked_json,
    print_table,
)
from stalwart.cli.trial import FollowOption, TailOption, print_logs, print_trials, searcher_metric
from stalwart.client import Experiment, ExperimentState, WaitTimeout

# `wait` exit codes: 0 COMPLETED, 1 CANCELED/ERROR (and any failure), 3 on timeout, so a script can
# tell "still running" from both a usage error (2) and a failed experiment.
EXIT_WAIT_TIMEOUT = 3

app = typer.Typer(help="Create, inspect and control experiments.", no_args_is_help=True)
label_app = typer.Typer(help="Add or remove experiment labels.", no_args_is_help=True)
set_app = typer.Typer(
    help="Change an experiment's name, description, GC policy, priority, weight or max slots.",
    no_args_is_help=True,
)
app.add_typer(label_app, name="label")
app.add_typer(set_app, name="set")

ExperimentId = Annotated[int, typer.Argument(min=1, help="Experiment id.", show_default=False)]
ConfigOverrides = Annotated[
    list[str] | None,
    typer.Option(
        "--config",
        metavar="KEY=VALUE",
        help="Set one config field, e.g. hyperparameters.lr=0.1 (dotted key, YAML value; repeatable).",
        show_default=False,
    ),
]


class OrderBy(StrEnum):
    id = "id"
    name = "name"
    state = "state"
    created_at = "created_at"
    ended_at = "ended_at"


def _read_config(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"config file {path} is not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise CliError(f"cannot read config file {path}: {exc.strerror or exc}") from None


def _build_context(directory: Path) -> bytes:
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise CliError(f"context directory {directory} {what}")
    # Imported here: tarfile/gzip/pathspec are only worth loading for `create`.
    from stalwart.context import ContextError, build_context

    try:
        return build_context(directory)
    except ContextError as exc:  # ContextTooLarge, or an entry the master would refuse
        raise CliError(f"{directory}: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot read context directory {directory}: {exc.strerror or exc}") from None


def _summary(exp: Experiment, as_json: bool, message: str) -> None:
    if as_json:
        print_masked_json(exp.raw)
    else:
        typer.echo(message)


@app.command()
def create(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML).", show_default=False)],
    context_dir: Annotated[
        Path, typer.Argument(help="Directory with the model code to upload.", show_default=False)
    ],
    paused: Annotated[
        bool, typer.Option("--paused", help="Create it paused; start with `activate`.")
    ] = False,
    project: Annotated[
        int | None,
        typer.Option(
            "--project",
            min=1,
            metavar="PROJECT_ID",
            help='Create it in this project [default: 1, "Uncategorized"].',
            show_default=False,
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Show progress and the first trial's logs until it ends; exit 0 only if COMPLETED.",
        ),
    ] = False,
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between progress checks (--follow).")] = 2.0,
    overrides: ConfigOverrides = None,
    as_json: JsonOption = False,
) -> None:
    """Upload the model directory and submit CONFIG as a new experiment; prints its id."""
    config_text = apply_overrides(_read_config(config), overrides or ())
    data = _build_context(context_dir)
    c = client(ctx)
    upload = c.upload_context(data)
    exp = c.create_experiment(config_text, context=upload.sha256, paused=paused, project_id=project)
    # The context note goes to stderr so stdout carries only the result (or the JSON), and only
    # now, so that a refused config still fails with a single line.
    verb = "uploaded" if upload.uploaded else "already on the master:"
    typer.echo(f"Context {verb} {upload.sha256[:12]} ({fmt_size(upload.size)})", err=True)
    # Determined fields the master accepts but ignores: one line each, so nothing is silently lost.
    for field, message in exp.warnings:
        typer.echo(f"Warning: {field}: {message}", err=True)
    if not follow:
        _summary(exp, as_json, f"Created experiment {exp.id}")
        return
    from stalwart.cli._follow import follow_experiment

    # With --json stdout carries only the final experiment, so logs are not streamed there.
    typer.echo(f"Created experiment {exp.id}", err=as_json)
    try:
        exp = follow_experiment(c, exp, poll=poll, logs=not as_json)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    _summary(exp, as_json, f"Experiment {exp.id} ended {exp.state}")
    if exp.state != ExperimentState.COMPLETED:
        raise typer.Exit(EXIT_ERROR)


@app.command("list")
def list_(
    ctx: typer.Context,
    states: Annotated[
        list[str] | None,
        typer.Option("--state", help="Only this state (repeatable).", show_default=False, metavar="STATE"),
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            help="Only with this label (repeatable; all must match).",
            show_default=False,
            metavar="LABEL",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name contains this (any case).", show_default=False)
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Owned by this user.", show_default=False)] = None,
    archived: Annotated[
        bool | None,
        typer.Option(
            "--archived/--no-archived", help="Only archived / only unarchived [default: unarchived]."
        ),
    ] = None,
    show_all: Annotated[
        bool,
        typer.Option(
            "--all", "-a", help="Everyone's experiments, archived ones too [default: yours, unarchived]."
        ),
    ] = False,
    order_by: Annotated[OrderBy | None, typer.Option(help="Sort key.", show_default=False)] = None,
    ascending: Annotated[
        bool | None, typer.Option("--asc/--desc", help="Sort order [default: desc].")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, max=1000, help="At most this many.")] = None,
    offset: Annotated[int | None, typer.Option(min=0, help="Skip this many.")] = None,
    workspace: Annotated[
        int | None,
        typer.Option(
            "--workspace", min=1, metavar="WORKSPACE_ID", help="Only in this workspace.", show_default=False
        ),
    ] = None,
    project: Annotated[
        int | None,
        typer.Option(
            "--project", min=1, metavar="PROJECT_ID", help="Only in this project.", show_default=False
        ),
    ] = None,
    as_csv: CsvOption = False,
    as_json: JsonOption = False,
) -> None:
    """List your unarchived experiments, newest first; --all for everyone's and archived ones."""
    c = client(ctx)
    if not show_all:
        # Determined's default view: your own, unarchived work; a filter given explicitly wins.
        owner = owner or c.me().username
        archived = False if archived is None else archived
    page = c.list_experiments(
        states=[s.upper() for s in states or ()],
        labels=labels,
        name=name,
        owner=owner,
        archived=archived,
        order_by=order_by.value if order_by else None,
        order=None if ascending is None else ("asc" if ascending else "desc"),
        limit=limit,
        offset=offset,
        workspace_id=workspace,
        project_id=project,
    )
    if as_json:
        print_masked_json(page.raw)
        return
    shown = len(page.items)
    caption = f"{shown} of {page.total} shown (use --offset/--limit)" if shown < page.total else None
    (print_csv if as_csv else print_table)(
        ["ID", "Name", "State", "Owner", "Labels", "Archived", "Created", "Ended"],
        (
            [
                e.id,
                e.name,
                e.state,
                e.owner,
                ", ".join(e.labels),
                "yes" if e.archived else "",
                fmt_time(e.created_at),
                fmt_time(e.ended_at),
            ]
            for e in page.items
        ),
        caption=None if as_csv else caption,
    )


app.command("ls", hidden=True)(list_)


@app.command()
def describe(ctx: typer.Context, experiment_id: ExperimentId, as_json: JsonOption = False) -> None:
    """Show one experiment and its trials (state, restarts, steps, best metric, latest checkpoint)."""
    c = client(ctx)
    exp = c.get_experiment(experiment_id)
    trials = c.list_trials(experiment_id)
    if as_json:
        print_masked_json({**exp.raw, "trials": [t.raw for t in trials]})
        return
    print_fields(
        {
            "ID": exp.id,
            "Name": exp.name,
            "State": exp.state,
            "Owner": exp.owner,
            "Labels": ", ".join(exp.labels),
            "Archived": "yes" if exp.archived else "no",
            "Description": exp.description,
            "Parent": exp.parent_id,
            "Context": exp.context_sha256,
            "Created": fmt_time(exp.created_at),
            "Updated": fmt_time(exp.updated_at),
            "Ended": fmt_time(exp.ended_at),
        }
    )
    typer.echo()
    print_trials(trials, searcher_metric(exp.config))


@app.command()
def logs(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    follow: FollowOption = False,
    tail: TailOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each line as one JSON object (NDJSON).")
    ] = False,
) -> None:
    """Print the logs of the experiment's first trial (see `trial logs` for the others)."""
    c = client(ctx)
    trials = c.list_trials(experiment_id)
    if not trials:
        raise CliError(f"experiment {experiment_id} has no trials yet")
    print_logs(c, trials[0].id, follow=follow, tail=tail, as_json=as_json)


@app.command()
def config(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the expanded config (defaults merged in) as JSON.")
    ] = False,
) -> None:
    """Print the config as submitted (YAML), secret values masked."""
    exp = client(ctx).get_experiment(experiment_id)
    if as_json:
        print_masked_json(dict(exp.config))
        return
    text = mask_yaml_text(exp.original_config or "")
    typer.echo(text, nl=not text.endswith("\n"))


@app.command()
def wait(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Give up after this many seconds.", show_default=False)
    ] = None,
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between checks.")] = 2.0,
    as_json: JsonOption = False,
) -> None:
    """Wait until the experiment ends: exit 0 if COMPLETED, 1 if CANCELED or ERROR, 3 on timeout."""
    try:
        exp = client(ctx).wait_for_experiment(experiment_id, timeout=timeout, poll=poll)
    except WaitTimeout as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(EXIT_WAIT_TIMEOUT) from None
    _summary(exp, as_json, f"Experiment {exp.id} ended {exp.state}")
    if exp.state != ExperimentState.COMPLETED:
        raise typer.Exit(EXIT_ERROR)


_VERBS = {
    "pause": ("pause_experiment", "Pause; running trials checkpoint and stop."),
    "activate": ("activate_experiment", "Resume a paused experiment."),
    "cancel": ("cancel_experiment", "Stop gracefully: trials checkpoint, then it ends CANCELED."),
    "kill": ("kill_experiment", "Stop at once without checkpointing."),
    "archive": (
        "archive_experiment",
        "Mark a finished experiment archived (list --no-archived leaves it out).",
    ),
    "unarchive": ("unarchive_experiment", "Undo archive."),
}


def _lifecycle_command(method: str, doc: str) -> Callable[..., None]:
    def command(ctx: typer.Context, experiment_id: ExperimentId, as_json: JsonOption = False) -> None:
        exp: Experiment = getattr(client(ctx), method)(experiment_id)
        archived = " (archived)" if exp.archived else ""
        _summary(exp, as_json, f"Experiment {exp.id} is {exp.state}{archived}")

    command.__doc__ = doc
    return command


for _verb, (_method, _doc) in _VERBS.items():
    app.command(_verb)(_lifecycle_command(_method, _doc))
app.command("unpause", hidden=True)(_lifecycle_command(*_VERBS["activate"]))  # det's alias


@app.command()
def delete(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a finished experiment with its trials, metrics and checkpoints."""
    if not yes:
        typer.confirm(f"Delete experiment {experiment_id} and all its data?", abort=True)
    exp = client(ctx).delete_experiment(experiment_id)
    _summary(exp, as_json, f"Experiment {exp.id} is {exp.state}")


@app.command()
def move(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    project_id: Annotated[int, typer.Argument(min=1, help="Destination project id.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Move the experiment into another project (you need the editor role there)."""
    exp = client(ctx).move_experiment(experiment_id, project_id)
    _summary(exp, as_json, f"Experiment {exp.id} moved to project {exp.project_id}")


@label_app.command("add")
def label_add(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    label: Annotated[str, typer.Argument(show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Add LABEL to the experiment."""
    exp = client(ctx).add_experiment_label(experiment_id, label)
    _summary(exp, as_json, f"Experiment {exp.id} labels: {', '.join(exp.labels) or '(none)'}")


@label_app.command("remove")
def label_remove(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    label: Annotated[str, typer.Argument(show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Remove LABEL from the experiment."""
    exp = client(ctx).remove_experiment_label(experiment_id, label)
    _summary(exp, as_json, f"Experiment {exp.id} labels: {', '.join(exp.labels) or '(none)'}")


@set_app.command("name")
def set_name(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    name: Annotated[str, typer.Argument(show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Rename the experiment."""
    exp = client(ctx).patch_experiment(experiment_id, name=name)
    _summary(exp, as_json, f"Experiment {exp.id} is now named {exp.name!r}")


@set_app.command("description")
def set_description(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    text: Annotated[str, typer.Argument(show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Replace the experiment's description."""
    exp = client(ctx).patch_experiment(experiment_id, description=text)
    _summary(exp, as_json, f"Experiment {exp.id} description updated")


@set_app.command("gc-policy")
def set_gc_policy(
    ctx: typer.Context,
    experiment_id: ExperimentId,
    save_experiment_best: Annotated[
        int | None, typer.Option(min=0, help="Keep the experiment's N best checkpoints.", show_default=False)
    ] = None,
    save_trial_best: Annotated[
        int | None, typer.Option(min=0, help="Keep each trial's N best checkpoints.", show_default=False)
    ] = None,
    save_trial_latest: Annotated[
        int | None, typer.Option(min=0, help="Keep each trial's N latest checkpoints.", show_default=False)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Change which checkpoints GC keeps (the rest are deleted at once, also after the experiment ended)."""
    if save_experiment_best is None and save_trial_best is None and save_trial_latest is None:
        raise CliError("give at least one of --save-experiment-best, --save-trial-best, --save-trial-latest")
    exp = client(ctx).set_gc_policy(
        experiment_id,
        save_experiment_best=save_experiment_best,
        save_trial_best=save_trial_best,
        save_trial_latest=save_trial_latest,
    )
    storage = exp.config.get("checkpoint_storage") or {}
    policy = ", ".join(
        f"{key}={storage.get(key)}"
        for key in ("save_experiment_best", "save_trial_best", "save_trial_latest")
    )
    _summary(exp, as_json, f"Experiment {exp.id} GC policy: {policy}")
