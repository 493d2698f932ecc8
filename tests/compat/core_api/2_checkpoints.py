"""Stage 2: checkpoint with store_path, resume from ``info.latest_checkpoint`` with restore_path,
and stop when the master asks (pause, a higher-priority trial)."""

import logging
import pathlib
import time

import stalwart as det


def save_state(x: int, steps_completed: int, trial_id: int, directory: pathlib.Path) -> None:
    directory.joinpath("state").write_text(f"{x},{steps_completed},{trial_id}")


def load_state(trial_id: int, directory: pathlib.Path) -> tuple[int, int]:
    x, steps_completed, saved_by = (int(v) for v in directory.joinpath("state").read_text().split(","))
    # A checkpoint of another trial (a continued experiment) gives the weight but not the batch.
    return (x, steps_completed) if saved_by == trial_id else (x, 0)


def main(
    core_context: det.core.Context, latest_checkpoint: str | None, trial_id: int, hparams: dict[str, float]
) -> None:
    x = 0
    start = 0
    max_length = int(hparams.get("batches", 60))
    if latest_checkpoint is not None:
        with core_context.checkpoint.restore_path(latest_checkpoint) as path:
            x, start = load_state(trial_id, path)
        logging.info("resumed from checkpoint %s at batch %d with x=%d", latest_checkpoint, start, x)
    steps_completed = start
    for batch in range(start, max_length):
        x += 1
        steps_completed = batch + 1
        time.sleep(float(hparams.get("sleep", 0.05)))
        if steps_completed % 10 == 0:
            core_context.train.report_training_metrics(steps_completed=steps_completed, metrics={"x": x})
            core_context.train.report_progress(steps_completed / max_length)
            with core_context.checkpoint.store_path({"steps_completed": steps_completed}) as (path, _uuid):
                save_state(x, steps_completed, trial_id, path)
            if core_context.preempt.should_preempt():
                return  # just checkpointed: exit, and resume here when reactivated
    core_context.train.report_validation_metrics(steps_completed=steps_completed, metrics={"x": x})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    info = det.get_cluster_info()
    assert info is not None, "this example only runs on-cluster"
    with det.core.init() as core_context:
        main(core_context, info.latest_checkpoint, info.trial.trial_id, info.trial.hparams)
