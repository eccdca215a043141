"""The sequential tuners' common part: the `Tuner` record, the evaluator, `run_tuner`.

A `Tuner` proposes one configuration at a time by calling the `Evaluator`
(``ev(position_D) -> fitness``) until the evaluator raises `Stop` (budget or
time limit) or the tuner has nothing left to propose. The evaluator trains
each configuration with `train.make_dense_train`: the same data arrays,
decoding, training loop, optimizer code, epochs and fitness as a swarm study
(`study.Study`), but dense at the configuration's real size and compiled once
per configuration, which is what a tuner that builds each trial's model pays.
With ``backend="torch"`` (`BACKENDS`) the evaluator trains the same
configuration in PyTorch eager instead (`torch_backend`: the same objective,
nothing compiled, what a user tuning one PyTorch network at a time pays).

A tuner that prunes (`halving`: Optuna's successive halving and Hyperband)
passes ``ev(position_D, prune=...)``: the evaluator then trains one epoch at a
time (`train.DenseTrainer.span_program`, the same keys and schedule as the
one-shot run, so an unpruned configuration gets the same fitness; two
compiles per configuration, the first epoch's program and the later ones') and asks
``prune(epochs_trained, fitness_so_far)`` after every epoch but the last; True
stops the training there. A pruned evaluation records the fitness after its
last trained epoch and never becomes the best (the best is a configuration
trained for all its epochs, as Optuna's best trial is a complete one).

Budget and time: `budget` counts trained configurations (exactly; a tuner may
stop earlier only when it has nothing left to propose, e.g. a finished grid);
a pruned configuration counts as one.
`time_limit` (seconds since the start of `run_tuner`, set-up and compiles
included) is checked BEFORE each evaluation: an evaluation that has started
always finishes, so the search may overrun the limit by at most one
evaluation (`BaselineResult.search_time` is what it really took).

Results are written like a swarm study's (`results`): evaluations.jsonl (one
row per evaluation; besides the swarm's fields, ``epochs``: the epochs it
trained, and ``pruned``: whether a pruner stopped it before the study's
epochs), rounds.jsonl (one row per evaluation: best so far, time),
best.json, evaluations.csv, study.json, progress.png, model/, and the Optuna record
(`optuna_record`, a trial added after each evaluation). Test accuracy comes from
`study.retrain_model`, the swarm study's own retrain (its model saved as a study's).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxswarm import optuna_record, results, train
from jaxswarm.data import Dataset
from jaxswarm.space import SearchSpace
from jaxswarm.study import retrain_model
from jaxswarm.tuners import torch_backend

__all__ = ["BaselineError", "BaselineResult", "Trial", "Tuner", "Evaluator", "Stop", "EVAL_FOLD", "worst",
           "run_tuner", "BACKENDS"]

# Keys of single evaluations (grid/random/optuna/optunity): fold_in(fold_in(key, this), i).
EVAL_FOLD = 2**29


def _jax_trainer(space, cfg, dataset):
    in_features = int(np.prod(dataset.x_train.shape[1:]))
    dense = train.make_dense_train(space, cfg, in_features, dataset.num_classes, input_shape=dataset.input_shape)
    return dense, train.device_data(dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val)


def _torch_trainer(space, cfg, dataset):
    in_features = int(np.prod(dataset.x_train.shape[1:]))
    dense = torch_backend.make_torch_train(space, cfg, in_features, dataset.num_classes,
                                           input_shape=dataset.input_shape)
    return dense, dense.data(dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val)


# What trains a configuration, by backend: (space, cfg, dataset) -> (trainer, its data); a trainer offers
# `train.DenseTrainer`'s ``train_position`` and ``span_program`` (`torch_backend.TorchTrainer` for torch).
BACKENDS = {"jax": _jax_trainer, "torch": _torch_trainer}


class Tuner(NamedTuple):
    """A sequential tuner, as `run_tuner` calls it.

    Attributes:
        name: registry key (``jaxswarm baseline --tuner``).
        run: ``run(ev, space, seed, budget, **options)``: calls ``ev(position_D)``
            (`Evaluator`; ``ev(position_D, prune=...)`` to stop a training
            between epochs) for each configuration it proposes.
        options: the keyword options ``run`` takes.
        packages: optional packages it needs (a clear error when one is missing).
        help: one line for the command line.
    """

    name: str
    run: Callable
    options: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    help: str = ""


class BaselineError(ValueError):
    """A baseline cannot run (bad tuner name or settings, missing optional package)."""


class Trial(NamedTuple):
    """One trained configuration."""

    index: int  # 0-based evaluation number
    seconds: float  # time since the start of run_baseline when it finished
    fitness: float  # validation fitness (higher is better; -inf when diverged)
    val_accuracy: float
    position: np.ndarray  # f32[D] in the unit box
    config: dict
    epochs: int  # epochs trained: the study's, or fewer when pruned
    pruned: bool  # a pruner stopped it before the study's epochs (its fitness is the last epoch's)


class BaselineResult(NamedTuple):
    tuner: str
    best_config: dict  # the best configuration found (Python values)
    best_fitness: float  # its validation fitness
    test_accuracy: float | None  # after a retrain on train+val (None if retrain=False)
    evaluations: int  # configurations trained during the search
    wall_time: float  # seconds: search + final retrain
    search_time: float  # seconds: set-up + all evaluations (compiles included)
    history: list  # [(seconds, best_fitness_so_far, evaluations)] after each evaluation
    trials: list  # [Trial]
    best_position: np.ndarray | None  # f32[D]
    out_dir: Path | None
    stop_reason: str  # "budget" | "time_limit" | "exhausted"


class Stop(Exception):
    """Raised by the evaluator when the budget or the time limit is reached."""


def worst(value: float) -> float:
    """A finite stand-in for a diverged (-inf / NaN) fitness, for external tuners."""
    return value if math.isfinite(value) else -1e9


class Evaluator:
    """Trains one position at a time, keeps the bookkeeping, enforces budget and time limit."""

    def __init__(self, space, dataset, cfg, seed, budget, time_limit, out_dir, t_start, bar, record=None,
                 backend="jax"):
        self.space, self.budget, self.time_limit = space, budget, time_limit
        self.epochs, self.fitness_kind = cfg.epochs, cfg.fitness  # epochs: a pruner's maximum resource
        self.out_dir, self.t_start, self.bar = out_dir, t_start, bar
        self.record = record  # an optuna_record.Recorder of out_dir, or None
        self.dense, self.data = BACKENDS[backend](space, cfg, dataset)  # `BACKENDS`: one JIT, or PyTorch eager
        self.key = jax.random.key(seed)
        self.eval_key = jax.random.fold_in(self.key, EVAL_FOLD)
        self.trials: list[Trial] = []
        self.history: list[tuple[float, float, int]] = []
        self.best: Trial | None = None
        self.stop_reason = "exhausted"

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def check(self) -> None:
        """Raises Stop if no further evaluation may start."""
        if self.budget is not None and len(self.trials) >= self.budget:
            self.stop_reason = "budget"
            raise Stop
        if self.time_limit is not None and self.elapsed() >= self.time_limit:
            self.stop_reason = "time_limit"
            raise Stop

    def __call__(self, position_D, key=None, round_=None, particle=0,
                 prune: Callable[[int, float], bool] | None = None) -> float:
        """Trains `position_D` (clipped to the unit box) and returns its fitness.

        Args:
          position_D: f32[D] configuration in the unit box.
          key: its training key (default: the i-th evaluation's, `EVAL_FOLD`).
          round_, particle: where the row says it came from (default: round i, particle 0).
          prune: None trains all epochs in one program; else the training goes one
            epoch at a time and ``prune(epochs_trained, fitness_so_far)`` is asked after
            each epoch but the last: True stops it (a pruned evaluation, its fitness the
            last trained epoch's).

        Raises:
          Stop: the budget or the time limit is reached (checked before training).
        """
        self.check()
        i = len(self.trials)
        u = np.clip(np.asarray(position_D, np.float32), 0.0, 1.0)
        if key is None:
            key = jax.random.fold_in(self.eval_key, i)
        t0 = time.perf_counter()
        if prune is None:
            m, epochs = self.dense.train_position(key, jnp.asarray(u), self.data), self.epochs
        else:
            m, epochs = self._train_epochs(key, u, prune)
        m = jax.tree.map(np.asarray, m)
        seconds = time.perf_counter() - t0
        fitness, pruned = float(m.fitness), epochs < self.epochs
        trial = Trial(i, self.elapsed(), fitness, float(m.val_accuracy), u, self.space.to_python(u), epochs, pruned)
        self.trials.append(trial)
        if not pruned and np.isfinite(fitness) and (self.best is None or fitness > self.best.fitness):
            self.best = trial
        best_f = self.best.fitness if self.best is not None else -math.inf
        self.history.append((trial.seconds, best_f, i + 1))
        if self.out_dir is not None:
            r = i if round_ is None else round_
            results.append_jsonl(self.out_dir / results.EVALUATIONS, [{
                "round": r, "particle": particle, "evaluation": i, "config": trial.config,
                "fitness": fitness, "val_accuracy": float(m.val_accuracy),
                "best_val_accuracy": float(m.best_val_accuracy), "val_loss": float(m.val_loss),
                "diverged": bool(m.diverged), "epochs": epochs, "pruned": pruned, "seconds": seconds,
                "time": trial.seconds, "position": dict(zip(self.space.dim_names, u.tolist()))}])
            results.append_jsonl(self.out_dir / results.ROUNDS, [{
                "round": i, "evaluation": i, "best_fitness": best_f,
                "best_config": self.best.config if self.best is not None else None,
                "median_fitness": fitness if np.isfinite(fitness) else None,
                "round_best_fitness": fitness, "diverged": int(bool(m.diverged)),
                "seconds": seconds, "time": trial.seconds}])
            if self.record is not None:
                self.record.sync()  # the new row in the Optuna record (never fatal)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(best=f"{best_f:.4f}", last=f"{fitness:.4f}")
        return fitness

    def _train_epochs(self, key, u, prune) -> tuple[train.Metrics, int]:
        """Trains `u` one epoch at a time until `prune` says stop; (its `Metrics` so far, epochs trained)."""
        # start is traced and the span length static: one program per configuration for the first
        # epoch (it initialises the state) and one for every later epoch.
        run, hp = self.dense.span_program(jnp.asarray(u), self.data.x_train.shape[0])
        state, loss_E, acc_E, vloss_E = None, [], [], []
        for e in range(self.epochs):
            m, state = run(key, hp, self.data, state, e, 1)
            loss_E.append(m.train_loss)
            acc_E.append(m.val_accuracy_curve)
            vloss_E.append(m.val_loss[None])
            # The curves so far, as the one-shot run's Metrics of these epochs (divergence over all of them).
            so_far = train.metrics_of(jnp.concatenate(loss_E), jnp.concatenate(acc_E), jnp.concatenate(vloss_E),
                                      self.fitness_kind)
            if e + 1 < self.epochs and prune(e + 1, float(so_far.fitness)):
                break
        return so_far, e + 1


def run_tuner(tuner: Tuner, space: SearchSpace, dataset: Dataset, *, budget: int | None = None,
                 time_limit: float | None = None, seed: int = 0, epochs: int = 10,
                 batch_size: int = 64, fitness: str = "accuracy", retrain: bool = True,
                 out_dir: str | Path | None = None, progress: bool = True,
                 settings: dict | None = None, storage: str | None = None, backend: str = "jax",
                 **tuner_kwargs) -> BaselineResult:
    """Runs the sequential `tuner` on the swarm's objective until budget or time runs out.

    Args:
      tuner: a `Tuner` (`tuners.TUNERS` holds them by name; `tuners.run_baseline` takes a name).
      space: the search space; dataset: a `data.Dataset` (its splits are used as given).
      budget: number of configurations to train (exact, unless the tuner runs out).
      time_limit: seconds from the start of this call (set-up and compiles included);
        checked before each evaluation, a running evaluation finishes.
      seed: seeds the tuner and the training keys (same seed, same proposals).
      epochs, batch_size, fitness: the objective, as in `tuner.StudyConfig`.
      retrain: retrain the best configuration on train+val and report test accuracy.
      out_dir: results directory (None: nothing written). Must not hold a study already.
      progress: show a progress bar.
      settings: extra information stored in study.json.
      storage: an Optuna storage URL for the Optuna record of `out_dir` (`optuna_record`; None: its optuna.db).
      backend: what trains each configuration (`BACKENDS`): "jax" (`train.make_dense_train`, one jit per
        configuration) or "torch" (`torch_backend`, PyTorch eager: the same objective, nothing compiled; needs
        ``pip install torch==2.13.0``). The final retrain of the winner is JAX's either way (`study.retrain_model`,
        so its saved model is a study's). study.json and best.json record it.
      **tuner_kwargs: tuner options: grid `grid_points` (target grid size when no budget,
        default 256); pso `swarm_size` (16), `init` ("lhs"), `pso` (dict of `make_pso`
        arguments), `plan_evals`; optunity `swarm_size` (None: Optunity's own suggestion),
        `plan_evals` (default: budget, else 10 x swarm size); tpe/gp `sampler_kwargs`;
        tpe_sha/tpe_hyperband `eta` (3), `min_epochs` (1), `sampler_kwargs` (see `halving`).

    Returns:
      A `BaselineResult`.

    Raises:
      BaselineError: unknown tuner or backend, neither budget nor time_limit, bad options, missing package.

    Example:
        >>> res = run_baseline("tpe", space, ds, budget=20, epochs=5)  # doctest: +SKIP
        >>> res.evaluations, res.test_accuracy  # doctest: +SKIP
    """
    t_start = time.perf_counter()
    name = tuner.name
    if budget is None and time_limit is None:
        raise BaselineError("give a budget (evaluations) or a time_limit (seconds), or both")
    if budget is not None and (int(budget) != budget or budget < 1):
        raise BaselineError(f"budget must be an integer >= 1, got {budget!r}")
    if time_limit is not None and not time_limit > 0:
        raise BaselineError(f"time_limit must be > 0 seconds, got {time_limit!r}")
    if epochs < 1 or batch_size < 1:
        raise BaselineError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    if fitness not in train.FITNESS_KINDS:
        raise BaselineError(f"fitness must be one of {train.FITNESS_KINDS}, got {fitness!r}")
    unknown = sorted(set(tuner_kwargs) - set(tuner.options))
    if unknown:
        raise BaselineError(f"tuner {name!r} takes no option(s) {unknown}; it takes {sorted(tuner.options)}")
    _check_available(tuner)
    if backend not in BACKENDS:
        raise BaselineError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "torch" and not torch_backend.available():
        raise BaselineError(f"the torch backend needs PyTorch, which is not installed: {torch_backend.INSTALL}")
    cfg = train.TrainConfig(epochs=epochs, batch_size=batch_size, fitness=fitness)
    out = None if out_dir is None else Path(out_dir).absolute()
    lock = None
    if out is not None:
        lock = _prepare_out_dir(out, {  # the folder's lock: one study writes there at a time
            "tuner": name, "budget": budget, "time_limit": time_limit, "seed": seed,
            "epochs": epochs, "batch_size": batch_size, "fitness": fitness,
            "tuner_kwargs": tuner_kwargs, "dataset": dataset.name, "space": repr(space),
            "train": cfg._asdict(), "settings": settings, "backend": backend, "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()]})
    try:
        bar = None
        if progress:
            bar = tqdm(total=budget, desc=name, unit="eval", dynamic_ncols=True)
        record = None if out is None else optuna_record.Recorder(out, storage, space,
                                                                  log=tqdm.write if progress else None)
        ev = Evaluator(space, dataset, cfg, seed, budget, time_limit, out, t_start, bar, record, backend)
        try:
            tuner.run(ev, space, seed, budget, **tuner_kwargs)
        except Stop:
            pass
        finally:
            if bar is not None:
                bar.close()
        search_time = time.perf_counter() - t_start
        best = ev.best
        test_acc = model = None
        if retrain and best is not None:
            _, model = retrain_model(space, dataset, best.position, seed=seed, epochs=epochs, batch_size=batch_size,
                                     fitness=fitness, hyperparameters={**best.config, "epochs": epochs,
                                                                       "batch_size": batch_size})
            test_acc = model.metrics["test_accuracy"]  # None without test rows
        wall = time.perf_counter() - t_start
        best_config = best.config if best is not None else {}
        best_fitness = best.fitness if best is not None else -math.inf
        if out is not None:
            if model is not None:
                model.save(out)  # out/model/, as a study's: `predict` and `load_model` read it
            results.write_json(out / results.BEST, {
                "best_config": best_config, "best_fitness": best_fitness, "fitness": fitness,
                "test_accuracy": test_acc, "evaluations": len(ev.trials), "tuner": name, "backend": backend,
                "position": None if best is None else best.position.tolist(),
                "search_seconds": search_time, "wall_seconds": wall, "stop_reason": ev.stop_reason})
            if ev.trials:
                results.write_csv(out / results.EVALUATIONS, out / results.CSV)
                results.plot(out)
        if progress:
            print(f"{name}: {len(ev.trials)} evaluations in {search_time:.1f}s ({ev.stop_reason}); "
                  f"best {fitness} {best_fitness:.4f} with {best_config}"
                  + (f"; test accuracy after retrain {test_acc:.4f}" if test_acc is not None else ""),
                  file=sys.stdout)
        return BaselineResult(name, best_config, best_fitness, test_acc, len(ev.trials), wall,
                              search_time, ev.history, ev.trials,
                              None if best is None else best.position, out, ev.stop_reason)
    finally:
        if lock is not None:
            lock.release()  # also when an evaluation raises: a later run may take the folder


def _prepare_out_dir(out: Path, info: dict) -> results.FolderLock:
    """Creates `out`, takes its lock, checks it holds no study and writes study.json.

    Returns:
      The folder's lock, for `run_tuner` to release.

    Raises:
      results.FolderLocked: another process runs a study in `out`.
      BaselineError: `out` cannot be created or written, or holds a study already.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = results.lock_folder(out)  # before anything reads or writes the folder
    except OSError as e:
        raise BaselineError(f"cannot create the output directory {out}: {e.strerror or e}") from None
    try:
        if (out / results.EVALUATIONS).exists():
            raise BaselineError(f"{out} already holds a study; choose a new directory")
        results.write_json(out / results.STUDY, info)
    except BaseException:
        lock.release()  # a refused start leaves the folder free
        raise
    return lock


def _check_available(tuner: Tuner) -> None:
    for pkg in tuner.packages:
        if importlib.util.find_spec(pkg) is None:
            how = torch_backend.INSTALL if pkg == "torch" else "pip install 'jaxswarm[bench]'"  # bench has no torch
            why = " (Optuna's GPSampler needs PyTorch)" if pkg == "torch" else ""
            raise BaselineError(f"tuner {tuner.name!r} needs the package {pkg!r}{why}; install it, e.g. {how}")
