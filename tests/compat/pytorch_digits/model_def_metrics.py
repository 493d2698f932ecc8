"""Stage 2: the same training, reporting train_loss every few batches and test_loss per epoch."""

import argparse
import logging

import torch
import torch.nn.functional as F  # noqa: N812
from digits import DEFAULT_HPARAMS, Net, evaluate, loaders

import stalwart as det


def main(core_context: det.core.Context, args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    train_loader, test_loader = loaders(args.batch_size)
    model = Net(DEFAULT_HPARAMS)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            if (batch_idx + 1) % args.log_interval == 0:
                core_context.train.report_training_metrics(
                    steps_completed=batch_idx + 1 + epoch * len(train_loader),
                    metrics={"train_loss": loss.item()},
                )
        test_loss, accuracy = evaluate(model, test_loader)
        core_context.train.report_validation_metrics(
            steps_completed=(epoch + 1) * len(train_loader),
            metrics={"test_loss": test_loss, "accuracy": accuracy},
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="PyTorch digits")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-interval", type=int, default=5)
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    with det.core.init() as core_context:
        main(core_context, parser.parse_args())
