"""Sequential baselines on the SAME objective as the swarm, one file per tuner.

`TUNERS` holds them by name (a `base.Tuner` each); `run_baseline(name, ...)`
runs one. Every tuner trains one configuration at a time, dense at its real
size, on the swarm study's data, loop and fitness (`base.Evaluator`), so a
comparison with the swarm is like for like.

  grid      a shuffled grid over the unit box (`grid.py`)
  random    independent uniform points (`random.py`)
  tpe, gp   Optuna's TPESampler / GPSampler, define-by-run (`optuna.py`)
  tpe_sha, tpe_hyperband
            TPE with Optuna's SuccessiveHalvingPruner / HyperbandPruner, trained
            an epoch at a time and stopped where pruned (`halving.py`)
  optunity  Optunity's particle swarm as shipped (`optunity.py`)
  pso       jaxswarm's PSO, one member at a time (`pso.py`)

A new tuner is one file in this folder and one line in `TUNERS`.

Backends (``run_baseline(..., backend=)``, ``jaxswarm baseline --backend``):
"jax" (default) trains each configuration as one jitted program
(`train.make_dense_train`, a compile per configuration); "torch" trains it in
PyTorch eager (`torch_backend`: the same decoding, network, initialization,
optimizer and schedule, data and minibatch semantics and fitness, nothing
compiled), what people who tune one PyTorch network at a time run. PyTorch
is optional: ``pip install torch==2.13.0`` (a CPU wheel; install it before
``jaxswarm[torch]``, whose range then adds nothing). The winner's final
retrain is JAX's with either backend.

Example:
    >>> from jaxswarm.data import load_dataset
    >>> from jaxswarm.models import mlp_space
    >>> res = run_baseline("random", mlp_space(max_layers=1, units=(4, 16)), load_dataset("digits"),
    ...                    budget=2, epochs=1, progress=False)  # doctest: +SKIP
    >>> res.evaluations  # doctest: +SKIP
    2
"""

from __future__ import annotations

from jaxswarm.tuners import grid, halving, optuna, optunity, pso, random
from jaxswarm.tuners.base import BACKENDS, BaselineError, BaselineResult, Trial, Tuner, run_tuner
from jaxswarm.tuners.grid import grid_positions

__all__ = ["TUNERS", "BACKENDS", "BaselineError", "BaselineResult", "Trial", "Tuner", "run_baseline", "grid_positions"]

TUNERS: dict[str, Tuner] = {t.name: t for t in (grid.TUNER, random.TUNER, optuna.TPE, optuna.GP,
                                                   halving.SHA, halving.HYPERBAND, optunity.TUNER, pso.TUNER)}


def run_baseline(name: str, space, dataset, **kwargs) -> BaselineResult:
    """Runs the tuner `name` of `TUNERS` (see `base.run_tuner` for the arguments)."""
    if name not in TUNERS:
        raise BaselineError(f"unknown tuner {name!r}; choose one of {list(TUNERS)}")
    return run_tuner(TUNERS[name], space, dataset, **kwargs)
