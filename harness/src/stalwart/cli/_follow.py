"""``experiment create --follow``: progress lines until the experiment ends, with its first trial's logs.

Progress (experiment and trial states, steps, best validation metric) goes to stderr whenever it
changes; the first trial's log lines go to stdout from a background thread, so
``... --follow > train.log`` keeps the logs apart from the progress.
"""

from __future__ import annotations

import threading
import time

import typer

from stalwart.cli.trial import fmt_log, fmt_metric, searcher_metric
from stalwart.client import Client, Experiment, StalwartError, Trial

# How long the final log lines may take to arrive once the experiment has ended.
_LOG_DRAIN_SECONDS = 5.0


class _LogFollower(threading.Thread):
    """Streams one trial's logs, reconnecting while the trial waits for slots or restarts."""

    def __init__(self, client: Client, trial_id: int, poll: float) -> None:
        super().__init__(name=f"logs-trial-{trial_id}", daemon=True)
        self.client = client
        self.trial_id = trial_id
        self.poll = poll
        self.stop = threading.Event()

    def run(self) -> None:
        last_id = 0
        while not self.stop.is_set():
            try:
                # The stream also ends while the experiment is paused; each pass re-reads from
                # the start (the API has no "after"), so lines already printed are skipped by id.
                for line in self.client.iter_trial_logs(self.trial_id, follow=True):
                    if line.id > last_id:
                        last_id = line.id
                        typer.echo(fmt_log(line))
                if self.client.get_trial(self.trial_id).terminal:
                    return
            except StalwartError:
                pass  # the main loop reports a lost master; logs are best effort
            self.stop.wait(self.poll)


def _progress(trial: Trial, metric: str) -> str:
    parts = [f"Trial {trial.id} {trial.state}", f"{trial.steps_completed} steps"]
    if trial.best_validation is not None:
        parts.append(f"best {metric} {fmt_metric(trial.best_validation)}")
    if trial.restarts:
        parts.append(f"{trial.restarts} restarts")
    if trial.end_reason:
        parts.append(trial.end_reason)
    return ", ".join(parts)


def follow_experiment(client: Client, exp: Experiment, *, poll: float, logs: bool) -> Experiment:
    """Poll until ``exp`` is terminal, printing what changed; returns its final state."""
    metric = searcher_metric(exp.config)
    seen: dict[int, str] = {}
    last_state = ""
    follower: _LogFollower | None = None
    try:
        while True:
            exp = client.get_experiment(exp.id)
            trials = client.list_trials(exp.id)
            if exp.state != last_state:
                typer.echo(f"Experiment {exp.id} {exp.state}", err=True)
                last_state = exp.state
            for trial in trials:
                line = _progress(trial, metric)
                if seen.get(trial.id) != line:
                    typer.echo(line, err=True)
                    seen[trial.id] = line
            if logs and follower is None and trials:
                # Its own connection: httpx clients are not meant to stream in two threads at once.
                follower = _LogFollower(Client(client.master, token=client.token), trials[0].id, poll)
                follower.start()
            if exp.terminal:
                break
            time.sleep(poll)
    except KeyboardInterrupt:
        typer.echo(
            f"\nStopped following; experiment {exp.id} goes on (`stalwart experiment wait {exp.id}`).",
            err=True,
        )
        raise
    finally:
        if follower is not None:
            follower.stop.set()
    if follower is not None:
        follower.join(_LOG_DRAIN_SECONDS)
        follower.client.close()
    return exp
