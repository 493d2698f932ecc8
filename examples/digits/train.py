"""A small MLP on scikit-learn's bundled 8x8 digits, trained with ``stalwart.pytorch.Trainer``.

Runs the same on a cluster (started by the trial runner) and off-cluster (``python train.py``:
metrics and checkpoints go to ./stalwart-local/). The Trainer restores the trial's latest
checkpoint, validates and checkpoints as the experiment config says (min_validation_period,
min_checkpoint_period, checkpoint_policy), and when the master asks the trial to stop it
checkpoints and returns, so the process exits 0 and the trial resumes later at the same batch.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import stalwart.core
import stalwart.pytorch

logger = logging.getLogger("digits")

DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.1,
    "hidden": 64,
    "batch_size": 32,
    "epochs": 15,  # the training length is the script's decision, not the searcher's
    "report_every": 10,  # batches between training-metric reports
}


def load_data() -> tuple[TensorDataset, TensorDataset]:
    digits = load_digits()  # shipped inside scikit-learn: nothing to download
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    # A fixed split, independent of the trial seed, so every trial is judged on the same images.
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    val, train = order[:360], order[360:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


def build_model(hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10)
    )


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"validation_accuracy": (outputs.argmax(dim=1) == targets).float().mean()}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # a model this small runs fastest on one thread
    with stalwart.core.init() as core_context:
        hp = {**DEFAULTS, **core_context.info.hparams}
        stalwart.pytorch.seed_all(core_context.info.trial_seed)  # the same initial weights on every run
        train_set, val_set = load_data()
        model = build_model(int(hp["hidden"]))
        trainer = stalwart.pytorch.Trainer(
            core_context,
            model,
            torch.optim.SGD(model.parameters(), lr=float(hp["learning_rate"]), momentum=0.9),
            DataLoader(train_set, batch_size=int(hp["batch_size"]), shuffle=True),
            val_data=DataLoader(val_set, batch_size=512),
            loss_fn=nn.functional.cross_entropy,
            metrics_fn=accuracy,
            report_period=int(hp["report_every"]),
            searcher_metric="validation_accuracy",
            smaller_is_better=False,
        )
        result = trainer.fit(max_length=stalwart.pytorch.Epoch(int(hp["epochs"])))
        if result.preempted:
            logger.info("stopped after %d batches to be resumed later", result.batches_trained)
        elif result.validation_metrics is not None:
            logger.info("final validation accuracy: %.4f", result.validation_metrics["validation_accuracy"])


if __name__ == "__main__":
    main()
