"""The built-in MLP and the training steps every torch model shares: plain PyTorch, no Ray and no MLflow.

Models here (the built-in :class:`FraudMLP` or a user's ``nn.Module``) map the preprocessed float32 feature
matrix to raw outputs, by task: binary - one logit per row; multiclass - one logit per class; regression - one
value per row. Losses, predictions and the exported (TorchScript) network follow the task.

The built-in MLP standardises its inputs with the training set's mean and standard deviation (stored as
buffers), so the served network takes the preprocessing's output as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

ARCHITECTURE_PARAMS = ("hidden_units", "num_layers", "dropout")
#: Hyperparameters of the training loop (optimiser, batches, loss), whatever the model.
LOOP_PARAMS = ("lr", "weight_decay", "batch_size", "pos_weight")
DEFAULTS: dict[str, Any] = {
    "hidden_units": 64, "num_layers": 2, "dropout": 0.1,
    "lr": 1e-3, "weight_decay": 1e-5, "batch_size": 512, "pos_weight": 10.0,
}


class FraudMLP(nn.Module):
    """Feed-forward network: standardise, ``num_layers`` x (Linear, ReLU, Dropout), Linear to ``n_outputs``.

    With one output (binary logit, regression value) it returns one number per row, else a row of ``n_outputs``.
    """

    def __init__(self, n_features: int, hidden_units: int, num_layers: int, dropout: float,
                 mean: np.ndarray | None = None, std: np.ndarray | None = None, n_outputs: int = 1):
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
        layers.append(nn.Linear(width, int(n_outputs)))
        self.net = nn.Sequential(*layers)
        self.single = int(n_outputs) == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs: logits (classification) or values (regression)."""
        out = self.net((x - self.mean) / self.std)
        return out.squeeze(-1) if self.single else out


#: The built-in network under a name that says what it is; FraudMLP stays for existing callers.
TabularMLP = FraudMLP


class FraudScorer(nn.Module):
    """A binary network's fraud probability, one per row (sigmoid of its logit)."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(x))


class Rescaled(nn.Module):
    """A regression network trained on a standardised target, answering in the target's own units."""

    def __init__(self, network: nn.Module, mean: float, std: float):
        super().__init__()
        self.network = network
        self.mean, self.std = float(mean), float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.network(x)
        if out.dim() == 2 and out.shape[1] == 1:
            out = out[:, 0]
        return out * self.std + self.mean


def n_outputs(task: str, classes) -> int:
    """Outputs a network needs for ``task``: one logit per class for multiclass, else one."""
    return len(classes) if task == "multiclass" else 1


def build(n_features: int, params: dict[str, Any], mean=None, std=None, n_outputs: int = 1) -> FraudMLP:
    """A :class:`FraudMLP` from hyperparameters (missing ones take :data:`DEFAULTS`)."""
    p = {**DEFAULTS, **params}
    return FraudMLP(n_features, p["hidden_units"], p["num_layers"], p["dropout"], mean, std, n_outputs)


def loss_function(params: dict[str, Any], device: torch.device, task: str = "binary") -> nn.Module:
    """The task's loss on raw outputs: binary cross-entropy weighting the rare class by ``pos_weight``;
    cross-entropy over classes; mean squared error (of the standardised target) for regression."""
    if task == "multiclass":
        return nn.CrossEntropyLoss()
    if task == "regression":
        return nn.MSELoss()
    weight = float({**DEFAULTS, **params}["pos_weight"])
    return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight, device=device))


def optimiser(model: nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW with the trial's learning rate and weight decay."""
    p = {**DEFAULTS, **params}
    return torch.optim.AdamW(model.parameters(), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]))


def set_hyperparameters(optimiser: torch.optim.Optimizer, params: dict[str, Any]) -> None:
    """Give a restored optimiser this trial's learning rate and weight decay (PBT perturbs them; the moments stay)."""
    p = {**DEFAULTS, **params}
    for group in optimiser.param_groups:
        group["lr"], group["weight_decay"] = float(p["lr"]), float(p["weight_decay"])


def _squeezed(out: torch.Tensor) -> torch.Tensor:
    # A user's network may answer one output per row as a column; losses and metrics want a vector.
    return out[:, 0] if out.dim() == 2 and out.shape[1] == 1 else out


def train_epoch(model: nn.Module, loader, optimiser: torch.optim.Optimizer, loss_fn: nn.Module,
                device: torch.device) -> float:
    """One pass over ``loader`` through the (possibly DDP-wrapped) model; returns the mean training loss."""
    model.train()
    total, rows = 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(_squeezed(model(x)), y)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(x)
        rows += len(x)
    return total / max(rows, 1)


@torch.no_grad()
def predict(model: nn.Module, features: np.ndarray, device: torch.device, batch_size: int = 8192,
            task: str = "binary") -> np.ndarray:
    """The model's prediction for a feature matrix, in batches: the positive class's probability (binary),
    ``(n, k)`` class probabilities (multiclass) or the raw values (regression)."""
    core = getattr(model, "module", model)
    core.eval()
    out = []
    for start in range(0, len(features), batch_size):
        # A copy: the features may be a read-only view, which torch.as_tensor warns about.
        x = torch.tensor(features[start:start + batch_size], dtype=torch.float32, device=device)
        raw = _squeezed(core(x)).float()
        if task == "binary":
            raw = torch.sigmoid(raw)
        elif task == "multiclass":
            raw = torch.softmax(raw, dim=1)
        out.append(raw.cpu().numpy())
    return np.concatenate(out) if out else np.empty(0, dtype="float32")


def tensors(features: np.ndarray, labels: np.ndarray, task: str = "binary") -> torch.utils.data.TensorDataset:
    """A ``TensorDataset`` of float32 features and the labels the task's loss takes (class codes for multiclass)."""
    # Arrays from Ray's object store are read-only; torch wants memory it may write.
    label_type = torch.int64 if task == "multiclass" else torch.float32
    return torch.utils.data.TensorDataset(
        torch.tensor(np.asarray(features), dtype=torch.float32),
        torch.tensor(np.asarray(labels), dtype=label_type),
    )


def export(model: nn.Module, example: np.ndarray) -> torch.jit.ScriptModule:
    """The network as TorchScript, for serving without its Python class: scripted, or traced on ``example``
    when its code cannot be scripted (a user's model may use Python TorchScript does not know)."""
    import warnings

    core = getattr(model, "module", model)
    was_training = core.training
    core.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript is deprecated, still the portable format
            try:
                return torch.jit.script(core)
            except Exception:  # noqa: BLE001 - any scripting failure: tracing is the fallback
                with torch.no_grad():
                    return torch.jit.trace(core, torch.as_tensor(np.asarray(example), dtype=torch.float32))
    finally:
        core.train(was_training)
