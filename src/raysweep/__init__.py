"""raysweep: Hydra-configured Ray Tune sweeps, tracked in MLflow, with the best model registered.

Entry points: ``python -m raysweep +sweep=NAME`` (:mod:`raysweep.__main__`), ``raysweep.run(sweep, overrides,
config_dir)`` from Python (:func:`raysweep.api.run`), and :mod:`raysweep.analysis` for an existing sweep.
"""

from raysweep import compat

# Under `uv run`, Ray would otherwise package the whole working directory (.venv included) as every
# worker's runtime environment and start each worker through `uv run`: slow, and not what raysweep ships.
compat.keep_ray_off_uv_run()
# Output going to a file or a pipe gets no colour codes from Ray's printing of workers' lines.
compat.plain_worker_logs()

__version__ = "0.1.0"
__all__ = ["run", "SweepResult", "RaySweepError"]


def __getattr__(name: str):
    # Loaded on first use, so `import raysweep` (and every Ray worker that imports a raysweep module) stays light.
    if name in ("run", "SweepResult"):
        from raysweep import api

        return getattr(api, name)
    if name == "RaySweepError":
        from raysweep.errors import RaySweepError

        return RaySweepError
    raise AttributeError(f"module 'raysweep' has no attribute {name!r}")
