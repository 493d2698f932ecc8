"""Stage 4: a hyperparameter search: the model is built from ``info.trial.hparams`` and trains
for as many epochs as the searcher's operation says, reporting its metric when done."""

import argparse
import logging
import pathlib

import torch
import torch.nn.functional as F  # noqa: N812
from digits import Net, evaluate, loaders

import stalwart as det


def load_state(directory: pathlib.Path, trial_id: int, model: Net) -> int:
    model.load_state_dict(torch.load(directory / "checkpoint.pt"))
    epochs_completed, saved_by = (int(v) for v in (directory / "state").read_text().split(","))
    return epochs_completed if saved_by == trial_id else 0


def main(core_context: det.core.Context, args: argparse.Namespace) -> None:
    info = det.get_cluster_info()
    assert info is not None, "this example only runs on-cluster"
    hparams = info.trial.hparams
    torch.manual_seed(info.trial.trial_seed)
    train_loader, test_loader = loaders(hparams["global_batch_size"])
    model = Net(hparams)
    epoch_idx = 0
    if info.latest_checkpoint is not None:
        with core_context.checkpoint.restore_path(info.latest_checkpoint) as path:
            epoch_idx = load_state(path, info.trial.trial_id, model)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=hparams["learning_rate"])
    test_loss = float("nan")
    for op in core_context.searcher.operations():
        while epoch_idx < op.length:
            model.train()
            for data, target in train_loader:
                optimizer.zero_grad()
                F.nll_loss(model(data), target).backward()
                optimizer.step()
            epoch_idx += 1
            steps_completed = epoch_idx * len(train_loader)
            test_loss, _ = evaluate(model, test_loader)
            core_context.train.report_validation_metrics(
                steps_completed=steps_completed, metrics={"test_loss": test_loss, "epochs": epoch_idx}
            )
            op.report_progress(epoch_idx)
            with core_context.checkpoint.store_path({"steps_completed": steps_completed}) as (path, _id):
                torch.save(model.state_dict(), path / "checkpoint.pt")
                (path / "state").write_text(f"{epoch_idx},{info.trial.trial_id}")
            if core_context.preempt.should_preempt():
                return
        op.report_completed(test_loss)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    with det.core.init() as core_context:
        main(core_context, argparse.ArgumentParser(description="PyTorch digits").parse_args())
