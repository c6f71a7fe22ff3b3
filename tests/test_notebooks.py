"""Post-sweep notebooks run unattended against a real sweep (the store from MLFLOW_TRACKING_URI, as a user's
environment has it) and against a store without one; the parent run carries the report."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from conftest import SMOKE, WEAK, sweep_into, use_store
from raysweep import registry, report

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


def _outputs(nb: dict) -> list[dict]:
    return [o for cell in nb["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])]


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
        # Importance needs two finished trials: the 4-trial sweep has it, the one-trial sweep does not.
        assert names == {"parallel_coordinates.png", "metric_vs_params.png", "learning_curves.png",
                         "best_so_far.png", "summary.md"} | ({"importance.png"} if outcome is sweeps[0] else set())
    text = mlflow.artifacts.load_text(f"runs:/{sweeps[0].summary.parent_run_id}/report/summary.md")
    assert sweeps[0].summary.best_run_name in text and "fraud-rf v1" in text


@pytest.mark.slow
def test_analysis_notebook_runs_and_draws_its_figures(sweeps, module_store, tmp_path):
    first, _ = sweeps
    # No tracking_uri parameter: the store is MLFLOW_TRACKING_URI (the tracking_uri fixture sets it).
    nb = _run_notebook("sweep_analysis.ipynb", tmp_path, parent_run_id=first.summary.parent_run_id)
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    # importance, metric per param, parallel coordinates, learning curves, best so far
    assert len(figures) >= 5
    text = json.dumps(outputs)
    assert first.summary.best_run_name in text
    assert "challenger" in text and "champion" in text
    # Hyperparameter importance as a table (the most important first) and the trials stopped early.
    top = report.importance(first.summary.trials, first.summary.metric, first.summary.mode)["param"][0]
    tables = ["".join(o["data"]["text/plain"]) for o in outputs if "text/plain" in o.get("data", {})]
    [importance] = [t for t in tables if t.splitlines()[0].split() == ["param", "importance"]]
    assert importance.splitlines()[1].split()[:2] == ["0", top]
    stopped = report.stopped_early(first.summary.trials)
    assert f"{len(stopped)} of {first.summary.n_trials} finished trials stopped early" in text


@pytest.mark.slow
def test_promotion_notebook_moves_champion_and_rolls_back(sweeps, module_store, tmp_path, monkeypatch):
    client = MlflowClient(module_store)
    assert registry.champion_version(client, "fraud-rf") == "1"
    # The store from MLFLOW_TRACKING_URI alone (the tracking_uri fixture sets it).
    _run_notebook("promotion.ipynb", tmp_path, action="promote", version="2", who="alice",
                  why="reviewed by the fraud team")
    assert registry.champion_version(client, "fraud-rf") == "2"
    tags = client.get_model_version("fraud-rf", "2").tags
    assert tags["raysweep.promoted_by"] == "alice"
    assert tags["raysweep.promotion_reason"] == "reviewed by the fraud team"
    assert tags["raysweep.previous_champion"] == "1"
    # A tracking_uri parameter wins over MLFLOW_TRACKING_URI (here a store without the model).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _empty_store(tmp_path))
    _run_notebook("promotion.ipynb", tmp_path, tracking_uri=module_store, action="rollback", who="bob",
                  why="false positives")
    assert registry.champion_version(client, "fraud-rf") == "1"
    assert client.get_model_version("fraud-rf", "1").tags["raysweep.promoted_by"] == "bob"


def _empty_store(folder: Path) -> str:
    """A sqlite store that exists and holds nothing (MLflow's tables made here, not in the notebook)."""
    uri = f"sqlite:///{folder / 'empty.db'}"
    MlflowClient(uri).search_experiments()
    return uri


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, store, line",
    [
        ("sweep_analysis.ipynb", "empty", "the MLflow store holds no sweep; run one with python -m raysweep "
                                          "+sweep=NAME or check MLFLOW_TRACKING_URI"),
        ("promotion.ipynb", "empty", "no registered model 'fraud-rf'; check the name and MLFLOW_TRACKING_URI / "
                                     "MLFLOW_REGISTRY_URI"),
        ("sweep_analysis.ipynb", "missing", "no MLflow store at {uri}; set MLFLOW_TRACKING_URI or run a sweep first"),
    ],
)
def test_notebooks_say_in_one_line_what_the_store_lacks(name, store, line, tmp_path, monkeypatch):
    uri = _empty_store(tmp_path) if store == "empty" else f"sqlite:///{tmp_path / 'missing.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    nb = _run_notebook(name, tmp_path)
    outputs = _outputs(nb)
    # One printed line and nothing else: no traceback, no warning, no table or figure of the cells after it.
    assert [o["output_type"] for o in outputs] == ["stream"] and outputs[0]["name"] == "stdout"
    text = outputs[0]["text"]
    assert ("".join(text) if isinstance(text, list) else text) == f"raysweep: {line.format(uri=uri)}\n"
    assert store == "empty" or not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), "no papermill parameters cell"
