"""Stage 3: a hyperparameter search. The searcher's operation says how long to train; the script
reports the searcher metric with ``op.report_completed`` and raises ``det.InvalidHP`` for
hyperparameters it cannot use."""

import logging
import pathlib
import time

import stalwart as det


def save_state(x: int, steps_completed: int, directory: pathlib.Path) -> None:
    directory.joinpath("state").write_text(f"{x},{steps_completed}")


def load_state(directory: pathlib.Path) -> tuple[int, int]:
    x, steps_completed = (int(v) for v in directory.joinpath("state").read_text().split(","))
    return x, steps_completed


def main(core_context: det.core.Context, latest_checkpoint: str | None, increment_by: int) -> None:
    x = 0
    batch = 0
    if latest_checkpoint is not None:
        with core_context.checkpoint.restore_path(latest_checkpoint) as path:
            x, batch = load_state(path)
    for op in core_context.searcher.operations():
        while batch < op.length:
            x += increment_by
            batch += 1
            time.sleep(0.02)
            if batch % 10 == 0:
                core_context.train.report_training_metrics(steps_completed=batch, metrics={"x": x})
                # The ASHA searchers read their time_metric ("batches") from validation reports.
                core_context.train.report_validation_metrics(
                    steps_completed=batch, metrics={"x": x, "batches": batch}
                )
                op.report_progress(batch)
                with core_context.checkpoint.store_path({"steps_completed": batch}) as (path, _uuid):
                    save_state(x, batch, path)
                if core_context.preempt.should_preempt():
                    return
        op.report_completed(x)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    info = det.get_cluster_info()
    assert info is not None, "this example only runs on-cluster"
    hparams = info.trial.hparams
    with det.core.init() as core_context:
        if hparams["increment_by"] > hparams.get("max_increment", hparams["increment_by"]):
            raise det.InvalidHP(f"increment_by {hparams['increment_by']} is too large")
        main(core_context, info.latest_checkpoint, increment_by=hparams["increment_by"])
