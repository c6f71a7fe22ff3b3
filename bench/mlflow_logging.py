"""raysweep's trial logging against MLflow's own: throughput, and what survives a killed driver and a server outage.

    uv run python bench/mlflow_logging.py [--smoke]      # = bench/overhead.py --only logging,safety (~3 min)

Writers (all through ``MlflowClient``): a ``log_metric`` loop; ``log_batch`` per step; MLflow async,
``log_batch(..., synchronous=False)`` per step (what ``MLFLOW_ENABLE_ASYNC_LOGGING=true`` makes of every
``log_batch``/``mlflow.log_metrics``), waited for at the end, also with ``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1``
(merges a run's queued batches); raysweep's :class:`raysweep.tracking.lifecycle.TrialRuns` (its ``MetricBuffer``
and outage clock), which both logging modes use. The safety table runs each writer in its own process against a
real ``mlflow server`` on loopback, logging 10 metrics per step every 0.1 s, and reads back from the server's
sqlite file what it stored: after a SIGKILL of the writer, and across a server outage (stopped, then started
again on the same port).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # the writers' stdout is their report
#: Seconds between two steps of a safety writer, and metrics per step.
PACE_S, METRICS = 0.1, 10
WRITERS = {"MLflow async": "async", "raysweep": "raysweep"}  # label -> writer_main's name
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from sqlite_server import SqliteServer as Server  # noqa: E402
from sqlite_server import sqlite_server as mlflow_server  # noqa: E402

#: MLflow's per-call HTTP retries: off (what raysweep's driver sets while trials run) and MLflow's default.
RETRIES = {"retries off": {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"},
           "MLflow default": {}}


def _experiment(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def logging_rates(uri: str, steps: int, metrics_per_step: int, buffered: bool = True) -> dict[str, tuple[float, int]]:
    """Writer -> (metrics/s until all are in the store, metrics missing from the store afterwards)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from raysweep.tracking.lifecycle import TrialRuns

    client = MlflowClient(uri)
    experiment = _experiment(client, "logging")
    names = [f"m{i}" for i in range(metrics_per_step)]
    total = steps * metrics_per_step
    out = {}

    def timed(label, write):
        run_id = client.create_run(experiment).info.run_id
        started = time.perf_counter()
        write(run_id)
        seconds = time.perf_counter() - started
        stored = sum(len(client.get_metric_history(run_id, name)) for name in names)
        client.set_terminated(run_id)
        out[label] = (total / seconds, total - stored)

    def loop(run_id):
        for step in range(steps):
            for name in names:
                client.log_metric(run_id, name, step * 0.1, step=step)

    def batch(run_id, synchronous=True):
        ops = []
        for step in range(steps):
            now = int(time.time() * 1000)
            ops.append(client.log_batch(run_id, metrics=[Metric(n, step * 0.1, now, step) for n in names],
                                        synchronous=synchronous))
        for op in ops:
            if op is not None:
                try:
                    op.wait()
                except Exception:  # noqa: BLE001 - counted as missing from the store
                    pass

    timed("log_metric loop", loop)
    timed("log_batch sync", batch)
    timed("MLflow async", lambda run_id: batch(run_id, synchronous=False))
    # MLflow's own batching of queued calls: its queue thread waits this long, then merges what is queued.
    os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = "1"
    try:
        if buffered:
            timed("async buffered", lambda run_id: batch(run_id, synchronous=False))
    finally:
        del os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"]

    # A trial's run through raysweep's lifecycle (what both logging modes use), under a stand-in parent.
    parent = client.create_run(experiment).info.run_id
    runs = TrialRuns(client, experiment, parent, metrics=names)

    def ours(_):
        runs.start("trial-0", "trial-0", {}, lookup=False)
        for step in range(1, steps + 1):
            runs.metrics("trial-0", {name: step * 0.1 for name in names}, step=step)
        runs.flush()

    started = time.perf_counter()
    ours(None)
    seconds = time.perf_counter() - started
    run_id = runs.run_id("trial-0")
    stored = sum(len(client.get_metric_history(run_id, name)) for name in names)
    runs.end("trial-0", "FINISHED")
    client.set_terminated(parent, "FINISHED")
    out["raysweep"] = (total / seconds, total - stored)
    return out


def table_logging(workdir: Path, steps: int, metrics_per_step: int, server: Server | None = None,
                  smoke: bool = False) -> None:
    """Table 2: metrics per second into one run, end to end, on sqlite and on a server (``smoke``: no buffered
    async column, whose 1 s waits are most of a toy run)."""
    print(f"\n2. metrics logged per second ({steps} steps x {metrics_per_step} metrics, one run, as fast as the "
          "writer takes them; until all are in the store)")
    print("   MLflow async: log_batch(synchronous=False) per step; async buffered: the same with "
          "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1 (merges queued batches)")
    writers = ("log_metric loop", "log_batch sync", "MLflow async", "async buffered", "raysweep")
    print(f"{'store':<14} " + " ".join(f"{w:>15}" for w in writers) + f" {'raysweep/async':>14}")
    with mlflow_server(workdir / "server", server) as server:
        for label, uri in (("sqlite", f"sqlite:///{workdir / 'logging.db'}"), ("mlflow server", server.url)):
            rates = logging_rates(uri, steps, metrics_per_step, buffered=not smoke)
            cells = [f"{rates[w][0]:,.0f}" + (f" ({rates[w][1]} lost)" if rates[w][1] else "") if w in rates
                     else "-" for w in writers]
            ratio = rates["raysweep"][0] / rates["MLflow async"][0]
            print(f"{label:<14} " + " ".join(f"{c:>15}" for c in cells) + f" {ratio:>13.1f}x", flush=True)


