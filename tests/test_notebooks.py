"""Post-sweep notebooks run unattended against a real sweep; the parent run carries the report."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from conftest import SMOKE, WEAK, sweep_into, use_store
from raysweep import registry

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture
def tracking_uri(module_store, monkeypatch):
    """Every test of this module reads the same two sweeps."""
    yield from use_store(module_store, monkeypatch)


@pytest.fixture(scope="module")
def sweeps(ray_address, module_store, tmp_path_factory):
    """A smoke sweep (v1, champion) and a weaker one (v2, challenger only)."""
    storage = tmp_path_factory.mktemp("ray")
    first = sweep_into(module_store, storage, "+sweep=fraud", *SMOKE)
    second = sweep_into(module_store, storage, "+sweep=fraud", *SMOKE, *WEAK)
    return first, second


def _run_notebook(name: str, tmp_path: Path, **parameters) -> dict:
    import papermill

    out = tmp_path / name
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=parameters, kernel_name="python3",
                               cwd=str(tmp_path), progress_bar=False)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_parent_run_carries_plots_and_summary(sweeps, module_store):
    client = MlflowClient(module_store)
    for outcome in sweeps:
        names = {Path(a.path).name for a in client.list_artifacts(outcome.summary.parent_run_id, "report")}
        assert names == {"parallel_coordinates.png", "metric_vs_params.png", "learning_curves.png",
                         "best_so_far.png", "summary.md"}
    text = mlflow.artifacts.load_text(f"runs:/{sweeps[0].summary.parent_run_id}/report/summary.md")
    assert sweeps[0].summary.best_run_name in text and "fraud-rf v1" in text


@pytest.mark.slow
def test_analysis_notebook_runs_and_draws_its_figures(sweeps, module_store, tmp_path):
    first, _ = sweeps
    nb = _run_notebook("sweep_analysis.ipynb", tmp_path, tracking_uri=module_store,
                       parent_run_id=first.summary.parent_run_id)
    outputs = [o for cell in nb["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 4
    text = json.dumps(outputs)
    assert first.summary.best_run_name in text
    assert "challenger" in text and "champion" in text


@pytest.mark.slow
def test_promotion_notebook_moves_champion_and_rolls_back(sweeps, module_store, tmp_path):
    client = MlflowClient(module_store)
    assert registry.champion_version(client, "fraud-rf") == "1"
    _run_notebook("promotion.ipynb", tmp_path, tracking_uri=module_store, action="promote", version="2", who="alice",
                  why="reviewed by the fraud team")
    assert registry.champion_version(client, "fraud-rf") == "2"
    tags = client.get_model_version("fraud-rf", "2").tags
    assert tags["raysweep.promoted_by"] == "alice"
    assert tags["raysweep.promotion_reason"] == "reviewed by the fraud team"
    assert tags["raysweep.previous_champion"] == "1"
    _run_notebook("promotion.ipynb", tmp_path, tracking_uri=module_store, action="rollback", who="bob", why="false positives")
    assert registry.champion_version(client, "fraud-rf") == "1"
    assert client.get_model_version("fraud-rf", "1").tags["raysweep.promoted_by"] == "bob"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), "no papermill parameters cell"
