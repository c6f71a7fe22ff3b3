"""Post-sweep subcommands: ``raysweep analyse|promote|rollback|copy|ensemble|reproduce ...`` (argparse, no Hydra).

Wiring only: each parses its arguments, opens the store and calls one function of :mod:`raysweep.analysis`,
:mod:`raysweep.registry`, :mod:`raysweep.promotion`, :mod:`raysweep.ensemble` or :mod:`raysweep.reproduce`.
Each takes its own ``--help``. The store is ``MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db`` in the
working directory) and the registry ``MLFLOW_REGISTRY_URI`` (default: the tracking store). A problem a user can
fix prints one line ``raysweep: ...`` on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable

from raysweep.errors import RaySweepError

#: Exit status of ``reproduce`` when the retrained metrics differ from the recorded ones.
MISMATCH = 1


def _tracking_uri() -> str:
    from raysweep.remote import DEFAULT_TRACKING_URI

    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def _client(tracking_uri: str | None = None):
    """A client of the store (``tracking_uri``, default ``MLFLOW_TRACKING_URI``) and registry, also set globally.

    Raises:
        RaySweepError: A folder store or unknown scheme; a server that does not answer within
            ``RAYSWEEP_SERVER_TIMEOUT_S`` (default 10 s; MLflow's own retries would take minutes); a missing sqlite file.
    """
    from raysweep import checks, compat
    from raysweep.remote import check_server
    from raysweep.tracking.queries import open_store

    compat.quiet_mlflow()  # no INFO lines or download progress bars: a failing command's stderr stays one line
    tracking, registry = tracking_uri or _tracking_uri(), _env_registry_uri()
    checks.store_uri(tracking, "MLFLOW_TRACKING_URI")
    checks.store_uri(registry, "MLFLOW_REGISTRY_URI")
    check_server(tracking)
    if registry and registry != tracking:
        check_server(registry, variable="MLFLOW_REGISTRY_URI")
    # A missing sqlite store is refused: opening it would create an empty one, and a typo should leave no files.
    return open_store(tracking_uri)


def _env_registry_uri() -> str | None:
    return os.environ.get("MLFLOW_REGISTRY_URI") or None


def _run(parser: argparse.ArgumentParser, argv: list[str], action: Callable[[argparse.Namespace], int]) -> int:
    args = parser.parse_args(argv)
    try:
        return action(args)
    except RaySweepError as e:
        print(f"raysweep: {e}", file=sys.stderr, flush=True)
        return 2


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def analyse(argv: list[str]) -> int:
    """``raysweep analyse``: summarize a finished sweep, register its best model, store its report."""
    parser = argparse.ArgumentParser(
        prog="raysweep analyse",
        description="Read a sweep back from MLflow (the newest one, an experiment's latest, or --parent-run-id), "
                    "end its runs KILLED if its driver died, record the best trial on the parent run, register "
                    "its model (unless --no-register), store the report (plots, summary.md) on the parent run "
                    "and print the summary. `python -m raysweep.analysis` is the same command.",
    )
    parser.add_argument("--experiment", default=os.environ.get("MLFLOW_EXPERIMENT_NAME") or None,
                        help="experiment whose latest sweep to analyse (default: MLFLOW_EXPERIMENT_NAME, else the "
                             "experiment MLFLOW_EXPERIMENT_ID names, else the newest sweep of any experiment in the "
                             "store)")
    parser.add_argument("--parent-run-id", help="analyse this sweep (its parent run id) instead of the latest one")
    parser.add_argument("--tracking-uri", default=_tracking_uri(),
                        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or %(default)s)")
    parser.add_argument("--no-register", action="store_true", help="only record and print the best trial")
    parser.add_argument("--end-orphans", action="store_true",
                        help="also end KILLED a RUNNING sweep whose driver ran on another host and whose lease "
                             "expired (no heartbeat); a dead driver on this host is always ended, a live one never")

    def action(args) -> int:
        from raysweep import analysis, registry, report
        from raysweep.tracking.parent import driver_alive, end_orphans
        from raysweep.tracking.queries import env_experiment

        client = _client(args.tracking_uri)
        experiment = args.experiment or (None if args.parent_run_id else env_experiment(client, None))
        parent = analysis.find_sweep(client, experiment, args.parent_run_id)
        if end_orphans(client, parent, other_hosts=args.end_orphans):
            print(f"raysweep: sweep {parent.info.run_name!r} had lost its driver; its open runs are now "
                  f"{client.get_run(parent.info.run_id).info.status}", file=sys.stderr)
            parent = client.get_run(parent.info.run_id)
        elif parent.info.status == "RUNNING" and driver_alive(parent) is None:
            print(f"raysweep: sweep {parent.info.run_name!r} is RUNNING but its driver, on another host, has gone "
                  "silent; if it is gone, end its runs with --end-orphans", file=sys.stderr)
        summary = analysis.summarize(client, parent)
        analysis.record_best(client, summary)
        registration = None if args.no_register else registry.register_best(client, parent, summary)
        report.log_report(client, summary, registration)
        print(analysis.format_summary(summary, registration))
        return 0

    return _run(parser, argv, action)


def promote(argv: list[str]) -> int:
    """``raysweep promote NAME``: the validation gate between ``@challenger`` and ``@champion``."""
    parser = argparse.ArgumentParser(
        prog="raysweep promote",
        description="Score NAME@challenger and NAME@champion on the same held-out data (the test split of the "
                    "challenger's sweep, or of --data) and move @champion when the challenger is better by more than "
                    "--margin. The decision is recorded on the challenger as validation_* tags and in its "
                    "description. Exit 0 when promoted, 1 when the champion stays.",
    )
    parser.add_argument("name", help="registered model, e.g. fraud-rf")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="how much better the challenger must be, in the metric's units (default 0; equal never wins)")
    parser.add_argument("--force", action="store_true", help="promote even when the challenger is not better")
    parser.add_argument("--by", default=_who(), help="who decides (default: the login name)")
    parser.add_argument("--reason", default="", help="why, recorded with the decision")
    parser.add_argument("--data", metavar="FILE.yaml",
                        help="held-out data as a data config (keys of conf/data/fraud.yaml or conf/data/csv.yaml)")

    def action(args) -> int:
        from raysweep import checks, promotion

        checks.model_name(args.name, "NAME")
        data_cfg = _data_config(args.data) if args.data else None
        decision = promotion.gate(_client(), args.name, margin=args.margin, force=args.force, by=args.by,
                                  reason=args.reason, data_cfg=data_cfg)
        print(decision)
        return 0 if decision.promoted else 1

    return _run(parser, argv, action)


def _data_config(path: str):
    from omegaconf import OmegaConf

    from raysweep.config import DataConfig
    from raysweep.data import existing_file

    try:
        return OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(existing_file(path)))
    except Exception as e:  # noqa: BLE001 - OmegaConf's errors span lines; one is enough here
        if isinstance(e, RaySweepError):
            raise
        raise RaySweepError(f"--data {path}: {str(e).splitlines()[0]}") from None


def rollback(argv: list[str]) -> int:
    """``raysweep rollback NAME``: move ``@champion`` back to the version it replaced."""
    parser = argparse.ArgumentParser(prog="raysweep rollback",
                                     description="Move NAME@champion back to the version it replaced.")
    parser.add_argument("name", help="registered model, e.g. fraud-rf")
    parser.add_argument("--by", default=_who(), help="who rolls back (default: the login name)")
    parser.add_argument("--reason", default="", help="why, recorded on the restored version")

    def action(args) -> int:
        from raysweep import checks, registry

        checks.model_name(args.name, "NAME")
        client = _client()
        current = registry.champion_version(client, args.name)
        restored = registry.rollback(client, args.name, by=args.by, reason=args.reason)
        print(f"{args.name}: @champion v{current} -> v{restored} (rollback by {args.by})")
        return 0

    return _run(parser, argv, action)


def copy(argv: list[str]) -> int:
    """``raysweep copy SRC_URI DEST_NAME``: copy a registered version to another model or registry."""
    parser = argparse.ArgumentParser(
        prog="raysweep copy",
        description="Copy a registered version (models:/NAME@ALIAS or models:/NAME/VERSION) to a new version of "
                    "DEST_NAME, in this registry or, with --registry-uri, in another MLflow store (its files are "
                    "copied there). The copy records its source in raysweep.copied_from.",
    )
    parser.add_argument("src_uri", help="e.g. models:/fraud-rf-staging@candidate")
    parser.add_argument("dest_name", help="e.g. fraud-rf-prod")
    parser.add_argument("--registry-uri", help="the destination MLflow store (tracking and registry), "
                                               "e.g. sqlite:////srv/prod/mlflow.db; default: this registry")

    def action(args) -> int:
        from raysweep import checks

        checks.model_name(args.dest_name, "DEST_NAME")  # before any store is opened: a typo creates nothing
        from raysweep import promotion
        from raysweep.remote import absolute_tracking_uri, check_server, redact

        if args.registry_uri:
            checks.store_uri(args.registry_uri, "--registry-uri")
            check_server(args.registry_uri, variable="--registry-uri")
        client = _client()
        dst = absolute_tracking_uri(args.registry_uri) if args.registry_uri else None
        # The source registry as this command resolved it, recorded on a copy in another store.
        source = _env_registry_uri() or absolute_tracking_uri(_tracking_uri())
        copy = promotion.copy_version(client, args.src_uri, args.dest_name, dst, source_registry_uri=source)
        where = f" in {redact(args.registry_uri)}" if args.registry_uri else ""
        print(f"{args.src_uri} -> models:/{copy.name}/{copy.version}{where}")
        return 0

    return _run(parser, argv, action)


def ensemble(argv: list[str]) -> int:
    """``raysweep ensemble CONFIG`` or ``raysweep ensemble MODEL --member KEY=URI ...``: register an ensemble."""
    from raysweep.ensemble import available_specs

    parser = argparse.ArgumentParser(
        prog="raysweep ensemble",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Log and register an ensemble of registered models (the members' mean class probabilities,\n"
                    "or mean prediction; a threshold inference param for binary data) as a new version with\n"
                    "@challenger (and @champion when the model has none). Its registered model and members come\n"
                    "from a config, conf/ensemble/NAME.yaml (./conf first, then raysweep's), or from --member.",
        epilog=f"configs: {', '.join(available_specs()) or 'none'}\n"
               "examples:\n"
               "  raysweep ensemble fraud            # conf/ensemble/fraud.yaml\n"
               "  raysweep ensemble my-ensemble --member rf=models:/fraud-rf/3 --member hgb=models:/fraud-hgb@champion",
    )
    parser.add_argument("name", metavar="NAME",
                        help="an ensemble config (conf/ensemble/NAME.yaml, a .yaml path, or the registered model "
                             "a config builds); with --member, the registered model to add the ensemble to")
    parser.add_argument("--member", action="append", metavar="KEY=URI",
                        help="a member model KEY=models:/MODEL@ALIAS or models:/MODEL/VERSION, repeatable; "
                             "given, no config is read")

    def action(args) -> int:
        from raysweep import ensemble as ensemble_mod

        if args.member:
            if not all("=" in m for m in args.member):
                raise RaySweepError("--member takes KEY=models:/NAME@ALIAS")
            name, members = args.name, dict(m.split("=", 1) for m in args.member)
        else:
            spec = ensemble_mod.load_spec(args.name)
            name, members = spec.registered_model, spec.members
        print(f"registered  {ensemble_mod.build(_client(), name, members, by=_who())}")
        return 0

    return _run(parser, argv, action)


def reproduce(argv: list[str]) -> int:
    """``raysweep reproduce models:/NAME@ALIAS``: retrain the trial behind a version and compare metrics."""
    from raysweep.reproduce import TOLERANCE

    parser = argparse.ArgumentParser(
        prog="raysweep reproduce",
        description="Retrain the sweep trial behind a registered version from its recorded config, params, data "
                    "spec and seed, outside Ray Tune, and print recorded and reproduced metrics side by side. "
                    "Exit 0 when they match, 1 when they differ.",
    )
    parser.add_argument("uri", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest difference that matches "
                                                                           "(default: %(default)g)")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="config overrides the sweep ran with that name code (e.g. trainer.function=MODULE:FUNC): "
                             "the recorded config's code is used only when +sweep=NAME and these compose the same")

    def action(args) -> int:
        from raysweep.registry import parse_model_uri
        from raysweep.reproduce import reproduce as run

        parse_model_uri(args.uri)  # a malformed URI fails before the store is opened
        result = run(_client(), args.uri, tolerance=args.tolerance, overrides=args.overrides)
        print(result)
        return 0 if result.matches else MISMATCH

    return _run(parser, argv, action)


def stop(argv: list[str]) -> int:
    """``raysweep stop JOB_ID``: stop a submitted sweep, its driver ending every MLflow run first."""
    from raysweep.stopping import POLL_S, TIMEOUT_S

    parser = argparse.ArgumentParser(
        prog="raysweep stop",
        description="Stop a sweep submitted as a Ray job (raysweep submit, ray job submit). The job's driver is "
                    "asked through the tracking store (MLFLOW_TRACKING_URI) to stop as on SIGTERM: Tune stops its "
                    "trials and saves its state, every open MLflow run ends KILLED; this waits for that, then lets "
                    "Ray stop the job. `ray job stop` alone kills the driver 3 s after SIGTERM, which can leave "
                    "runs RUNNING. Exit 0 once the job is stopped and none of its runs is RUNNING.",
    )
    parser.add_argument("job_id", help="the job's submission id (printed by raysweep submit; `ray job list`)")
    parser.add_argument("--address", default=None,
                        help="Ray dashboard address, e.g. http://head:8265 (default: RAY_ADDRESS)")
    parser.add_argument("--tracking-uri", default=_tracking_uri(),
                        help="the sweep's MLflow tracking URI (default: MLFLOW_TRACKING_URI or %(default)s)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help="seconds the driver may take to stop before Ray stops it (default: %(default)g)")
    parser.add_argument("--poll", type=float, default=POLL_S, help=argparse.SUPPRESS)

    def action(args) -> int:
        from raysweep import stopping
        from raysweep.submit import _client as job_client

        stopped = stopping.stop(job_client(args.address), _client(args.tracking_uri), args.job_id,
                                timeout_s=args.timeout, poll_s=args.poll,
                                say=lambda line: print(f"raysweep: {line}", file=sys.stderr, flush=True))
        print(stopped)
        return 0

    return _run(parser, argv, action)
