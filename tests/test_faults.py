"""Trial and node faults: torch trials continue from their last checkpoint (retry, PBT's exploit, Ctrl-C and
``resume=true``), and a worker node lost mid-sweep costs its trials a rerun on the surviving node, never the sweep.

The torch trials train a user network (tests/user_code/fault_models.py) that keeps a journal of the weights it
starts each attempt from and ends each epoch with, and can fail once after a given epoch: what a trial continued
from is read there, not guessed from metrics.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raysweep.config import CONF_DIR
from raysweep.errors import RaySweepError
from raysweep.runtime import free_port
from raysweep.tracking.tags import NODE_TAG, PARENT_ROLE, ROLE_TAG, TRIAL_ID_TAG, TRIAL_ROLE

ROOT = CONF_DIR.parent
sys.path.insert(0, str(ROOT / "scripts"))
from local_cluster import HEAD_IP, WORKER_IP, kill_node, two_node_cluster  # noqa: E402
from team_server import http_ok, process, wait_for  # noqa: E402

USER_CODE = Path(__file__).parent / "user_code"
#: One-worker torch trials of a tiny network on little data, nothing registered: what a fault does, quickly.
TORCH = ["+sweep=fraud_torch", "data.n_samples=2000", "trainer.num_workers=1", "trainer.cpus_per_worker=0.5",
         "cluster.verbose=0", "sweep.register=false", "~search_space", "+trainer.model._target_=fault_models.JournalNet"]


@pytest.fixture(autouse=True)
def user_code(monkeypatch):
    """The user's network is importable, as from their working directory."""
    monkeypatch.syspath_prepend(str(USER_CODE))
    yield
    sys.modules.pop("fault_models", None)


def _children(client: MlflowClient, outcome) -> list:
    runs = client.search_runs([outcome.summary.experiment_id], f"tags.mlflow.parentRunId = '{outcome.summary.parent_run_id}'")
    assert all(r.data.tags.get(ROLE_TAG) == TRIAL_ROLE for r in runs)
    return runs


def _steps(client: MlflowClient, run, metric: str = "val_auc") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, metric))


# --- without Ray ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, searched, fixed", [
    ([], ["hidden_units", "num_layers", "dropout", "lr"], {"hidden_units", "num_layers"}),
    (["+trainer.model._target_=fault_models.JournalNet", "+trainer.model.journal=j"], ["width", "lr", "batch_size"],
     {"width"}),
    (["trainer.train_loop=torch_models:train_loop"], ["lr", "width"], set()),
])
def test_pbt_keeps_what_shapes_a_torch_network_as_cloned(make_cfg, model, searched, fixed):
    from raysweep import search_space, strategy, trainables

    sys.path.insert(0, str(USER_CODE))
    cfg = make_cfg("+sweep=fraud_torch", "scheduler=pbt", *model)
    trainer = trainables.load(cfg.trainer.name)
    assert trainer.RESTORES_CHECKPOINTS
    assert trainer.fixed_under_pbt(cfg.trainer, searched) == fixed
    parsed = {name: search_space.parse_dimension(name, "choice(1, 2)") for name in searched}
    built = strategy.scheduler(cfg.scheduler, parsed, 4, fixed=fixed)
    assert set(built._hyperparam_mutations) == set(searched) - fixed


def test_pbt_with_only_the_network_shape_searched_is_refused_in_one_line(make_cfg):
    from raysweep import sweep

    cfg = make_cfg("+sweep=fraud_torch", "scheduler=pbt", "~search_space", "+search_space.hidden_units='choice(8, 16)'")
    with pytest.raises(RaySweepError, match="hidden_units shape the model, which PBT keeps as cloned"):
        sweep.run(cfg)


