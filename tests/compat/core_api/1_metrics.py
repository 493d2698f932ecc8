"""Stage 1: report training and validation metrics through ``det.core.init()``."""

import logging
import time

import stalwart as det


def main(core_context: det.core.Context, increment_by: int) -> None:
    x = 0
    steps_completed = 0
    for batch in range(30):
        x += increment_by
        steps_completed = batch + 1
        time.sleep(0.01)
        if steps_completed % 10 == 0:
            core_context.train.report_training_metrics(steps_completed=steps_completed, metrics={"x": x})
            core_context.train.report_progress(steps_completed / 30)
    core_context.train.report_validation_metrics(steps_completed=steps_completed, metrics={"x": x})


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    info = det.get_cluster_info()
    increment_by = info.trial.hparams["increment_by"] if info else 1
    with det.core.init() as core_context:
        main(core_context=core_context, increment_by=increment_by)