def writer_main(writer: str, uri: str, seconds: float, trial_dir: str) -> None:
    """One writer process: log METRICS metrics per step every PACE_S for ``seconds``, print each acknowledged step.

    Prints ``run ID``, then ``ack STEP`` once a step's call returned, then ``done {json}`` (calls that raised,
    the longest call, seconds from the last step to everything written).
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from raysweep.tracking import outage
    from raysweep.tracking.lifecycle import TrialRuns

    client = MlflowClient(uri)
    experiment = _experiment(client, "safety")
    names = [f"m{i}" for i in range(METRICS)]
    results = Path(trial_dir) / "result.json"  # as Tune's driver appends each result before callbacks log it
    if writer == "raysweep":
        parent = client.create_run(experiment).info.run_id
        runs = TrialRuns(client, experiment, parent, metrics=names, outage=outage.clock(uri, 300))
        runs.start("t0", "t0", {}, lookup=False)
        run_id = runs.run_id("t0")
    else:
        parent, runs = None, None
        run_id = client.create_run(experiment).info.run_id
    print(f"run {run_id} {parent}", flush=True)
    raised, longest, ops = 0, 0.0, []
    step, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        step += 1
        values = {n: step + i / 100 for i, n in enumerate(names)}
        with results.open("a") as out:
            out.write(json.dumps({"training_iteration": step, **values}) + "\n")
        began = time.monotonic()
        try:
            if runs is not None:
                runs.metrics("t0", values, step)
            else:
                now = int(time.time() * 1000)
                ops.append(client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()],
                                            synchronous=False))
        except Exception:  # noqa: BLE001 - counted
            raised += 1
        longest = max(longest, time.monotonic() - began)
        print(f"ack {step}", flush=True)
        time.sleep(max(0.0, started + step * PACE_S - time.monotonic()))
    ended = time.monotonic()
    if runs is not None:
        try:
            runs.end("t0", "FINISHED")
        except Exception:  # noqa: BLE001 - counted
            raised += 1
    else:
        for wait in [op.wait for op in ops] + [lambda: client.set_terminated(run_id)]:
            try:
                wait()
            except Exception:  # noqa: BLE001 - counted: MLflow logged a failed batch's error and dropped it
                raised += 1
    print("done " + json.dumps({"raised": raised, "longest_call_s": round(longest, 2),
                                "drain_s": round(time.monotonic() - ended, 2)}), flush=True)


def _spawn(writer: str, uri: str, seconds: float, trial_dir: Path, env_extra: dict, log: Path) -> subprocess.Popen:
    trial_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **env_extra, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, __file__, "--writer", writer, "--uri", uri, "--seconds", str(seconds),
                             "--trial-dir", str(trial_dir)], env=env, stdout=subprocess.PIPE,
                            stderr=log.open("ab"), text=True)


def _first(process: subprocess.Popen, log: Path) -> str:
    """The writer's first line (``run ...``: its run exists); raises with its log when it died before."""
    line = process.stdout.readline()
    if not line.startswith("run "):
        raise RuntimeError(f"a writer died before logging; its log:\n{log.read_text()[-3000:]}")
    return line


def _read(process: subprocess.Popen) -> dict:
    """The writer's printed state once it exited, after its first line: last acknowledged step, its summary."""
    state = {"run": None, "parent": None, "acked": 0, "done": None}
    for line in process.stdout:
        kind, _, rest = line.strip().partition(" ")
        if kind == "ack":
            state["acked"] = int(rest)
        elif kind == "done":
            state["done"] = json.loads(rest)
    process.wait()
    return state


def _stored(db: Path, run_id: str) -> tuple[list[int], bool]:
    """Steps of ``m0`` the store holds for ``run_id``, and whether they arrived in step order (sqlite rowid)."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute("select step from metrics where run_uuid = ? and key = 'm0' order by rowid",
                                  (run_id,)).fetchall()
    steps = [r[0] for r in rows]
    return steps, steps == sorted(steps)


def _row(label: str, writer: str, state: dict, db: Path, recover=None) -> None:
    """Prints what the store holds of the writer's run; then, with ``recover``, what it holds after it ran."""
    steps, ordered = _stored(db, state["run"]) if state["run"] else ([], True)
    recovered = str(recover()) if recover is not None else "-"
    acked = state["acked"]
    lost = len(set(range(1, acked + 1)) - set(steps))
    dupes = len(steps) - len(set(steps))
    done = state["done"] or {}
    print(f"{label:<30} {writer:<13} {acked:>6} {len(set(steps)):>7} {lost:>5} {dupes:>5} "
          f"{'yes' if ordered else 'NO':>8} {done.get('raised', '-'):>7} {done.get('longest_call_s', '-'):>8} "
          f"{recovered:>10}", flush=True)


