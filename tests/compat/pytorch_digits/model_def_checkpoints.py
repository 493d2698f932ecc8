"""Stage 3: checkpoint each epoch with store_path, resume from the trial's latest checkpoint,
and stop when the master asks."""

import argparse
import logging
import pathlib

import torch
import torch.nn.functional as F  # noqa: N812
from digits import DEFAULT_HPARAMS, Net, evaluate, loaders

import stalwart as det


def load_state(directory: pathlib.Path, trial_id: int, model: Net) -> int:
    model.load_state_dict(torch.load(directory / "checkpoint.pt"))
    epochs_completed, saved_by = (int(v) for v in (directory / "state").read_text().split(","))
    return epochs_completed if saved_by == trial_id else 0


def main(core_context: det.core.Context, args: argparse.Namespace) -> None:
    info = det.get_cluster_info()
    assert info is not None, "this example only runs on-cluster"
    torch.manual_seed(args.seed)
    train_loader, test_loader = loaders(args.batch_size)
    model = Net(DEFAULT_HPARAMS)
    epochs_completed = 0
    if info.latest_checkpoint is not None:
        with core_context.checkpoint.restore_path(info.latest_checkpoint) as path:
            epochs_completed = load_state(path, info.trial.trial_id, model)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=args.lr)
    for epoch in range(epochs_completed, args.epochs):
        model.train()
        for data, target in train_loader:
            optimizer.zero_grad()
            F.nll_loss(model(data), target).backward()
            optimizer.step()
        steps_completed = (epoch + 1) * len(train_loader)
        test_loss, _ = evaluate(model, test_loader)
        core_context.train.report_validation_metrics(
            steps_completed=steps_completed, metrics={"test_loss": test_loss}
        )
        with core_context.checkpoint.store_path({"steps_completed": steps_completed}) as (path, _uuid):
            torch.save(model.state_dict(), path / "checkpoint.pt")
            (path / "state").write_text(f"{epoch + 1},{info.trial.trial_id}")
        if core_context.preempt.should_preempt():
            return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="PyTorch digits")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    with det.core.init() as core_context:
        main(core_context, parser.parse_args())