def test_a_torch_checkpoint_holds_what_a_trial_continues_from(tmp_path):
    import numpy as np
    import pandas as pd
    import ray.tune
    import torch

    from raysweep.data import Dataset
    from raysweep.trainables import _mlp, _torch_loop

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    y = (X["a"] > 0).astype(int).to_numpy()
    data = _torch_loop.prepare(Dataset(X[:30], y[:30], X[30:], y[30:], task="binary", classes=(0, 1)))
    network = _mlp.build(data.n_features, {})
    optimiser = _mlp.optimiser(network, {"lr": 0.01})
    _mlp.train_epoch(network, [(torch.tensor(data.X_train), torch.tensor(data.y_train, dtype=torch.float32))],
                     optimiser, _mlp.loss_function({}, torch.device("cpu")), torch.device("cpu"))
    _torch_loop.save(network, data, tmp_path, state={"optimizer": optimiser.state_dict(), "epoch": 3,
                                                     "train_seconds": 1.5})
    state = _torch_loop.load_state(ray.tune.Checkpoint.from_directory(tmp_path))
    assert (state["epoch"], state["train_seconds"]) == (3, 1.5)
    again = _mlp.build(data.n_features, {})
    again.load_state_dict(state["model"])
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), again.state_dict().values()))
    restored = _mlp.optimiser(again, {"lr": 0.5, "weight_decay": 0.1})
    restored.load_state_dict(state["optimizer"])
    _mlp.set_hyperparameters(restored, {"lr": 0.5, "weight_decay": 0.1})  # PBT's new values, Adam's moments kept
    assert restored.param_groups[0]["lr"] == 0.5 and restored.state_dict()["state"]
    assert _torch_loop.load_state(None) is None


# --- with Ray ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_pbt_runs_torch_trials_on_from_their_checkpoints(ray_address, make_cfg, tmp_path):
    from fault_models import read

    from raysweep import sweep

    journal = tmp_path / "journal.jsonl"
    said: list[str] = []  # PBT's own account of its decisions, for a failure's message
    pbt_log, handler = logging.getLogger("ray.tune.schedulers.pbt"), logging.Handler(logging.INFO)
    handler.emit = lambda record: said.append(record.getMessage())
    level = pbt_log.level
    pbt_log.addHandler(handler)
    pbt_log.setLevel(logging.INFO)
    # Two trials at once; synchronous PBT pauses each at epoch 2 until both are there, then the lower one of two
    # (quantile_fraction=0.5) always exploits the upper one: both go on from the upper one's epoch-2 checkpoint.
    try:
        outcome = sweep.run(make_cfg(
            *TORCH, f"+trainer.model.journal={journal}", "trainer.iterations=3", "search_alg=grid",
            "+search_space.lr='choice(0.00001, 0.05)'", "scheduler=pbt", "scheduler.params.perturbation_interval=2",
            "+scheduler.params.synch=true", "scheduler.params.quantile_fraction=0.5",
            "scheduler.params.resample_probability=0",
        ))
    finally:
        pbt_log.removeHandler(handler)
        pbt_log.setLevel(level)
    events = read(journal)
    starts = [e for e in events if e["event"] == "start"]
    fresh = starts[0]["weights"]  # every fresh start is the same seeded initialisation
    continued = [s for s in starts if s["weights"] != fresh]
    ended = {e["weights"] for e in events if e["event"] == "end"}  # what each epoch's checkpoint holds
    # Both trials start again after the pause, from a checkpoint ...
    assert len(continued) >= 2 and all(s["weights"] in ended for s in continued), (said, events)
    # ... the same one, in two workers: the lower trial took the other's network (the network, not the lr, tells:
    # the explore step may shift the copied lr of a two-value choice back to the lower trial's own).
    clones = [s for s in continued if sum(c["weights"] == s["weights"] for c in continued) >= 2]
    assert len({s["pid"] for s in clones}) >= 2, f"no trial continued the other's network: {said} {events}"
    client = MlflowClient()
    children = _children(client, outcome)
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    for child in children:
        assert _steps(client, child) == [1, 2, 3], "an exploit restarted the epochs, or repeated them"


