"""Stage 1 of the PyTorch tutorial: the plain training script, only wrapped in ``det.core.init()``."""

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
        for data, target in train_loader:
            optimizer.zero_grad()
            F.nll_loss(model(data), target).backward()
            optimizer.step()
        test_loss, accuracy = evaluate(model, test_loader)
        logging.info("epoch %d: test loss %.4f, accuracy %.3f", epoch, test_loss, accuracy)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="PyTorch digits")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    logging.basicConfig(level=logging.INFO, format=det.LOG_FORMAT)
    with det.core.init() as core_context:
        main(core_context, parser.parse_args())
