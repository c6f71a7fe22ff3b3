"""What a finished sweep leaves in MLflow, checked knowing only the public contract (README, docs/analysis.md).

Kept in the repository so that every test that relies on it runs it: a check that depends on a file outside
the checkout would silently stop checking where that file is missing.
"""

from __future__ import annotations

from mlflow import MlflowClient

PARENT_TAG = "mlflow.parentRunId"


def assert_sweep_contract(client: MlflowClient, experiment: str, model: str, *, min_children: int = 2,
                          metric: str = "val_auc", mode: str = "max") -> str:
    """Assert the contract of one finished sweep in ``experiment`` registered as ``model``; returns a summary.

    One parent run, every other run its child, all FINISHED, child names distinct, every child with ``metric``;
    the parent names a best child (its id in a tag or param); ``model@champion`` is a best child's model and
    ``model@challenger`` exists.
    """
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id], max_results=5000)
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    assert len(parents) == 1, f"expected 1 parent run, found {len(parents)} top-level runs"
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert len(runs) == 1 + len(children), "runs that are neither the parent nor its children"
    assert len(children) >= min_children, f"only {len(children)} children"
    assert {r.info.status for r in runs} == {"FINISHED"}, sorted(r.info.status for r in runs)
    names = [r.info.run_name for r in children]
    assert len(set(names)) == len(names), f"duplicate child run names: {names}"
    values = {r.info.run_id: r.data.metrics.get(metric) for r in children}
    assert None not in values.values(), f"children without metric {metric}"
    best = (max if mode == "max" else min)(values.values())
    tied = {run_id for run_id, value in values.items() if value == best}
    recorded = [*parent.data.tags.values(), *parent.data.params.values()]
    assert any(run_id in str(v) for run_id in tied for v in recorded), "the parent run does not name the best child"
    champion = client.get_model_version_by_alias(model, "champion")
    assert champion.run_id in tied, f"{model}@champion v{champion.version} is not from a best child"
    challenger = client.get_model_version_by_alias(model, "challenger")
    return (f"parent={parent.info.run_id[:8]} children={len(children)} best_{metric}={best:.4f} "
            f"champion=v{champion.version} challenger=v{challenger.version}")