@pytest.mark.slow
def test_an_interrupted_torch_sweep_resumes_its_trial_from_its_last_checkpoint(ray_address, cli_env, make_cfg,
                                                                              tmp_path, tracking_uri):
    from fault_models import read
    from mlflow.entities import ViewType

    from raysweep import sweep
    from raysweep.tracking.tags import ENDED_BY_TAG

    # The user's network in the working directory: the session's Ray puts it on the path of this job's workers.
    shutil.copy(USER_CODE / "fault_models.py", tmp_path)
    journal = tmp_path / "journal.jsonl"
    env = {**cli_env, "RAY_ADDRESS": ray_address}
    # One trial of 4 epochs of ~0.5 s, logged from the driver (Ctrl-C ends its runs KILLED there): interrupted
    # after its second epoch, with epochs left for the resumed trial.
    args = [*TORCH, "mlflow=driver", f"+trainer.model.journal={journal}", "+trainer.model.pause=0.5",
            "trainer.iterations=4", "sweep.num_samples=1", "+search_space.lr=0.01", "sweep.run_name=torch-resumable",
            f"cluster.storage_path={tmp_path / 'ray'}"]
    log = tmp_path / "sweep.log"
    with open(log, "w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "raysweep", *args], env=env, cwd=tmp_path, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        # Two epochs Tune has recorded (its progress.csv), so the trial has a checkpoint to resume from.
        _wait(lambda: any(len(p.read_text().splitlines()) >= 3 for p in (tmp_path / "ray").glob("*/*/progress.csv")),
              "trial two epochs in", driver, log, poll=0.1)
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    before = read(journal)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("fraud-detection").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(ROLE_TAG) == PARENT_ROLE]
    (child,) = [r for r in runs if r.data.tags.get(ROLE_TAG) == TRIAL_ROLE]
    assert parent.info.status == child.info.status == "KILLED" and len(_steps(client, child)) >= 2

    # resume=true as the command line does it, here in the test's process (which saves a second start-up).
    outcome = sweep.run(make_cfg(*args, "resume=true"), overrides=[*args, "resume=true"])
    # The trial's first start after the resume is from the weights an epoch from the second on ended with.
    fresh = next(e["weights"] for e in before if e["event"] == "start")
    ended = [e["weights"] for e in before if e["event"] == "end"]
    restart = next((e["weights"] for e in read(journal)[len(before):] if e["event"] == "start"), None)
    assert restart != fresh and restart in ended[1:], (restart, before)
    # ... in the same runs, each epoch logged once.
    assert outcome.summary.parent_run_id == parent.info.run_id
    runs = client.search_runs([parent.info.experiment_id])
    assert {r.info.run_id for r in runs} == {parent.info.run_id, child.info.run_id}
    resumed = client.get_run(parent.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["raysweep.resumed"] == "1"
    assert client.get_run(child.info.run_id).info.status == "FINISHED"
    assert _steps(client, child) == _steps(client, child, "train_time_s") == [1, 2, 3, 4]
    deleted = client.search_runs([parent.info.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert all(d.data.tags.get(ENDED_BY_TAG, "").startswith("superseded") for d in deleted)


@contextmanager
def tracking_server(folder: Path):
    """``mlflow server`` over a sqlite file on loopback: a store the trials on both nodes reach."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--serve-artifacts", "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
               "--port", url.rsplit(":", 1)[1], "--workers", "1"]
    with process(command, folder / "server.log", env=env):
        wait_for(lambda: http_ok(f"{url}/health"), "mlflow server", 90, folder / "server.log")
        yield url


def _actor_nodes(cluster) -> dict[str, set[str]]:
    """Class name -> IPs of the nodes its live actors run on, as Ray's state API reports them."""
    script = ("import json, ray.util.state as s, sys\n"
              "ips = {n.node_id: n.node_ip for n in s.list_nodes(address=sys.argv[1])}\n"
              "print(json.dumps([[a.class_name, ips.get(a.node_id)] for a in s.list_actors(\n"
              "    address=sys.argv[1], filters=[('state', '=', 'ALIVE')], limit=1000)]))\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **cluster.env}
    out = subprocess.run([sys.executable, "-c", script, cluster.dashboard_url], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    placed: dict[str, set[str]] = {}
    for name, ip in json.loads(out.stdout):
        placed.setdefault(name, set()).add(ip)
    return placed


def _wait(check, what: str, driver: subprocess.Popen, log: Path, timeout: float = 120, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert driver.poll() is None, f"the sweep ended before {what}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s: {log.read_text()[-3000:]}"
        time.sleep(poll)
    return found


@pytest.mark.slow
def test_a_worker_node_killed_mid_sweep_reruns_its_trial_on_the_other_node(tmp_path, monkeypatch):
    from fault_models import read

    # The head notices a lost node after a few missed health checks, not the default 5 x 3 s.
    monkeypatch.setenv("RAY_health_check_period_ms", "1000")
    monkeypatch.setenv("RAY_health_check_failure_threshold", "3")
    (tmp_path / "cluster").mkdir()
    journal = tmp_path / "journal.jsonl"
    with ExitStack() as running, ThreadPoolExecutor(2) as pool:
        server = pool.submit(running.enter_context, tracking_server(tmp_path / "server"))
        nodes = pool.submit(running.enter_context, two_node_cluster(sys.executable, tmp_path / "cluster"))
        url, cluster = server.result(), nodes.result()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
        env.update(cluster.env, MLFLOW_TRACKING_URI=url, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join([str(USER_CODE), os.environ.get("PYTHONPATH", "")]))
        # Two one-worker trials of one CPU on two nodes of one CPU: one on each node, 6 epochs of ~1 s.
        command = [sys.executable, "-m", "raysweep", *TORCH, f"+trainer.model.journal={journal}",
                   "+trainer.model.pause=1", "trainer.iterations=6", "trainer.cpus_per_worker=1", "search_alg=grid",
                   "+search_space.lr='choice(0.01, 0.02)'", "sweep.max_failures=2", "cluster=remote",
                   f"cluster.address={cluster.gcs_address}", f"cluster.storage_path={tmp_path / 'results'}"]
        log = tmp_path / "sweep.log"
        client = MlflowClient(url)
        with open(log, "w") as out:
            driver = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            def two_epochs_on_the_worker_node():
                experiment = client.get_experiment_by_name("fraud-detection")
                runs = client.search_runs([experiment.experiment_id], f"tags.`{NODE_TAG}` = '{WORKER_IP}'") \
                    if experiment else []
                # Two epochs Tune has recorded (its progress.csv), so their checkpoints are the trial's.
                return next((r for r in runs for progress in (tmp_path / "results").glob(
                    f"*/run_trial_{r.data.tags[TRIAL_ID_TAG]}_*/progress.csv")
                    if len(progress.read_text().splitlines()) >= 3), None)

            doomed = _wait(two_epochs_on_the_worker_node, "trial two epochs in on the worker node", driver, log, 240)
            # The trials' functions and Train controllers stay on the driver's node (the head here): one lost with
            # the worker node would keep its workers' CPUs on the head reserved until the sweep ends.
            placed = _actor_nodes(cluster)
            assert placed["TrainController"] == placed["_Mailbox"] == {HEAD_IP}, placed
            assert placed["RayTrainWorker"] == {HEAD_IP, WORKER_IP}, placed
            assert kill_node(cluster), "no process of the worker node found"
            try:
                code = driver.wait(timeout=240)
            except subprocess.TimeoutExpired:
                code = "still running after 240 s"
            assert code == 0, log.read_text()[-3000:]
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        runs = client.search_runs([client.get_experiment_by_name("fraud-detection").experiment_id], max_results=100)
        (parent,) = [r for r in runs if r.data.tags.get(ROLE_TAG) == PARENT_ROLE]
        children = [r for r in runs if r.data.tags.get(ROLE_TAG) == TRIAL_ROLE]
        assert parent.info.status == "FINISHED"
        # No duplicate: the lost trial went on in its own run, on the head, to its last epoch, each step once.
        assert len(children) == 2 and len({c.data.tags[TRIAL_ID_TAG] for c in children}) == 2
        assert {c.info.status for c in children} == {"FINISHED"}
        rerun = client.get_run(doomed.info.run_id)
        assert rerun.data.tags[NODE_TAG] == HEAD_IP
        assert _steps(client, rerun) == [1, 2, 3, 4, 5, 6]
    # ... from its last checkpoint, not from the first epoch (so may the other trial, had its Tune process or Train
    # controller been on the lost node too).
    events = read(journal)
    starts = [e["weights"] for e in events if e["event"] == "start"]
    ends = {e["weights"] for e in events if e["event"] == "end"}
    fresh = starts[0]  # both trials start from the same seeded initialisation
    assert any(w != fresh and w in ends for w in starts[2:]), f"no trial continued from its checkpoint: {events}"
    assert all(w == fresh or w in ends for w in starts), events