def _recover(uri: str, state: dict, trial_dir: Path) -> int:
    """What raysweep's resume does for a trial the killed driver had: log the results Tune wrote, not stored."""
    from mlflow import MlflowClient

    from raysweep.tracking.lifecycle import TrialRuns

    client = MlflowClient(uri)
    names = [f"m{i}" for i in range(METRICS)]
    experiment = client.get_run(state["run"]).info.experiment_id
    runs = TrialRuns(client, experiment, state["parent"], metrics=names)
    runs.start("t0", "t0", {}, lookup=True, trial_dir=str(trial_dir))
    runs.end("t0", "FINISHED")
    return len(client.get_metric_history(state["run"], "m0"))


def start_kill_writers(workdir: Path, server: Server) -> dict:
    """The SIGKILL scenario's writers, started: they log until :func:`table_safety` kills them (start them early
    to overlap their start-up with other work)."""
    from mlflow import MlflowClient

    _experiment(MlflowClient(server.url), "safety")  # made once here: writers making it at once would race
    dirs = {writer: workdir / f"kill-{name}" for writer, name in WRITERS.items()}
    return {writer: (dirs[writer], _spawn(name, server.url, 3600, dirs[writer], RETRIES["MLflow default"],
                                          workdir / "writers.log")) for writer, name in WRITERS.items()}


def table_safety(workdir: Path, smoke: bool = False, server: Server | None = None, kill_writers=None) -> None:
    """Table 2b: what the store holds after a SIGKILL of the writer, and across a server outage."""
    kill_after, outage_s, before, after = (1.0, 0, 0, 0) if smoke else (5.5, 30.0, 10.0, 10.0)
    print(f"\n2b. what the store holds ({METRICS} metrics per step every {PACE_S:g} s, one writer process each, "
          "real mlflow server on loopback)")
    print(f"{'scenario':<30} {'writer':<13} {'acked':>6} {'stored':>7} {'lost':>5} {'dupes':>5} {'in order':>8} "
          f"{'raised':>7} {'longest':>8} {'on resume':>10}")
    print("   acked: steps whose logging call returned; lost: acked steps the store lacks; in order: arrival order "
          "(sqlite rowid) = step order;\n   raised: calls/futures that failed; longest: seconds the logging call "
          "blocked the trial at most; on resume: steps stored after raysweep's resume re-logged Tune's result file")
    log = workdir / "writers.log"
    with mlflow_server(workdir / "server", server) as server:
        # 1. SIGKILL mid-logging (both writers at once): what each had acknowledged against what the store got.
        started = kill_writers or start_kill_writers(workdir, server)
        firsts = {writer: _first(process, log) for writer, (_, process) in started.items()}  # runs exist
        time.sleep(kill_after)
        for writer, (trial_dir, process) in started.items():
            process.send_signal(signal.SIGKILL)
        for writer, (trial_dir, process) in started.items():
            state = _read(process)
            state["run"], state["parent"] = firsts[writer].split()[1:3]
            recover = (lambda s=state, d=trial_dir: _recover(server.url, s, d)) if writer == "raysweep" else None
            _row("SIGKILL mid-logging", writer, state, server.db, recover)
        if smoke:  # the outage's writers are the same code; its server restart costs the smoke test seconds
            return
        # 2. The server stops for outage_s mid-logging and comes back on the same port.
        processes = {}
        for retries, env in RETRIES.items():
            for writer, name in WRITERS.items():
                trial_dir = workdir / f"outage-{name}-{retries.replace(' ', '-')}"
                processes[(retries, writer)] = _spawn(name, server.url, before + outage_s + after, trial_dir, env, log)
        firsts = {key: _first(process, log) for key, process in processes.items()}  # all are logging
        time.sleep(before)
        server.stop()
        time.sleep(outage_s)
        server.start()
        for (retries, writer), process in processes.items():
            state = _read(process)
            if state["done"] is None:
                print(f"   ({writer}, {retries}: the writer died; its log:)\n" + log.read_text()[-1500:])
            state["run"], state["parent"] = firsts[(retries, writer)].split()[1:3]
            _row(f"{outage_s:g} s outage, {retries}", writer, state, server.db)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes")
    parser.add_argument("--only", default="logging,safety", help="logging, safety or both")
    for hidden in ("--writer", "--uri", "--trial-dir"):  # a safety writer process (see _spawn)
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        writer_main(args.writer, args.uri, args.seconds, args.trial_dir)
    else:  # the tables, as overhead.py prints them
        import overhead

        sys.argv = [sys.argv[0], "--only", args.only, *(["--smoke"] if args.smoke else [])]
        overhead.main()
