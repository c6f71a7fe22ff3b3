"""Train the fraud MLP on CPU and, where present, CUDA; print seconds per epoch and validation metrics.

Runs the torch trainer's own training step (raysweep.trainables._mlp) without Ray or MLflow, so it also runs
on a GPU machine that has only torch, numpy, pandas and scikit-learn:

    python bench/torch_device.py [--epochs 5] [--rows 100000] [--require-cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from raysweep.data import generate_fraud, split  # noqa: E402
from raysweep.metrics import validation_metrics  # noqa: E402
from raysweep.trainables import _mlp  # noqa: E402

PARAMS = {"hidden_units": 128, "num_layers": 2, "dropout": 0.1, "lr": 3e-3, "batch_size": 1024, "pos_weight": 10}


def train(device: torch.device, dataset, epochs: int) -> tuple[float, dict[str, float]]:
    """Seconds per epoch (after the first, which warms up) and the final validation metrics."""
    torch.manual_seed(0)
    X_train = dataset.X_train.to_numpy(dtype="float32")
    X_val = dataset.X_val.to_numpy(dtype="float32")
    model = _mlp.build(X_train.shape[1], PARAMS, X_train.mean(axis=0), X_train.std(axis=0)).to(device)
    loader = torch.utils.data.DataLoader(
        _mlp.tensors(X_train, dataset.y_train), batch_size=PARAMS["batch_size"], shuffle=True
    )
    optimiser = _mlp.optimiser(model, PARAMS)
    loss_fn = _mlp.loss_function(PARAMS, device)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        _mlp.train_epoch(model, loader, optimiser, loss_fn, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    metrics = validation_metrics(dataset.y_val, _mlp.predict(model, X_val, device))
    steady = times[1:] or times
    return sum(steady) / len(steady), metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--require-cuda", action="store_true", help="fail when no CUDA device is visible")
    args = parser.parse_args()

    dataset = split(generate_fraud(args.rows, 0.015, 4, seed=0), "is_fraud", 0.25, seed=0)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.require_cuda:
        print("no CUDA device visible", file=sys.stderr)
        return 1

    print(f"torch {torch.__version__}, {args.rows} rows, {args.epochs} epochs, batch {PARAMS['batch_size']}")
    print(f"{'device':<28} {'s/epoch':>8} {'val_auc':>8} {'val_ap':>8}")
    ok = True
    for device in devices:
        seconds, metrics = train(device, dataset, args.epochs)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"{name:<28} {seconds:>8.3f} {metrics['val_auc']:>8.4f} {metrics['val_average_precision']:>8.4f}")
        ok &= metrics["val_auc"] > 0.8
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
