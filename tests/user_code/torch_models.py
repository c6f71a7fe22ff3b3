"""A user's own torch network and Ray Train loop, for tests/test_torch_user_model.py (no raysweep import)."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """One hidden layer; ``n_features``/``n_outputs`` come from raysweep, ``width`` from the search space."""

    def __init__(self, n_features: int, n_outputs: int, width: int = 8, activation: nn.Module | None = None):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(n_features, int(width)), activation or nn.ReLU(),
                                    nn.Linear(int(width), n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (n, n_outputs): a column for one output; raysweep takes either shape


def train_loop(config):
    """A plain Ray Train train_loop_per_worker: raysweep's data and model, its own loss, epochs and metrics."""
    import ray.train
    import ray.train.torch

    rs = config["raysweep"]
    data = rs.data
    model = ray.train.torch.prepare_model(rs.build_model())
    optimiser = torch.optim.Adam(model.parameters(), lr=config["lr"])
    X = torch.as_tensor(data.X_train)
    y = torch.as_tensor(data.y_train, dtype=torch.float32)
    X_val = torch.as_tensor(data.X_val)
    y_val = torch.as_tensor(data.y_val, dtype=torch.float32)
    scale = float(y.std())
    for _ in range(config["epochs"]):
        model.train()
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(model(X)[:, 0] / scale, y / scale)
        loss.backward()
        optimiser.step()
        model.eval()
        with torch.no_grad():
            val_mae = float((model(X_val)[:, 0] - y_val).abs().mean())
        ray.train.report({"val_mae": val_mae, "train_mse": float(loss)}, checkpoint=rs.checkpoint(model))
