"""A small MLP on scikit-learn's bundled 8x8 digits, written against the Stalwart Core API.

Runs the same on a cluster (started by the trial runner) and off-cluster
(``python train.py``: metrics and checkpoints go to ./stalwart-local/). It restores from the
trial's latest checkpoint, reports training and validation metrics, checkpoints every few epochs
and, when the master asks it to stop, checkpoints and exits 0 so the trial resumes later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn

import stalwart.core

logger = logging.getLogger("digits")

DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.1,
    "hidden": 64,
    "batch_size": 32,
    "epochs": 15,  # the training length is the script's decision, not the searcher's
    "report_every": 10,  # batches between training-metric reports
    "checkpoint_every": 5,  # epochs between checkpoints
}


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def load_data() -> Data:
    digits = load_digits()  # shipped inside scikit-learn: nothing to download
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    # A fixed split, independent of the trial seed, so every trial is judged on the same images.
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    val, train = order[:360], order[360:]
    return Data(x[train], y[train], x[val], y[val])


def build_model(hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10)
    )


@torch.no_grad()
def evaluate(model: nn.Module, data: Data) -> dict[str, float]:
    model.eval()
    logits = model(data.x_val)
    model.train()
    return {
        "validation_loss": nn.functional.cross_entropy(logits, data.y_val).item(),
        "validation_accuracy": (logits.argmax(dim=1) == data.y_val).float().mean().item(),
    }


class Trainer:
    def __init__(self, core_context: stalwart.core.Context, hparams: dict[str, Any]) -> None:
        self.core = core_context
        self.hp = hparams
        torch.manual_seed(core_context.info.trial_seed)
        self.data = load_data()
        self.model = build_model(int(hparams["hidden"]))
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=float(hparams["learning_rate"]), momentum=0.9
        )
        self.shuffle = torch.Generator().manual_seed(core_context.info.trial_seed)
        self.batches_per_epoch = -(-len(self.data.x_train) // int(hparams["batch_size"]))
        self.steps = 0  # batches trained so far, across restarts
        self.epoch = 0
        self.order = torch.randperm(len(self.data.x_train), generator=self.shuffle)

    # --- checkpoints ----------------------------------------------------------------------------

    def save(self) -> str:
        with self.core.checkpoint.store_path({"steps_completed": self.steps, "epoch": self.epoch}) as (
            path,
            uuid,
        ):
            torch.save(
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "steps": self.steps,
                    "epoch": self.epoch,
                    "order": self.order,
                    "shuffle_rng": self.shuffle.get_state(),
                    "torch_rng": torch.get_rng_state(),
                },
                Path(path) / "state.pt",
            )
        return uuid

    def restore(self, uuid: str) -> None:
        with self.core.checkpoint.restore_path(uuid) as path:
            state = torch.load(Path(path) / "state.pt", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps, self.epoch, self.order = state["steps"], state["epoch"], state["order"]
        self.shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        logger.info("restored checkpoint %s at step %d (epoch %d)", uuid, self.steps, self.epoch)

    # --- training -------------------------------------------------------------------------------

    def fit(self) -> dict[str, float] | None:
        """Train to the configured epochs; return the final validation metrics, or None if preempted."""
        train = self.core.train
        batch_size, epochs = int(self.hp["batch_size"]), int(self.hp["epochs"])
        total_steps = epochs * self.batches_per_epoch
        loss_sum, loss_count = 0.0, 0
        metrics: dict[str, float] | None = None
        while self.epoch < epochs:
            # Resume mid-epoch after a preemption: the position is derived from the step count.
            for batch in range(self.steps - self.epoch * self.batches_per_epoch, self.batches_per_epoch):
                idx = self.order[batch * batch_size : (batch + 1) * batch_size]
                loss = nn.functional.cross_entropy(self.model(self.data.x_train[idx]), self.data.y_train[idx])
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                self.steps += 1
                loss_sum += loss.item()
                loss_count += 1
                if self.steps % int(self.hp["report_every"]) == 0:
                    train.report_training_metrics(
                        steps_completed=self.steps, metrics={"loss": loss_sum / loss_count}
                    )
                    train.report_progress(self.steps / total_steps)
                    loss_sum, loss_count = 0.0, 0
                if self.core.preempt.should_preempt():
                    uuid = self.save()
                    logger.info(
                        "preempted at step %d; saved checkpoint %s, exiting to be resumed", self.steps, uuid
                    )
                    return None
            self.epoch += 1
            self.order = torch.randperm(len(self.data.x_train), generator=self.shuffle)
            metrics = evaluate(self.model, self.data)
            train.report_validation_metrics(steps_completed=self.steps, metrics=metrics)
            if self.epoch % int(self.hp["checkpoint_every"]) == 0 or self.epoch == epochs:
                self.save()
        return metrics if metrics is not None else evaluate(self.model, self.data)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # a model this small runs fastest on one thread
    with stalwart.core.init() as core_context:
        hparams = {**DEFAULTS, **core_context.info.hparams}
        trainer = Trainer(core_context, hparams)
        if core_context.info.latest_checkpoint:
            trainer.restore(core_context.info.latest_checkpoint)
        metrics = trainer.fit()
        if metrics is not None:
            core_context.train.report_progress(1.0)
            logger.info("final validation accuracy: %.4f", metrics["validation_accuracy"])


if __name__ == "__main__":
    main()
