"""What the four stages share: scikit-learn's bundled 8x8 digits (no download) and a small CNN
configured by the trial's hyperparameters, as the MNIST tutorial's ``Net(hparams)``."""

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

DEFAULT_HPARAMS = {"learning_rate": 0.5, "n_filters1": 8, "n_filters2": 16, "dropout1": 0.25, "dropout2": 0.5}


class Net(nn.Module):
    def __init__(self, hparams: dict[str, Any]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, hparams["n_filters1"], 3, 1)
        self.conv2 = nn.Conv2d(hparams["n_filters1"], hparams["n_filters2"], 3, 1)
        self.dropout1 = nn.Dropout(hparams["dropout1"])
        self.dropout2 = nn.Dropout(hparams["dropout2"])
        self.fc1 = nn.Linear(4 * hparams["n_filters2"], 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))  # 8x8 -> 6x6 -> 4x4
        x = self.dropout1(torch.flatten(F.max_pool2d(x, 2), 1))  # -> 2x2
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def loaders(batch_size: int) -> tuple[DataLoader[Any], DataLoader[Any]]:
    torch.set_num_threads(1)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    test, train = order[:360], order[360:]
    return (
        DataLoader(TensorDataset(x[train], y[train]), batch_size=batch_size, shuffle=True),
        DataLoader(TensorDataset(x[test], y[test]), batch_size=360),
    )


def evaluate(model: nn.Module, test_loader: DataLoader[Any]) -> tuple[float, float]:
    """Average test loss and accuracy."""
    model.eval()
    loss = correct = 0.0
    with torch.no_grad():
        for data, target in test_loader:
            output = model(data)
            loss += F.nll_loss(output, target, reduction="sum").item()
            correct += (output.argmax(dim=1) == target).sum().item()
    count = len(test_loader.dataset)  # type: ignore[arg-type]
    return loss / count, correct / count
