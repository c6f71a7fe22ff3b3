"""A user's torch network that keeps a journal of what it trains, for tests/test_faults.py (no raysweep import).

Each line of the journal (a JSON file the test names in ``trainer.model.journal``) is one event in a worker:
``{"event": "start"|"epoch"|"end", "pid": ..., "weights": checksum}`` - ``start`` when a network begins training
(the weights it begins from), ``epoch`` at the start of every epoch it trains, ``end`` when an epoch's
validation begins (the weights that epoch ended with, which its checkpoint holds). With ``fail_after=k`` the
first network to start an epoch after training ``k`` raises instead, once (a marker file says it did); with
``pause=s`` every epoch takes ``s`` seconds more (a trial long enough to be caught mid-way).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from torch import nn


class JournalNet(nn.Module):
    """One hidden layer of ``width``; ``n_features``/``n_outputs`` come from raysweep."""

    def __init__(self, n_features: int, n_outputs: int, journal: str, fail_after: int = 0, width: int = 8,
                 pause: float = 0.0):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(n_features, int(width)), nn.ReLU(), nn.Linear(int(width), n_outputs))
        self.journal, self.fail_after, self.pause = str(journal), int(fail_after), float(pause)
        self.phase = ""  # the mode of the last call: "train" or "eval"
        self.trained = 0  # epochs this network trained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.phase != "train":
            if not self.phase:
                self._note("start")
            if self.fail_after and self.trained >= self.fail_after and not Path(self.journal + ".failed").exists():
                Path(self.journal + ".failed").touch()
                raise RuntimeError(f"injected failure after {self.trained} epochs")
            self.trained += 1
            self._note("epoch")
            time.sleep(self.pause)
        elif not self.training and self.phase == "train":
            self._note("end")
        self.phase = "train" if self.training else "eval"
        return self.layers(x)

    def _note(self, event: str) -> None:
        weights = float(sum(p.detach().double().sum() for p in self.parameters()))
        with open(self.journal, "a") as out:
            out.write(json.dumps({"event": event, "pid": os.getpid(), "weights": weights}) + "\n")


def read(journal: Path) -> list[dict]:
    """The journal's events, in order."""
    return [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
