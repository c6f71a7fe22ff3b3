"""The fraud MLP and its training steps: plain PyTorch, no Ray and no MLflow, so it runs anywhere torch does.

The model standardises its inputs with the training set's mean and standard deviation (stored as buffers),
so a served model takes raw feature columns. :class:`FraudMLP` returns logits (what the loss and DDP need);
:class:`FraudScorer` wraps it for serving and returns fraud probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

ARCHITECTURE_PARAMS = ("hidden_units", "num_layers", "dropout")
DEFAULTS: dict[str, Any] = {
    "hidden_units": 64, "num_layers": 2, "dropout": 0.1,
    "lr": 1e-3, "weight_decay": 1e-5, "batch_size": 512, "pos_weight": 10.0,
}


class FraudMLP(nn.Module):
    """Feed-forward classifier: standardise, ``num_layers`` x (Linear, ReLU, Dropout), Linear to one logit."""

    def __init__(self, n_features: int, hidden_units: int, num_layers: int, dropout: float,
                 mean: np.ndarray | None = None, std: np.ndarray | None = None):
        super().__init__()
        mean = np.zeros(n_features) if mean is None else mean
        std = np.ones(n_features) if std is None else std
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.where(std > 0, std, 1.0), dtype=torch.float32))
        layers: list[nn.Module] = []
        width = n_features
        for _ in range(int(num_layers)):
            layers += [nn.Linear(width, int(hidden_units)), nn.ReLU(), nn.Dropout(float(dropout))]
            width = int(hidden_units)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, one per row."""
        return self.net((x - self.mean) / self.std).squeeze(-1)


class FraudScorer(nn.Module):
    """The served model: fraud probability, one per row, from raw feature columns."""

    def __init__(self, mlp: FraudMLP):
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(x))


def build(n_features: int, params: dict[str, Any], mean=None, std=None) -> FraudMLP:
    """A :class:`FraudMLP` from hyperparameters (missing ones take :data:`DEFAULTS`)."""
    p = {**DEFAULTS, **params}
    return FraudMLP(n_features, p["hidden_units"], p["num_layers"], p["dropout"], mean, std)


def loss_function(params: dict[str, Any], device: torch.device) -> nn.Module:
    """Binary cross-entropy on logits, weighting the rare fraud class by ``pos_weight``."""
    weight = float({**DEFAULTS, **params}["pos_weight"])
    return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight, device=device))


def optimiser(model: nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW with the trial's learning rate and weight decay."""
    p = {**DEFAULTS, **params}
    return torch.optim.AdamW(model.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))


def train_epoch(model: nn.Module, loader, optimiser: torch.optim.Optimizer, loss_fn: nn.Module,
                device: torch.device) -> float:
    """One pass over ``loader`` through the (possibly DDP-wrapped) model; returns the mean training loss."""
    model.train()
    total, rows = 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(x)
        rows += len(x)
    return total / max(rows, 1)


@torch.no_grad()
def predict(model: nn.Module, features: np.ndarray, device: torch.device, batch_size: int = 8192) -> np.ndarray:
    """Fraud probabilities for a feature matrix, in batches."""
    core = getattr(model, "module", model)
    core.eval()
    out = []
    for start in range(0, len(features), batch_size):
        x = torch.as_tensor(features[start:start + batch_size], dtype=torch.float32, device=device)
        out.append(torch.sigmoid(core(x)).float().cpu().numpy())
    return np.concatenate(out) if out else np.empty(0, dtype="float32")


def tensors(features: np.ndarray, labels: np.ndarray) -> torch.utils.data.TensorDataset:
    """A float32 ``TensorDataset`` of features and labels."""
    # Arrays from Ray's object store are read-only; torch wants memory it may write.
    return torch.utils.data.TensorDataset(
        torch.tensor(np.asarray(features), dtype=torch.float32),
        torch.tensor(np.asarray(labels), dtype=torch.float32),
    )
