"""A trial whose output carries markup: the dashboard must show every line as text, never as HTML."""

import stalwart.core

with stalwart.core.init() as core:
    print("<script>alert(3)</script>", flush=True)
    print('<img src=x onerror="alert(4)">', flush=True)
    for step in range(1, 4):
        core.train.report_training_metrics(steps_completed=step, metrics={"loss": 1.0 / step})
    core.train.report_validation_metrics(steps_completed=3, metrics={"loss": 1.0 / 3})
