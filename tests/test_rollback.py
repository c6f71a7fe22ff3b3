"""``@champion``'s history on a real sqlite registry (no sweep): promote, then roll back step by step."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from raysweep import registry
from raysweep.errors import RaySweepError

NAME = "history"


@pytest.fixture
def client(tracking_uri, tmp_path) -> MlflowClient:
    """A model of four versions (any source will do: rollback moves aliases, it loads nothing)."""
    client = MlflowClient()
    client.create_registered_model(NAME)
    for _ in range(4):
        client.create_model_version(NAME, source=str(tmp_path))
    return client


def test_each_rollback_goes_one_step_further_back(client):
    for version in ("1", "2", "3"):
        registry.promote(client, NAME, version, by="alice", reason="better")
    steps = []
    for _ in range(2):
        registry.rollback(client, NAME, by="bob", reason="misbehaves")
        steps.append(registry.champion_version(client, NAME))
    assert steps == ["2", "1"]  # not back to v3, which the first rollback took out
    with pytest.raises(RaySweepError, match="records no previous champion"):
        registry.rollback(client, NAME, by="bob")
    assert registry.champion_version(client, NAME) == "1"
    restored = client.get_model_version(NAME, "1")
    assert restored.tags["raysweep.promoted_by"] == "bob"
    assert "@champion v2 -> v1" in restored.description


def test_a_promotion_after_a_rollback_is_the_next_rollbacks_target(client):
    for version in ("1", "2"):
        registry.promote(client, NAME, version, by="alice", reason="better")
    registry.rollback(client, NAME, by="bob")
    registry.promote(client, NAME, "4", by="carol", reason="retrained")
    registry.rollback(client, NAME, by="bob")
    assert registry.champion_version(client, NAME) == "1"
