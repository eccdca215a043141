"""A study: initial design -> decode -> train the swarm -> fitness -> strategy tell -> report -> checkpoint.

`Study` reads its choices once: the model family from the space
(`models.family_of`), the layout from `layouts.LAYOUTS` (which builds the
round's `SwarmProgram`) and the population strategy from
`strategies.STRATEGIES` (PSO by default). One round (`Study.round`) is a pure
function of its inputs: keys from the seed and the round number, the
strategy's state, the data and (warm mode) the members' weights in, the next
state and the members' `Metrics` out (an Optuna strategy also keeps its
Optuna study, idempotently: see `strategies`). `Study.run` only does host
work around it: result files, checkpoints, progress.

Two modes:
  fresh  every round trains each member from new weights: the classic PSO
         hyperparameter search of the original study.
  warm   a member whose architecture did not change since the last round keeps
         its weights and trains on; a member whose architecture changed starts
         from new weights.

A schedule (`StudyConfig.schedule`, `schedules`: successive halving or
Hyperband) cuts a fresh round into rungs: the best members of each go on
training from their own state, the others stop (`Study._train_rungs`). PBT
(`Study._train_pbt`, fresh or warm) cuts it into spans of every member, the
worst continuing from copies of the best at moved positions; the strategy
is told where they ended (`strategies.Strategy.relocate`).

Determinism: round r's keys are `round_keys(key(seed), r, S)`, so a study
resumed from the checkpoint of round r draws the same numbers as the
uninterrupted one and ends with the same result (bit for bit on CPU).
`Study.evaluate` trains given positions without a strategy (e.g. a batch of
Optuna trials, `strategies.optimize_batches`).

Example (a research script):
    >>> import numpy as np, jaxswarm as js
    >>> x = np.random.rand(300, 10).astype(np.float32); y = (x.sum(1) > 5).astype(int)
    >>> data = js.from_arrays(x, y, seed=0)
    >>> space = js.SearchSpace({"n_layers": js.Int(1, 2), "units_1": js.Int(4, 32, log=True),
    ...     "units_2": js.Int(4, 32, log=True, when=lambda v: v["n_layers"] >= 2),
    ...     "learning_rate": js.Float(1e-3, 1e-1, log=True)})
    >>> result = js.tune(space, data, swarm_size=4, rounds=2, epochs=2, progress=False)
    >>> sorted(result.best_config)[:2]
    ['learning_rate', 'n_layers']
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxswarm import costs, design, execute, optuna_record, results, schedules, strategies, train
from jaxswarm import pso as pso_lib
from jaxswarm.data import Dataset, kfold_indices
from jaxswarm.layouts import DEFAULT_LAYOUT, LAYOUT_NAMES, resolve
from jaxswarm.layouts.masked import DataShape, SwarmProgram
from jaxswarm.models import family_of, mlp_space
from jaxswarm.optim import optimizer_names
from jaxswarm.saved import SavedModel, TaskModel, model_leftovers
from jaxswarm.space import Float, SearchSpace
from jaxswarm.task import (Task, TaskMetrics, TrainingLoop, builder, data_digest, fit_winner, make_engine,
                           static_names, supervised)

__all__ = ["MODES", "StudyConfig", "StudyResult", "StudyError", "Study", "tune", "load_result",
           "round_keys", "initial_state", "retrain_model", "retrain_metrics"]

MODES = ("fresh", "warm")
RETRAIN_FOLD = 2**30  # fold_in index of the retrain's key
# A swarm whose estimated memory is this many times a device's is refused unless allow_huge: it
# would train in that many chunks one after another, which on such a machine takes days, and a
# mistyped swarm size should fail in a second, not after a compile.
HUGE_FACTOR = 64
_INIT_FOLD = -1 % (2**31)  # fold_in index of the initial design's key
# A task's members of one static signature trained together off a CPU (StudyConfig.chunk_size overrides). On a CPU,
# 1: a vmapped group trains faster (4 MLP members 1.35x) but compiles slower (11.7 s against 7.3 s), and in a
# study of a few rounds the compile weighs more (bench/bench_task.py, bench/NOTES.md).
TASK_GROUP_SIZE = 8


@dataclasses.dataclass
class StudyConfig:
    """Everything that defines a study besides its data and space (the CLI's flags read these defaults)."""

    swarm_size: int = 16
    rounds: int = 8
    epochs: int = 10
    batch_size: int = 64
    folds: int = 1  # 1: hold-out validation split; k > 1: k-fold CV on train+val
    mode: str = "fresh"  # fresh | warm
    init: str = "lhs"  # initial design (design.DESIGNS): lhs (maximin Latin hypercube), sobol, uniform; where
    #                    pso and evosax's de / pso start (the samplers draw their own rounds)
    fitness: str = "accuracy"  # accuracy | loss
    patience: int | None = None  # stop after this many rounds without improvement
    seed: int = 0
    retrain: bool = True  # retrain the best config on train+val and report test accuracy
    retrain_epochs: int | None = None  # epochs of that final retrain (None: the search's epochs)
    layout: str = DEFAULT_LAYOUT  # "auto" (picked per backend and study) or a key of layouts.LAYOUTS
    strategy: str = strategies.DEFAULT_STRATEGY  # what the swarm trains next: a key of strategies.STRATEGIES
    pso: dict = dataclasses.field(default_factory=dict)  # keyword arguments of pso.make_pso (strategy "pso")
    strategy_options: dict = dataclasses.field(default_factory=dict)  # another strategy's settings (make_strategy)
    chunk_size: int | None = None  # members per device trained at once (None: planned from memory)
    memory_cap_gb: float | None = None  # per-device memory cap for that plan (None: the device's own)
    allow_huge: bool = False  # run a swarm even when it needs over HUGE_FACTOR times a device's memory
    schedule: str = "none"  # none | sha | hyperband | pbt: inside each round (schedules); epochs is the top rung
    eta: int = 3  # a rung keeps the best 1/eta of the one before
    min_epochs: int | None = None  # the first rung (None: epochs // eta**2, at least 1); hyperband's lowest
    pbt_interval: int | None = None  # pbt: epochs between exploits (None: epochs // 4, at least 1)
    pbt_fraction: float = 0.25  # pbt: the bottom fraction copies a member of the top fraction
    pbt_perturb: float = 0.2  # pbt: a copied position moves up to this much per dimension (unit box)
    pbt_architecture: bool = False  # pbt: explore may change the architecture (that copy starts from new weights)
    # The engine's machine figures (`costs.CostModel`'s fields) that `layout="auto"` and the packed plans
    # weigh; None: this machine's (`costs.load`). A Study stores the resolved dict here, so study.json
    # records it and a resumed study plans with it, whatever was calibrated since.
    cost_model: dict | None = None

    def validate(self) -> None:
        """Raises ValueError naming the first bad setting (wrong kind or out of range)."""
        def integer(x) -> bool:
            # A bool is an int to Python, and a float such as 2.0 would reach range() and fail there.
            return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))

        for name, least in (("swarm_size", 2), ("rounds", 1), ("epochs", 1), ("batch_size", 1), ("folds", 1)):
            value = getattr(self, name)
            if not integer(value) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if not integer(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("patience", "retrain_epochs", "chunk_size"):
            value = getattr(self, name)
            if value is not None and (not integer(value) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")
        for name in (f.name for f in dataclasses.fields(self) if f.type == "bool"):  # "no" would be True
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        cap = self.memory_cap_gb
        if cap is not None and (isinstance(cap, (bool, np.bool_)) or not isinstance(cap, (int, float, np.number))
                                or not cap > 0):
            raise ValueError(f"memory_cap_gb must be a number > 0 or None, got {cap!r}")
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not isinstance(self.init, str) or self.init not in design.DESIGNS:
            raise ValueError(f"init must be one of {sorted(design.DESIGNS)}, got {self.init!r}")
        if not isinstance(self.fitness, str) or self.fitness not in train.FITNESS_KINDS:
            raise ValueError(f"fitness must be one of {train.FITNESS_KINDS}, got {self.fitness!r}")
        if not isinstance(self.layout, str) or self.layout not in LAYOUT_NAMES:
            raise ValueError(f"layout must be one of {LAYOUT_NAMES}, got {self.layout!r}")
        if not isinstance(self.strategy, str) or self.strategy not in strategies.STRATEGIES:
            raise ValueError(f"strategy must be one of {list(strategies.STRATEGIES)}, got {self.strategy!r}")
        if not isinstance(self.pso, dict):
            raise ValueError(f"pso must be a dict of pso.make_pso keyword arguments, got {self.pso!r}")
        if not isinstance(self.strategy_options, dict):
            raise ValueError(f"strategy_options must be a dict, got {self.strategy_options!r}")
        if self.strategy == "pso":
            if self.strategy_options:
                raise ValueError(f"strategy_options {sorted(self.strategy_options)} do not apply to strategy 'pso'; "
                                 "its settings are pso (pso.make_pso's keyword arguments)")
            known = sorted(set(pso_lib.make_pso.__kwdefaults__) - {"maximize"})  # the study maximizes
            unknown = sorted(set(self.pso) - set(known), key=str)
            if unknown:
                raise ValueError(f"pso has unknown setting(s) {unknown}; known: {known}")
            try:  # the coefficients now, not after the data is loaded (the box's size D does not matter here)
                pso_lib.make_pso(self.swarm_size, 1, maximize=True, **{
                    "num_iterations": self.rounds, **{k: v for k, v in self.pso.items() if k not in ("lower", "upper")}})
            except ValueError as e:
                raise ValueError(f"pso: {e}") from None
        else:
            if self.pso:
                raise ValueError(f"pso settings {sorted(self.pso)} apply only to strategy 'pso', "
                                 f"not {self.strategy!r}")
            # Its options and packages now, not after the data is loaded (in memory: nothing written).
            strategies.make_strategy(self.strategy, SearchSpace({"x": Float(0.0, 1.0)}), self.swarm_size,
                                     rounds=self.rounds, seed=self.seed, options=self.strategy_options)
        schedules.check(self.schedule, self.eta, self.min_epochs, self.epochs)
        defaults = {f.name: f.default for f in dataclasses.fields(StudyConfig)}
        for names, takers in ((("eta", "min_epochs"), ("sha", "hyperband")),
                              (("pbt_interval", "pbt_fraction", "pbt_perturb", "pbt_architecture"), ("pbt",))):
            ignored = [n for n in names if getattr(self, n) != defaults[n]]
            if ignored and self.schedule not in takers:  # it would silently do nothing
                verb = "applies" if len(ignored) == 1 else "apply"
                raise ValueError(f"{', '.join(ignored)} {verb} to schedule {' or '.join(map(repr, takers))}, not "
                                 f"{self.schedule!r}: set the schedule (--schedule) or drop them")
        if self.schedule in ("sha", "hyperband") and (self.mode != "fresh" or self.folds > 1):
            raise ValueError(f"schedule {self.schedule!r} trains fresh members on one hold-out split: "
                             f"it cannot be combined with mode {self.mode!r} / folds {self.folds}")
        if self.schedule == "pbt":
            if self.epochs < 2:
                raise ValueError("schedule 'pbt' copies members between spans of a round's epochs: epochs must be >= 2")
            schedules.check_pbt(self.pbt_interval, self.pbt_fraction, self.pbt_perturb, self.epochs)
            if self.folds > 1:
                raise ValueError(f"schedule 'pbt' trains on one hold-out split: it cannot be combined with "
                                 f"folds {self.folds}")
            if self.strategy != "pso":
                raise ValueError(f"schedule 'pbt' moves members inside a round; strategy {self.strategy!r} "
                                 "cannot take the moved positions (strategy 'pso' can: its particles move there)")
        if self.mode == "warm" and self.folds > 1:
            raise ValueError("mode 'warm' keeps one network per particle; it cannot be combined with folds > 1")
        if self.cost_model is not None:
            try:
                costs.of(self)
            except ValueError as e:
                raise ValueError(f"cost_model: {e}") from None


class StudyResult(NamedTuple):
    best_config: dict  # the best configuration found (Python values)
    best_fitness: float  # its validation fitness
    test_accuracy: float | None  # after a final retrain on train+val (None if retrain=False)
    rounds_run: int
    wall_time: float  # seconds, this process only
    out_dir: Path | None
    status: str = "ok"  # "ok", or "all_diverged": no evaluation finished finite (nothing retrained)
    model: Any = None  # the retrained winner, a saved.SavedModel or TaskModel (None without a retrain)
    test_metrics: dict | None = None  # the winner's test metrics after the retrain ({"test_accuracy": ...} built in)


# What a resumed study may change: how long it goes on and its final retrain. Any other setting, the space
# or the data would continue one study's checkpoint as another's.
RESUMABLE = ("rounds", "patience", "retrain", "retrain_epochs")


class StudyError(ValueError):
    """A study cannot start or continue (bad output directory, nothing to resume, ...)."""


class Warm(NamedTuple):
    """What warm mode carries from one round to the next."""

    variables: Any  # every member's weights (None before the first round); a task's: each member's state
    signature: np.ndarray | None  # int[S, K]: the architecture those weights belong to; a task's: f32[S, D],
    #                                the positions its states were trained at (their static values)


def _digest(dataset: Dataset) -> str:
    """A short fingerprint of the dataset's splits (their bytes and shapes): another split of the same
    data, or other rows, resumes nothing."""
    h = hashlib.blake2b(digest_size=8)
    for a in (dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val, dataset.x_test, dataset.y_test):
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.data if a.dtype != object else repr(a.tolist()).encode())
    return h.hexdigest()


def round_keys(key: jax.Array, r: int, swarm_size: int) -> tuple[jax.Array, jax.Array]:
    """Round r's ``(member keys [S], PSO tell key)``: the same for a study and its resumed run."""
    return _round_keys(key, r, swarm_size)


@functools.partial(jax.jit, static_argnums=2)  # one small program, not a few op-by-op compiles per study
def _round_keys(key, r, swarm_size):
    k_train, k_tell = jax.random.split(jax.random.fold_in(key, r))
    return jax.random.split(k_train, swarm_size), k_tell


def initial_state(key: jax.Array, strategy, init: str, swarm_size: int, num_dims: int):
    """The state before round 0 of `strategy` (a `strategies.Strategy` or a `pso.PSO`): the initial design
    `init` from the study's key is its start."""
    init_key = jax.random.fold_in(key, _INIT_FOLD)
    start = design.initial_design(init_key, init, swarm_size, num_dims)
    return strategy.init(jax.random.fold_in(init_key, 1), start)


def retrain_model(space: SearchSpace, dataset: Dataset, position_D, *, seed: int, epochs: int,
                  batch_size: int, fitness: str, on_epoch: Callable | None = None,
                  log: Callable[[str], None] | None = None, hyperparameters: dict | None = None):
    """Trains the configuration at `position_D` densely on train+val; returns ``(Metrics, SavedModel)``.

    The validation fields of the returned `Metrics` are the test set's, one
    entry per epoch in the curves (a dataset without test rows: meaningless,
    and the model's ``test_accuracy`` is None); the `saved.SavedModel` is the trained
    network, ready to predict and to save. The key is ``fold_in(key(seed),
    2**30)``, for a study and a sequential tuner alike.
    """
    x_all, y_all = np.concatenate([dataset.x_train, dataset.x_val]), np.concatenate([dataset.y_train, dataset.y_val])
    scored = len(dataset.y_test) > 0  # without test rows the winner still trains (and is saved), unscored
    data = train.device_data(x_all, y_all, *((dataset.x_test, dataset.y_test) if scored else (x_all[:1], y_all[:1])))
    config = train.TrainConfig(epochs=epochs, batch_size=batch_size, fitness=fitness)
    dense = train.make_dense_train(space, config, data.x_train.shape[1], dataset.num_classes,
                                   input_shape=dataset.input_shape, on_epoch=on_epoch)
    arch, hp = dense.describe(position_D)
    if log is not None:
        log(f"retraining {arch} (lr {float(hp.learning_rate):.2e}) for {epochs} epochs "
            f"on {len(data.y_train)} images")
    key = jax.random.fold_in(jax.random.key(seed), RETRAIN_FOLD)
    metrics, variables = dense.fit_position(key, np.asarray(position_D, np.float32), data)
    classes = tuple(dataset.classes) or tuple(range(dataset.num_classes))  # () for a hand-built Dataset
    model = SavedModel(family_of(space), dense.model_config, arch, jax.tree.map(np.asarray, variables), classes,
                       hyperparameters, {"test_accuracy": float(metrics.val_accuracy) if scored else None},
                       input_shape=dataset.input_shape)
    return metrics, model


def retrain_metrics(space: SearchSpace, dataset: Dataset, position_D, **kwargs) -> train.Metrics:
    """`retrain_model`'s `Metrics` alone (the test set's in the validation fields)."""
    return retrain_model(space, dataset, position_D, **kwargs)[0]


class Study:
    """A study over `space` on `dataset` driven by `config.strategy` (PSO by default); `run()` drives it round by round.

    Args:
      space: the search space (its family comes from `models.family_of`).
      dataset: a `data.Dataset` (see `data.load_dataset`, `data.from_arrays`) for the built-in networks, or
        your own `task.Task` (folds > 1 trains each member once per fold) or `task.TrainingLoop` (no folds).
        Warm mode serves both: a member whose static values did not change goes on from its own state.
      config: the study's `StudyConfig`.
      out_dir: results directory (None: keep results in memory only; no checkpoints).
      progress: show a progress bar and one line per round.
      settings: the CLI's merged settings, stored in study.json so `--resume` can rebuild the study.
      storage: an Optuna storage URL for the study's Optuna record (`optuna_record`; None: optuna.db in
        `out_dir`). Not stored: a resumed study takes it again.
    """

    def __init__(self, space: SearchSpace, dataset: Dataset, config: StudyConfig,
                 out_dir: str | Path | None = None, progress: bool = True, settings: dict | None = None,
                 storage: str | None = None):
        config.validate()
        # The cost model resolved once: every layout and `auto` read these figures, and study.json keeps them.
        config = dataclasses.replace(config, cost_model=costs.of(config)._asdict())
        self.settings = settings
        self.space, self.dataset, self.config, self.progress = space, dataset, config, progress
        self.out_dir = None if out_dir is None else Path(out_dir).absolute()
        # evaluations.jsonl as an Optuna study, kept in step after each round (never fatal to the study).
        self.optuna_record = None if out_dir is None else optuna_record.Recorder(self.out_dir, storage, space,
                                                                                  log=self._log)
        self.task = dataset if isinstance(dataset, (Task, TrainingLoop)) else None
        self.family = None if self.task is not None else family_of(space)
        if self.task is not None:
            _check_task_config(config)
        elif config.mode == "warm" and self.family.signature is None:
            raise ValueError(f"mode 'warm' is not available for the {self.family.name} family; use mode 'fresh'")
        self.train_config = train.TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                                              fitness=config.fitness)
        # One of pso and strategy_options is empty (validate): the strategy's own settings.
        self.strategy = strategies.make_strategy(config.strategy, space, config.swarm_size, rounds=config.rounds,
                                                 seed=config.seed, out_dir=self.out_dir,
                                                 options={**config.pso, **config.strategy_options})
        # Compiled once per study (op by op, PSO's tell compiles ~40 small programs); a host strategy runs as it is.
        self._tell = jax.jit(self.strategy.tell) if self.strategy.jittable else self.strategy.tell
        self.last_rungs: dict | None = None  # the last round's rungs: each member's rung and epochs, survivors
        self.last_pbt: dict | None = None  # the last PBT round's exploits and the members' last positions
        self.evaluations: list[dict] = []  # every evaluation row of the study, as evaluations.jsonl holds them
        self.key = jax.random.key(config.seed)
        if self.task is not None:
            self._init_task()
            return
        shape = DataShape(int(np.prod(dataset.x_train.shape[1:])), dataset.num_classes, dataset.input_shape)
        n_train, n_val = len(dataset.x_train), len(dataset.x_val)
        if config.folds > 1:  # one pool, k (train, val) splits of it
            n_val = (n_train + n_val) // config.folds
            n_train = len(dataset.x_train) + len(dataset.x_val) - n_val
        # The layout before any data goes to the device: a refused study costs nothing.
        self.layout, self.layout_reason = resolve(config.layout, self.family, space, config, shape, n_train)
        reason = self.layout.supports(self.family, space, config)
        if reason is not None:
            raise ValueError(reason)
        self._log(self.layout_reason)
        if config.folds > 1:
            x = np.concatenate([dataset.x_train, dataset.x_val])
            y = np.concatenate([dataset.y_train, dataset.y_val])
            tr, va = kfold_indices(len(x), config.folds, seed=config.seed)
            data = train.fold_data(x, y, tr, va)
        else:
            data = train.device_data(dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val)
        model_config = self.family.config(space, shape.in_features, shape.num_classes, shape.input_shape, False)
        self.memory_estimate = execute.estimate_memory(  # at the space's batch sizes, the largest a member steps on
            self.family, model_config, train.batch_config(space, self.train_config, self.family), config.swarm_size,
            n_train, max(n_val, 1),
            optimizers=optimizer_names(space), folds=config.folds)
        self._refuse_huge()
        self.program = self.layout.build(self.family, space, self.train_config, shape, config,
                                         self.memory_estimate, self._log)
        if config.schedule != "none" and self.program.span is None:
            raise ValueError(f"layout {self.layout.name!r} cannot train in rungs (schedule {config.schedule!r})")
        self.data = self.program.place(data)  # on every device once, not every round
        self._decode_swarm = jax.jit(jax.vmap(self.program.hparams))  # warm mode's signatures, compiled once

    def _init_task(self) -> None:
        """The engine of a study of your own `task.Task`: its members grouped by their static hyperparameters
        (`task.make_engine`), the groups' programs compiled as the swarm reaches them."""
        cfg, space = self.config, self.space
        if isinstance(self.task, Task):
            self.task = self.task._replace(batch_size=self.task.batch_size or cfg.batch_size)
        devices = jax.devices()  # every process's: over several hosts each process runs the same calls
        # chunk_size: members per device in one call; over several devices a call splits its members evenly.
        group_size = (cfg.chunk_size or (1 if jax.default_backend() == "cpu" else TASK_GROUP_SIZE)) * len(devices)
        mesh = execute.particle_mesh(devices) if len(devices) > 1 else None
        capacity = execute.device_memory_bytes(jax.local_devices()[0])
        if cfg.memory_cap_gb is not None:
            capacity = min(capacity, int(cfg.memory_cap_gb * 2**30))
        build = builder(self.task)
        if cfg.folds > 1:  # every member trains once per fold of train + val, inside its own program
            if not isinstance(self.task, Task):
                raise ValueError(f"folds {cfg.folds}: a TrainingLoop has no data to fold; use folds 1")
            pool = len(jax.tree.leaves(self.task.data.train)[0]) + len(jax.tree.leaves(self.task.data.val)[0])
            build = supervised(self.task, kfold_indices(pool, cfg.folds, seed=cfg.seed))
        self.engine = make_engine(build, space, cfg.epochs, self.task.objective, group_size=group_size, mesh=mesh,
                                  capacity=capacity, place=execute.put)
        self.layout, self.data = None, None
        names = ", ".join(static_names(space)) or "none"
        over = "" if mesh is None else f" over {len(devices)} devices" + (
            f" of {jax.process_count()} processes" if jax.process_count() > 1 else "")
        self.layout_reason = (f"task: the members of each static signature ({names}) train {group_size} at a time "
                              f"in one jit(vmap) program{over}, the rest in calls of powers of two")
        self.program = _task_program(self.engine, self.layout_reason)
        self._log(self.layout_reason)

    # -- one round: a pure function of its inputs ----------------------------

    def round(self, r: int, state, warm: Warm | None):
        """Trains round r's members and moves the swarm: ``(state, warm) -> (state, warm, metrics)``.

        ``state`` is the strategy's. ``warm`` is None in fresh mode; its variables are donated to
        the round (updated in place), so keep a host copy to reuse them. Nothing is written (an
        Optuna strategy records its trials in its own study); the same inputs give the same outputs.
        """
        keys, k_tell = round_keys(self.key, r, self.config.swarm_size)
        positions = self.strategy.ask(state)
        if self.config.schedule == "pbt":  # the members move inside the round: the strategy is told where to
            metrics, moved, warm = self._train_pbt(r, keys, positions, warm)
            return self._tell(k_tell, self.strategy.relocate(state, moved), np.asarray(metrics.fitness)), warm, metrics
        if self.config.schedule != "none":
            metrics, told = self._train_rungs(r, keys, positions)
            return self._tell(k_tell, state, told), warm, metrics
        if warm is not None and self.task is not None:  # a member of unchanged static values goes on training
            states = self._warm_states(warm, positions)
            metrics, states = self.program.span(keys, positions, self.data, states, 0, self.config.epochs)
            warm = Warm(states, np.asarray(positions, np.float32))
        elif warm is None:
            metrics, _ = self.program.run(keys, positions, self.data)
        else:
            signature = self._signature(positions)
            keep = _kept(warm, signature)
            variables = self.program.init_state(keys, positions) if warm.variables is None else warm.variables
            metrics, variables = self.program.run(keys, positions, self.data, variables, jnp.asarray(keep))
            warm = Warm(variables, signature)
        # The fitness comes to the host (S floats): every round then hands the strategy arrays of the
        # same kind, so its steps compile once, whatever device layout the swarm program used.
        return self._tell(k_tell, state, np.asarray(metrics.fitness)), warm, metrics

    def _train_rungs(self, r: int, keys, positions):
        """Round r's rungs (`schedules`): ``(Metrics of every member at its last rung, the fitness to tell)``.

        Each rung trains only the members still in it, gathered into a smaller swarm, from their own
        `train.TrainState`; a member's keys are its round keys at every rung, so it trains as it would
        have straight through. The metrics' curves hold NaN after the epochs a member trained.
        """
        cfg = self.config
        plan = schedules.round_rungs(cfg.schedule, r, cfg.swarm_size, cfg.min_epochs, cfg.epochs, cfg.eta)
        S, E = cfg.swarm_size, cfg.epochs
        alive = np.arange(S)
        states = self.program.start_span(keys, positions, self.data)
        shuffle_key = jax.random.fold_in(keys[0], 1)  # where members share minibatches: the same at every rung
        rung_of, epochs_of = np.zeros(S, np.int32), np.zeros(S, np.int32)
        last = None  # every member's metrics at its last rung so far (the curves aside)
        curves = _empty_curves(S, E) if self.task is None else {}  # a task's metrics have no curves
        survivors, start = [], 0
        for i, rung in enumerate(plan):
            if i > 0:
                keep = schedules.survivors(last.fitness[alive], rung.members)
                alive = alive[np.sort(keep)]
                states = _take_members(states, np.searchsorted(previous, alive))
                survivors.append(alive.tolist())
            m, states = self.program.span(keys[alive], positions[alive], self.data, states, start, rung.epochs - start,
                                          shuffle_key=shuffle_key)
            m = jax.tree.map(np.asarray, m)
            for f in curves:  # the span's epochs of each member's curve
                curves[f][alive, start:rung.epochs] = getattr(m, f)
            m = m._replace(**dict.fromkeys(curves))
            if last is None:
                last = jax.tree.map(lambda v: np.zeros((S,) + v.shape[1:], v.dtype), m)
            jax.tree.map(lambda to, v: to.__setitem__(alive, v), last, m)
            rung_of[alive], epochs_of[alive] = i, rung.epochs
            previous, start = alive, rung.epochs
        metrics = last._replace(**curves)
        if self.task is None:
            metrics = metrics._replace(best_val_accuracy=_best_of(curves, metrics.diverged))
        self.last_rungs = {"rung": rung_of, "epochs": epochs_of, "survivors": survivors,
                           "rungs": [list(x) for x in plan]}
        kind = cfg.fitness if self.task is None else "unbounded"
        return metrics, schedules.scores(metrics.fitness, rung_of, len(plan) - 1, kind)

    def _train_pbt(self, r: int, keys, positions, warm: Warm | None):
        """Round r under PBT (`schedules.exploit`): ``(Metrics, the members' last positions, warm)``.

        The members train ``pbt_interval`` epochs at a time, all of them. Between two spans the bottom
        ``pbt_fraction`` each continue from a copy of a top member's `train.TrainState` (weights, batch
        statistics, optimizer state and step count) at its position moved by `schedules.exploit`. A
        copy whose architecture changed (``pbt_architecture``) starts from new weights, and one whose
        optimizer changed from a new optimizer state; both keep the round's step count. A copy takes
        its source's curves so far, so a member's curves are its network's history. Every member keeps
        its own keys (its data order and dropout). The exploits are drawn from (seed, round).
        """
        cfg = self.config
        S, E = cfg.swarm_size, cfg.epochs
        interval = schedules.pbt_interval(cfg.pbt_interval, E)
        positions = np.asarray(positions, np.float32)
        if warm is None or warm.variables is None:
            states = self.program.start_span(keys, positions, self.data)
        elif self.task is not None:
            states = self._warm_states(warm, positions)
        else:
            keep = _kept(warm, self._signature(positions))
            states = self.program.start_span(keys, positions, self.data, warm.variables, jnp.asarray(keep))
        shuffle_key = jax.random.fold_in(keys[0], 1)  # where members share minibatches: the round's, every span
        rng = np.random.default_rng([cfg.seed, r])
        same = None if cfg.pbt_architecture else self._same_architecture
        curves = _empty_curves(S, E) if self.task is None else {}
        exploits, copied_from = [], [[] for _ in range(S)]
        for start in range(0, E, interval):
            end = min(start + interval, E)
            m, states = self.program.span(keys, positions, self.data, states, start, end - start,
                                          shuffle_key=shuffle_key)
            m = jax.tree.map(np.asarray, m)
            for f in curves:
                curves[f][:, start:end] = getattr(m, f)
            if end == E:
                break
            ex = schedules.exploit(m.fitness, positions, cfg.pbt_fraction, cfg.pbt_perturb, rng, same)
            states, new_weights, new_optimizer = self._exploited(keys, states, positions, ex)
            moved = np.flatnonzero(ex.source != np.arange(S))
            for f in curves:
                curves[f][moved, :end] = curves[f][ex.source[moved], :end]
            exploits.append({"epoch": end, "members": moved.tolist(), "sources": ex.source[moved].tolist(),
                             "new_weights": new_weights[moved].tolist(),
                             "new_optimizer_state": new_optimizer[moved].tolist()})
            for i in moved:
                copied_from[i].append([end, int(ex.source[i])])
            positions = ex.positions
        metrics = m if self.task is not None else m._replace(**curves, best_val_accuracy=_best_of(curves, m.diverged))
        self.last_pbt = {"positions": positions, "exploits": exploits, "copied_from": copied_from}
        if warm is not None and self.task is not None:
            warm = Warm(states, positions)
        elif warm is not None:
            warm = Warm({"params": states.params, "batch_stats": states.batch_stats}, self._signature(positions))
        return metrics, positions, warm

    def _exploited(self, keys, states, positions, ex: schedules.Exploit):
        """The states after `ex`: ``(states, new weights [S], new optimizer state [S])`` (see `_train_pbt`)."""
        source = ex.source
        moved = source != np.arange(len(source))
        if self.task is not None:  # a copy within a static group is the source's state itself; across, fresh
            new_weights = moved & ~self._same_architecture(positions[source], ex.positions)
            return [None if new else states[s] for s, new in zip(source, new_weights)], new_weights, new_weights
        arch_before, hp_before = self._decode_swarm(positions[source])
        arch_after, hp_after = self._decode_swarm(ex.positions)
        new_weights = moved & np.any(self.family.signature(arch_before) != self.family.signature(arch_after), axis=1)
        new_optimizer = new_weights | (moved & (np.asarray(hp_before.optimizer) != np.asarray(hp_after.optimizer)))
        copied = train.take_members(states, np.asarray(source))
        fresh = self.program.start_span(keys, ex.positions, self.data)
        return train.restart_rows(copied, fresh, new_weights, new_optimizer), new_weights, new_optimizer

    def _same_architecture(self, a_NxD, b_NxD) -> np.ndarray:
        """bool[N]: rows of `a_NxD` and `b_NxD` decode to networks of the same shapes."""
        if self.task is not None:  # the same static values
            return np.array([a == b for a, b in zip(self._statics(a_NxD), self._statics(b_NxD))], bool)
        return np.all(self._signature(a_NxD) == self._signature(b_NxD), axis=1)

    def _warm_states(self, warm: Warm, positions_SxD) -> list:
        """A task's states to train on at `positions_SxD`: each member's warm state where its static values did
        not change, else None (it starts fresh)."""
        if warm.variables is None:
            return [None] * len(positions_SxD)
        kept = self._same_architecture(np.asarray(warm.signature), np.asarray(positions_SxD))
        return [st if keep else None for st, keep in zip(warm.variables, kept)]

    def _statics(self, positions_SxD) -> list[tuple]:
        """Each member's static signature (a task's), from the engine's grouping of the swarm."""
        out: list = [None] * len(positions_SxD)
        for sig, idx in self.engine.groups(positions_SxD).items():
            for m in idx:
                out[m] = sig
        return out

    def evaluate(self, positions_SxD, r: int = 0) -> train.Metrics:
        """Trains the S members at `positions_SxD` from fresh weights with round r's keys; returns their `Metrics`.

        No strategy moves and nothing is written: the engine alone, e.g. for a batch of Optuna
        trials (`strategies.optimize_batches`). `r` picks the keys (any integer, e.g. the batch's
        first trial number); the same positions and `r` train the same members.
        """
        positions = jnp.asarray(positions_SxD, jnp.float32)
        want = (self.config.swarm_size, self.space.num_dims)
        if positions.shape != want:
            raise ValueError(f"evaluate trains the study's swarm: positions of shape {want}, got {positions.shape}")
        keys, _ = round_keys(self.key, r, self.config.swarm_size)
        metrics, _ = self.program.run(keys, positions, self.data)
        return jax.tree.map(np.asarray, metrics)

    def compile(self, state, warm: Warm | None) -> float:
        """Compiles the round's program ahead of the first round; returns the seconds it took."""
        if self.config.schedule != "none" or self.task is not None:  # compiled as the rounds reach them
            return 0.0
        keys, _ = round_keys(self.key, 0, self.config.swarm_size)
        positions = self.strategy.ask(state)
        if warm is None:
            return self.program.compile(keys, positions, self.data, None)
        variables = self.program.init_state(keys, positions)
        return self.program.compile(keys, positions, self.data, variables, jnp.zeros(self.config.swarm_size, bool))

    # -- the loop: host work around the rounds -------------------------------

    def run(self, resume: bool = False, on_round: Callable[[dict], Any] | None = None) -> StudyResult:
        """Runs (or, with `resume`, continues) the study and retrains its winner.

        Args:
          resume: continue from the newest checkpoint in `out_dir`.
          on_round: called with each round's summary (the rounds.jsonl row)
            after the round's results and checkpoint are written.

        Returns:
          A `StudyResult`.
        """
        cfg, t_start = self.config, time.perf_counter()
        state = initial_state(self.key, self.strategy, cfg.init, cfg.swarm_size, self.space.num_dims)
        warm = Warm(None, None) if cfg.mode == "warm" else None
        start, stale, best_seen = 0, 0, -np.inf
        ckpt = lock = None
        if self.out_dir is not None:
            lock = self._prepare_out_dir(resume)  # the folder's lock: one study writes there at a time
        try:
            if self.out_dir is not None:
                ckpt = results.Checkpointer(self.out_dir / "checkpoints")
                if resume:
                    start, state, warm, stale, best_seen = self._restore(ckpt, state, warm)
                    self._log(f"resuming at round {start} ({start} of {cfg.rounds} rounds done)")
            compile_s = 0.0
            if start >= cfg.rounds:  # a finished study resumed (e.g. to retrain): nothing to compile
                self._log(f"all {cfg.rounds} rounds are in the checkpoint; no training rounds to run")
            elif self.task is not None:
                self._log(f"{cfg.swarm_size} members, {self.space.num_dims} dims: each static signature's "
                          "programs compile when the swarm first reaches it")
            else:
                compile_s = self.compile(state, warm)
                self._log(f"compiled the swarm program in {compile_s:.1f}s ({cfg.swarm_size} members, "
                          f"{self.space.num_dims} dims, mode {cfg.mode}; {self.program.describe(cfg.swarm_size)})")
            bar = _progress(cfg.rounds, start, self.progress)
            r = start
            for r in range(start, cfg.rounds):
                t0 = time.perf_counter()
                positions = self.strategy.ask(state)
                state, warm, metrics = self.round(r, state, warm)
                metrics = jax.tree.map(np.asarray, metrics)
                seconds = time.perf_counter() - t0
                best_fitness = float(self.strategy.best(state)[1])
                stale = 0 if best_fitness > best_seen else stale + 1
                best_seen = max(best_seen, best_fitness)
                summary = self._summary(r, state, metrics, seconds)
                rows = self._evaluation_rows(r, positions, metrics, seconds)
                self.evaluations.extend(rows)
                if self.out_dir is not None:
                    if execute.is_primary():  # multi-host: every process runs the loop, one writes
                        results.append_jsonl(self.out_dir / results.EVALUATIONS, rows)
                        results.append_jsonl(self.out_dir / results.ROUNDS, [summary])
                    ckpt.save(r + 1, self._checkpoint_tree(state, warm, stale, best_seen))
                    if execute.is_primary():  # after the checkpoint: the record never runs ahead of it
                        self.optuna_record.sync(self.evaluations)
                self._round_line(bar, summary)
                if on_round is not None:
                    on_round(summary)
                if cfg.patience is not None and stale >= cfg.patience:
                    self._log(f"no improvement for {stale} rounds: stopping early after round {r}")
                    break
            if bar is not None:
                bar.close()
            rounds_run = (r + 1) if cfg.rounds > start else start
            best_position, best_fitness = (np.asarray(b) for b in self.strategy.best(state))
            best_config = self.space.to_python(best_position)
            best_fitness = float(best_fitness)
            status = "ok" if np.isfinite(best_fitness) else "all_diverged"
            test_acc = model = None
            if cfg.retrain and status == "ok":
                _, model = self.retrain_model(best_position)
                test_acc = model.metrics.get("test_accuracy")  # None without test rows (or a task's accuracy)
            wall = time.perf_counter() - t_start
            if self.out_dir is not None and execute.is_primary():
                if model is not None:
                    model.save(self.out_dir)
                self._write_best(best_position, best_config, best_fitness, test_acc, rounds_run, compile_s, status,
                                 None if model is None else model.metrics)
            if ckpt is not None:
                ckpt.close()
            if status == "ok" and self.task is not None:
                objective = self.task.objective
                value = best_fitness if objective.direction == "max" else -best_fitness
                tested = "" if model is None or not model.metrics else "; after retrain " + ", ".join(
                    f"{k} {v:.4g}" for k, v in model.metrics.items())
                self._log(f"best {objective.metric} {value:.4g} with {best_config}{tested}")
            elif status == "ok":
                self._log(f"best {cfg.fitness} {best_fitness:.4f} with {best_config}"
                          + (f"; test accuracy after retrain {test_acc:.4f}" if test_acc is not None else ""))
            else:
                self._log(f"every evaluation of the {rounds_run} round(s) diverged: no configuration to retrain")
            return StudyResult(best_config, best_fitness, test_acc, rounds_run, wall, self.out_dir, status, model,
                               None if model is None else model.metrics)
        finally:
            if lock is not None:
                lock.release()  # also when a round raises: a later run or --resume may take the folder

    def retrain(self, position_D) -> float:
        """Trains the configuration at `position_D` on train+val; returns its test accuracy (None without
        test rows)."""
        return self.retrain_model(position_D)[1].metrics["test_accuracy"]

    def retrain_metrics(self, position_D, dataset: Dataset | None = None) -> train.Metrics:
        """`retrain_model`'s `Metrics` (the test set's in the validation fields)."""
        return self.retrain_model(position_D, dataset)[0]

    def retrain_model(self, position_D, dataset: Dataset | None = None):
        """`retrain_model` with the study's settings (`retrain_epochs`) on `dataset` (default: the study's).

        The winner trains as its real-size network, the same function as its
        masked member without the padding; `dataset` may be, e.g., the full
        training set when the search ran on a part of it.
        """
        epochs = self.config.retrain_epochs or self.config.epochs
        if self.task is not None:
            return self._retrain_task(position_D, epochs)
        return retrain_model(
            self.space, self.dataset if dataset is None else dataset, position_D, seed=self.config.seed,
            epochs=epochs, batch_size=self.config.batch_size, fitness=self.config.fitness,
            on_epoch=_retrain_progress(epochs, self._log) if self.progress else None, log=self._log,
            hyperparameters={**self.trained_with(position_D), "epochs": epochs})

    def _retrain_task(self, position_D, epochs: int):
        """A task's winner retrained alone on train + val: ``(its test metrics or None, TaskModel)``."""
        static, hp = self.engine.hyperparameters(position_D)
        self._log(f"retraining {static or 'the winner'} for {epochs} epochs on train + val")
        key = jax.random.fold_in(jax.random.key(self.config.seed), RETRAIN_FOLD)
        state, test = fit_winner(self.task, static, hp, key, epochs)
        hyperparameters = {**self.trained_with(position_D), "epochs": epochs}
        return test, TaskModel(self.task, static, hp, state, hyperparameters, test,
                               task_path=(self.settings or {}).get("task"))

    # -- helpers -----------------------------------------------------------

    def _restore(self, ckpt: results.Checkpointer, state, warm: Warm | None):
        """The newest checkpoint's ``(rounds done, strategy state, warm, stale, best_seen)``; results cut to it."""
        template = self._checkpoint_tree(state, warm)
        if warm is not None and self.task is not None:  # the members' states are of the groups they were in
            def template(saved: dict, base=template) -> dict:
                if "arch" not in saved:
                    return base
                return {**base, "variables": results.keys_as_data(self.engine.state_shapes(saved["arch"])),
                        "arch": saved["arch"]}
        try:
            restored = ckpt.restore_latest(template, self._log)
        except results.CheckpointError as e:
            raise StudyError(f"cannot resume {self.out_dir}: {e}") from None
        if restored is None:  # killed before its first checkpoint: rows of round 0 may be there already
            for name in (results.EVALUATIONS, results.ROUNDS):
                results.truncate_rounds(self.out_dir / name, 0)
            return 0, state, warm, 0, -np.inf
        start, tree = restored
        if warm is not None and self.task is not None and "variables" in tree:  # its PRNG keys typed again
            warm = Warm(results.keys_from_data(tree["variables"], self.engine.state_shapes(tree["arch"])), tree["arch"])
        elif warm is not None:
            warm = Warm(tree["variables"], tree["arch"])
        for name in (results.EVALUATIONS, results.ROUNDS):
            results.truncate_rounds(self.out_dir / name, start)
        self.evaluations = results.read_jsonl(self.out_dir / results.EVALUATIONS)
        if execute.is_primary():  # the one process that writes the record
            self._check_record(start, {results.EVALUATIONS: self.evaluations,
                                       results.ROUNDS: results.read_jsonl(self.out_dir / results.ROUNDS)})
        state = strategies.from_checkpoint(state, tree[self.strategy.name])
        return start, state, warm, int(tree["stale"]), float(tree["best_seen"])

    def _check_record(self, rounds: int, rows_of: dict[str, list[dict]]) -> None:
        """Refuses to continue when the result files (`rows_of`: file name -> its rows) lack rows of the
        `rounds` the checkpoint holds (a line removed or lost): the study would end with a record that
        silently misses evaluations."""
        per_round = {results.EVALUATIONS: self.config.swarm_size, results.ROUNDS: 1}
        for name, rows in rows_of.items():
            have = [sum(r["round"] == k for r in rows) for k in range(rounds)]
            short = [k for k, n in enumerate(have) if n != per_round[name]]
            if short:
                raise StudyError(f"cannot resume {self.out_dir}: its checkpoint holds {rounds} round(s) but {name} "
                                 f"has {len(rows)} of their {rounds * per_round[name]} rows (round {short[0]} has "
                                 f"{have[short[0]]} of {per_round[name]}); the record was cut or edited, so "
                                 "continuing would leave it incomplete: restore the file, or start a new study")

    def _write_best(self, position, config, fitness, test_accuracy, rounds_run, compile_seconds,
                    status, test_metrics=None) -> None:
        objective = None if self.task is None else self.task.objective
        task = {} if objective is None else {  # the fitness is the objective, negated when minimized
            "fitness": objective.metric if objective.direction == "max" else f"-{objective.metric}",
            "objective": objective._asdict(),
            "best_value": None if fitness is None else fitness if objective.direction == "max" else -fitness,
            "test_metrics": test_metrics,
            "programs": {"compiled": self.engine.stats["compiles"],
                         "signatures": [dict(sig) for sig in self.engine.stats["signatures"]],
                         "memory_limited_calls": [{"static": dict(sig), "members": n}
                                                  for sig, n in self.engine.stats["call_limits"].items()]}}
        results.write_json(self.out_dir / results.BEST, {
            "status": status, "best_config": config, "best_fitness": fitness, "fitness": self.config.fitness,
            "hyperparameters": self.trained_with(position), "test_accuracy": test_accuracy,
            "rounds_run": rounds_run, "position": position.tolist(), "compile_seconds": compile_seconds,
            **task})  # a task's "fitness" replaces the config's
        results.write_csv(self.out_dir / results.EVALUATIONS, self.out_dir / results.CSV)
        results.plot(self.out_dir)

    def _refuse_huge(self) -> None:
        devices = len(jax.devices())
        capacity = execute.device_memory_bytes()
        if self.config.memory_cap_gb is not None:
            capacity = min(capacity, int(self.config.memory_cap_gb * 2**30))
        est = self.memory_estimate
        per_device = est["shared"] + -(-self.config.swarm_size // devices) * est["per_member"]
        if per_device > HUGE_FACTOR * capacity and not self.config.allow_huge:
            raise StudyError(
                f"a swarm of {self.config.swarm_size} needs an estimated {per_device / 2**30:.3g} GiB per device, "
                f"{per_device / capacity:.0f} times the {capacity / 2**30:.3g} GiB it may use "
                f"({devices} device(s)): it would train in as many chunks one after another; "
                "use a smaller swarm, more devices, or allow_huge=True (--allow-huge) to run it anyway")

    def trained_with(self, position_D) -> dict:
        """Every hyperparameter a member at `position_D` trains with, tuned or default.

        `SearchSpace.to_python` names only what the space tunes; this adds what the
        family and `optim` fill in (e.g. the Adam that a space without an
        optimizer choice trains with, its momentum and learning-rate decay).
        """
        if self.task is not None:  # what the space tunes; the task's own code holds the rest
            return {**self.space.to_python(np.asarray(position_D, np.float32)), "epochs": self.config.epochs,
                    **({"batch_size": self.task.batch_size} if isinstance(self.task, Task) else {})}
        arch, hp = self.program.hparams(jnp.asarray(position_D, jnp.float32))
        hp = jax.tree.map(np.asarray, hp)
        return {**self.family.arch_to_python(jax.tree.map(np.asarray, arch)),
                "optimizer": optimizer_names(self.space)[int(hp.optimizer)],
                **{name: float(getattr(hp, name)) for name in hp._fields if name != "optimizer"},
                "epochs": self.config.epochs, "batch_size": self.config.batch_size}

    def _signature(self, positions_SxD) -> np.ndarray:
        arch_S, _ = self._decode_swarm(positions_SxD)
        return self.family.signature(arch_S)

    def _summary(self, r, state, metrics, seconds) -> dict:
        finite = metrics.fitness[~metrics.diverged & np.isfinite(metrics.fitness)]  # diverged members left out
        best_position, best_fitness = self.strategy.best(state)
        return {
            "round": r, "best_fitness": float(best_fitness),
            "best_config": self.space.to_python(np.asarray(best_position)),
            "median_fitness": float(np.median(finite)) if finite.size else None,
            "round_best_fitness": float(np.max(finite)) if finite.size else None,
            "diverged": int(metrics.diverged.sum()), "seconds": seconds,
            **({} if self.config.schedule in ("none", "pbt") else
               {"rungs": self.last_rungs["rungs"], "survivors": self.last_rungs["survivors"]}),
            **({"exploits": self.last_pbt["exploits"]} if self.config.schedule == "pbt" else {}),
            **({} if self.task is None else {"programs_compiled": self.engine.stats["compiles"]}),
        }

    def _checkpoint_tree(self, state, warm: Warm | None, stale=0, best_seen=-np.inf):
        tree: dict[str, Any] = {
            self.strategy.name: strategies.to_checkpoint(state),  # "pso": the PSOState's fields, as always
            "stale": np.asarray(stale, np.int32),
            "best_seen": np.asarray(best_seen, np.float32),
        }
        if warm is not None and self.task is not None:  # each member's state, and where it was trained
            if warm.variables is not None:
                tree["variables"] = [results.keys_as_data(st) for st in warm.variables]
                tree["arch"] = np.asarray(warm.signature, np.float32)
        elif warm is not None:
            if warm.variables is None:  # a template for restore: shapes only matter
                keys, _ = round_keys(self.key, 0, self.config.swarm_size)
                positions = self.strategy.ask(state)
                tree["variables"] = self.program.init_state(keys, positions)
                tree["arch"] = np.zeros_like(self._signature(positions), np.int64)
            else:
                tree["variables"] = self.program.unpad(warm.variables)
                tree["arch"] = np.asarray(warm.signature)
        return tree

    def _evaluation_rows(self, r, positions, metrics, seconds):
        rows = []
        pbt = self.config.schedule == "pbt"
        pos = np.asarray(self.last_pbt["positions"] if pbt else positions)  # PBT: where each member ended
        for i in range(self.config.swarm_size):
            if isinstance(metrics, TaskMetrics):  # your task's metrics, by name
                measured = {"metrics": {name: float(v[i]) for name, v in metrics.values.items()}}
            else:
                measured = {"val_accuracy": float(metrics.val_accuracy[i]),
                            "best_val_accuracy": float(metrics.best_val_accuracy[i]),
                            "val_loss": float(metrics.val_loss[i])}
            rows.append({
                "round": r, "particle": i, "config": self.space.to_python(pos[i]),
                "fitness": float(metrics.fitness[i]), **measured, "diverged": bool(metrics.diverged[i]),
                **({} if isinstance(metrics, TaskMetrics) else
                   {"fold_fitness": np.asarray(metrics.fold_fitness[i]).tolist()}),
                "seconds": seconds / self.config.swarm_size,
                "position": dict(zip(self.space.dim_names, pos[i].tolist())),
            })
            if pbt:  # every epoch; [epoch, member] for each copy this member took
                rows[-1].update(epochs=self.config.epochs, copied_from=self.last_pbt["copied_from"][i])
            elif self.config.schedule != "none":  # the epochs this member trained, and the rung it stopped at
                rows[-1].update(epochs=int(self.last_rungs["epochs"][i]), rung=int(self.last_rungs["rung"][i]))
        return rows

    def _prepare_out_dir(self, resume: bool) -> results.FolderLock | None:
        """Creates `out_dir`, takes its lock, checks it and (not resuming) writes study.json.

        Returns:
          The folder's lock for `run` to release (None on a non-primary host).

        Raises:
          results.FolderLocked: another process runs a study in `out_dir`.
          StudyError: `out_dir` is not writable, holds a study (no `resume`) or no checkpoints (`resume`).
        """
        out, lock = self.out_dir, None
        try:
            try:
                out.mkdir(parents=True, exist_ok=True)
                # Before anything reads or writes the folder. Multi-host: only the primary
                # writes results, so only it locks (on a shared disk the others would be refused).
                lock = results.lock_folder(out) if execute.is_primary() else None
                probe = out / ".write-test"
                probe.write_text("")
                probe.unlink()
            except OSError as e:
                raise StudyError(f"cannot write to the output directory {out}: {e.strerror or e}") from None
            existing = (out / results.EVALUATIONS).exists()
            if resume and not (out / "checkpoints").exists():
                raise StudyError(f"--resume: {out} holds no checkpoints to resume from")
            if not resume and existing:
                raise StudyError(f"{out} already holds a study; resume it (resume=True, or --resume DIR on the "
                                 "command line) or choose a new directory")
            if resume:
                self._check_same_study(out / results.STUDY)
                leftovers = model_leftovers(out) if execute.is_primary() else []
                for folder in leftovers:  # a model save killed mid-way: this run saves the model again
                    shutil.rmtree(folder, ignore_errors=True)
                if leftovers:
                    self._log(f"removed {len(leftovers)} leftover model folder(s) of a save that was cut short "
                              f"({', '.join(f.name for f in leftovers)})")
            if not resume:
                results.write_json(out / results.STUDY, {
                    **self._record(), "settings": self.settings,
                    "layout": {"name": "task" if self.layout is None else self.layout.name,
                               "reason": self.layout_reason},
                    "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]})
        except BaseException:
            if lock is not None:
                lock.release()  # a refused start leaves the folder free
            raise
        return lock

    def _record(self) -> dict:
        """What study.json records of this study (before the layout's choice and the machine's)."""
        if self.task is not None:
            task = self.task
            return {"config": dataclasses.asdict(self.config), "dataset": "task",
                    "data_source": (self.settings or {}).get("task"),
                    "data_digest": data_digest(task.data) if isinstance(task, Task) else task.fingerprint,
                    "space": repr(self.space), "objective": task.objective._asdict(),
                    "batch_size": task.batch_size if isinstance(task, Task) else None}
        return {"config": dataclasses.asdict(self.config), "dataset": self.dataset.name,
                "data_source": self.dataset.origin, "data_digest": _digest(self.dataset), "space": repr(self.space),
                "train": self.train_config._asdict()}

    def _check_same_study(self, path: Path) -> None:
        """Refuses to resume a study other than the one `path` (its study.json) records: a checkpoint of
        one space, data or setting continued under another would mix two studies in one record."""
        try:
            saved = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise StudyError(f"cannot resume {path.parent}: its {path.name} is missing or unreadable "
                             f"({type(e).__name__}), so nothing says which study its checkpoints belong to") from None
        now = json.loads(json.dumps(results.clean(self._record())))
        differ = []
        for key in ("dataset", "data_source", "data_digest", "space"):
            if key in saved and saved[key] != now[key]:  # a study.json from before the digest has none
                differ.append(f"{key} {saved.get(key)!r} there, {now[key]!r} now")
        old = saved.get("config") if isinstance(saved.get("config"), dict) else {}
        for name, value in now["config"].items():
            if name not in RESUMABLE and name in old and old[name] != value:
                differ.append(f"{name} {old[name]!r} there, {value!r} now")
        if differ:
            raise StudyError(f"cannot resume {path.parent}: it holds another study ({'; '.join(differ)}); resume "
                             f"with the settings it started with (only {', '.join(RESUMABLE)} may change) or "
                             "choose a new directory")

    def _log(self, msg: str) -> None:
        if self.progress:
            tqdm.write(msg)

    def _round_line(self, bar, s: dict) -> None:
        if bar is None:
            return
        cfg = ", ".join(f"{k}={_short(v)}" for k, v in s["best_config"].items())
        bar.update(1)
        bar.set_postfix(best=f"{s['best_fitness']:.4f}")
        # Rounds are numbered from 0 here as in the results files; the count says how far along.
        round_max = "-" if s["round_best_fitness"] is None else f"{s['round_best_fitness']:.4f}"
        bar.write(f"round {s['round']} ({s['round'] + 1}/{self.config.rounds} done)  best {s['best_fitness']:.4f}  "
                  f"round max {round_max}  diverged {s['diverged']}  {s['seconds']:.1f}s  | {cfg}")


def _check_task_config(config: StudyConfig) -> None:
    """Refuses the settings a study of your own task does not serve yet, in one line each."""
    if config.fitness != "accuracy":
        raise ValueError(f"fitness {config.fitness!r}: a task's fitness is its objective (Task.objective)")
    if config.layout != DEFAULT_LAYOUT:
        raise ValueError(f"layout {config.layout!r}: your own task trains in its own programs grouped by static "
                         f"values (it takes layout {DEFAULT_LAYOUT!r})")


def _task_program(engine, description: str) -> SwarmProgram:
    """A task engine as the study's round calls a layout's program. Its states are a list of the members'
    own (opaque, each its static group's shapes); None marks a member that starts fresh at the span."""
    def run(keys_S, positions_SxD, data, state=None, keep_S=None):
        return span(keys_S, positions_SxD, data, None, 0, engine.epochs)[0], None

    def span(keys_S, positions_SxD, data, states, start, num_epochs, shuffle_key=None):
        S = len(positions_SxD)
        states = [None] * S if states is None else states
        fresh = np.array([st is None for st in states])
        fitness, values, final = np.zeros(S, np.float32), {}, [None] * S
        for part in (np.flatnonzero(fresh), np.flatnonzero(~fresh)):  # new members, then continuing ones
            if len(part):
                result = engine.train(keys_S[part], np.asarray(positions_SxD)[part],
                                      None if fresh[part[0]] else [states[m] for m in part], num_epochs)
                fitness[part] = result.fitness
                for name, v in result.metrics.items():
                    values.setdefault(name, np.zeros(S, np.float32))[part] = v
                for j, m in enumerate(part):
                    final[m] = result.states[j]
        return TaskMetrics(fitness, ~np.isfinite(fitness), values), final

    def unavailable(*_args, **_kwargs):
        raise NotImplementedError("a task's swarm keeps no warm weights between rounds")

    return SwarmProgram(compile=lambda *a: 0.0, run=run, place=lambda data: data, init_state=unavailable,
                        unpad=unavailable, describe=lambda S: description, hparams=unavailable,
                        start_span=lambda keys_S, positions_SxD, data, *_: [None] * len(positions_SxD), span=span)


def _take_members(states, index):
    """The members at `index` of a span's states: stacked (a layout's) or a list (a task's)."""
    return [states[i] for i in index] if isinstance(states, list) else train.take_members(states, index)


def _kept(warm: Warm, signature: np.ndarray) -> np.ndarray:
    """bool[S]: the members whose warm weights belong to the architecture they now decode to (`signature`)."""
    if warm.signature is None:
        return np.zeros(len(signature), bool)
    return np.all(np.asarray(warm.signature) == signature, axis=1)


def _empty_curves(S: int, E: int) -> dict[str, np.ndarray]:
    """A schedule's per-epoch `Metrics` curves of S members over E epochs, NaN where a member did not train."""
    return {f: np.full((S, E), np.nan, np.float32) for f in ("train_loss", "val_accuracy_curve")}


def _best_of(curves: dict[str, np.ndarray], diverged) -> np.ndarray:
    """``Metrics.best_val_accuracy`` from a schedule's curves: the best epoch's, 0 for a diverged member."""
    return np.where(diverged, 0.0, np.nanmax(curves["val_accuracy_curve"], axis=1)).astype(np.float32)


def _retrain_progress(epochs: int, log: Callable[[str], None]) -> Callable:
    """An `on_epoch` for `train.make_dense_train` that logs each epoch of a retrain (its data: train+val vs test)."""
    def on_epoch(epoch, train_loss, test_accuracy):
        log(f"retrain epoch {int(epoch) + 1}/{epochs}: train loss {float(train_loss):.4f}, "
            f"test accuracy {float(test_accuracy):.4f}")
    return on_epoch


def _short(v):
    return f"{v:.3g}" if isinstance(v, float) else v


def _progress(total: int, start: int, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, initial=start, desc="rounds", unit="round", dynamic_ncols=True)


def tune(space: SearchSpace | None, dataset: Dataset, *, out_dir=None, progress=True,
         resume=False, **config) -> StudyResult:
    """Runs a PSO study in one call: `tune(space, dataset, swarm_size=16, rounds=8, ...)`.

    `dataset` is a `data.Dataset` for the built-in networks or your own `task.Task`. Keyword arguments are
    `StudyConfig` fields; `space=None` uses the task's space, or `models.mlp_space()`.
    """
    if space is None and isinstance(dataset, (Task, TrainingLoop)):
        if dataset.space is None:
            raise ValueError("tune(None, task): give the space to search, or set the task's space (Task.space)")
        space = dataset.space
    study = Study(space or mlp_space(), dataset, StudyConfig(**config), out_dir, progress)
    return study.run(resume=resume)


def load_result(out_dir) -> dict:
    """Reads a finished study's best.json."""
    return json.loads((Path(out_dir) / results.BEST).read_text())
