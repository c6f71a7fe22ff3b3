"""raysweep: Hydra-configured Ray Tune sweeps, tracked in MLflow, with the best model registered.

Entry points: ``python -m raysweep +sweep=NAME`` (:mod:`raysweep.__main__`), :func:`raysweep.sweep.run` from
Python, and :mod:`raysweep.analysis` for an existing sweep.
"""

from raysweep import compat

# Under `uv run`, Ray would otherwise package the whole working directory (.venv included) as every
# worker's runtime environment and start each worker through `uv run`: slow, and not what raysweep ships.
compat.keep_ray_off_uv_run()

__version__ = "0.1.0"
