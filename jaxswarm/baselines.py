"""Sequential tuners on the SAME objective as the swarm, for honest comparisons.

Every tuner here proposes one configuration at a time and trains it with
`train.make_dense_train`: the same data arrays, decoding, training loop,
optimizer code, epochs and fitness as a swarm study (`tuner.Study`), but the
network is dense at the configuration's real size and compiled once per
configuration, which is what a tuner that builds each trial's model pays.
Compile time therefore counts for every tuner, exactly as it does for the
swarm (whose one program compiles once per study).

Tuners (the registry `TUNERS`):

  grid      a grid over the unit box: Int/Choice dims at their bin centres
            (all values when there are at most `r` of them), Float dims at `r`
            bin centres, with the resolution `r` the smallest whose number of
            DISTINCT configurations (inactive conditional dims collapsed)
            reaches the budget. The grid is visited in a seeded random order
            and truncated at the budget, so a truncated grid is an unbiased
            subset rather than one corner of the box.
  random    independent uniform points of the unit box (numpy, seeded).
  tpe       Optuna's TPESampler with its defaults (seeded). The space is given
            to Optuna natively, define-by-run: `Float` -> suggest_float,
            `Int` -> suggest_int, `Choice` -> suggest_categorical (log scales
            kept), and a conditional parameter is suggested only when its
            `when` holds, so TPE never models units of absent layers. The
            suggested values are encoded back with `SearchSpace.encode`.
  gp        Optuna's GPSampler, same encoding (needs PyTorch; absent here ->
            `BaselineError`).
  optunity  Optunity's particle swarm, as shipped (`optunity.solvers.
            ParticleSwarm` through `optunity.optimize`), over the unit box.
            Its particles' personal best ALIASES the current position
            (`part.best = part.position`, then the position is updated in
            place), so the cognitive term is always zero: the swarm only
            follows the global best. Like `optunity.maximize`, a proposal
            outside the box gets the worst score without being trained (not
            counted as an evaluation). Optunity draws from Python's global
            `random`; it is seeded with `seed` and restored afterwards.
  pso       jaxswarm's own PSO (`pso.make_pso`, maximin LHS start), run
            sequentially: the members of a round are trained one after
            another, then one `tell`. Keys and initial design are derived
            exactly as in `tuner.Study`, so this is the swarm study's
            algorithm with the vectorization taken away.

Budget and time: `budget` counts trained configurations (exactly; a tuner may
stop earlier only when it has nothing left to propose, e.g. a finished grid).
`time_limit` (seconds since the start of `run_baseline`, set-up and compiles
included) is checked BEFORE each evaluation: an evaluation that has started
always finishes, so the search may overrun the limit by at most one
evaluation (`BaselineResult.search_time` is what it really took).

Results are written like a swarm study's (`report`): evaluations.jsonl (one
row per evaluation), rounds.jsonl (one row per evaluation: best so far, time),
best.json, evaluations.csv, study.json, progress.png. Test accuracy comes
from retraining the best configuration on train+val with the key
`fold_in(key(seed), 2**30)`, as `tuner.Study.retrain` does.

Example:
    >>> from jaxswarm.data import load_dataset
    >>> from jaxswarm.space import mlp_space
    >>> ds = load_dataset("digits")
    >>> res = run_baseline("random", mlp_space(max_layers=1, units=(4, 16)), ds,
    ...                    budget=2, epochs=1, progress=False)  # doctest: +SKIP
    >>> res.evaluations  # doctest: +SKIP
    2
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random as _py_random
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm import report, sampling, train
from jaxswarm import pso as pso_lib
from jaxswarm.data import Dataset
from jaxswarm.space import Choice, Float, Int, SearchSpace

__all__ = ["TUNERS", "BaselineError", "BaselineResult", "Trial", "run_baseline", "retrain_accuracy",
           "grid_positions", "add_parser", "main"]

TUNERS = ("grid", "random", "tpe", "gp", "optunity", "pso")

# Key of the final retrain: the same as tuner.Study.retrain.
_RETRAIN_FOLD = 2**30
# Keys of single evaluations (grid/random/optuna/optunity): fold_in(fold_in(key, this), i).
_EVAL_FOLD = 2**29
# Largest grid enumerated while choosing the grid's resolution.
_MAX_GRID = 200_000


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


class _Stop(Exception):
    """Raised by the evaluator when the budget or the time limit is reached."""


# ---------------------------------------------------------------------------
# the common driver
# ---------------------------------------------------------------------------


def _train_config(space: SearchSpace, epochs: int, batch_size: int, fitness: str) -> train.TrainConfig:
    from jaxswarm.tuner import architecture_limits

    max_layers, max_units = architecture_limits(space)
    return train.TrainConfig(epochs=epochs, batch_size=batch_size, max_layers=max_layers,
                             max_units=max_units, fitness=fitness)


def retrain_accuracy(space: SearchSpace, dataset: Dataset, position_D, *, seed: int = 0, epochs: int = 10,
            batch_size: int = 64, fitness: str = "accuracy") -> float:
    """Trains the configuration at `position_D` densely on train+val; returns its test accuracy.

    Same key as `tuner.Study.retrain` (`fold_in(key(seed), 2**30)`).

    Example:
        >>> acc = retrain_accuracy(space, ds, space.encode(best_config), seed=0)  # doctest: +SKIP
    """
    cfg = _train_config(space, epochs, batch_size, fitness)
    x_train = dataset.x_train.reshape(len(dataset.x_train), -1)
    dense = train.make_dense_train(space, cfg, x_train.shape[1], dataset.num_classes,
                                   input_shape=dataset.input_shape)
    data = train.device_data(np.concatenate([dataset.x_train, dataset.x_val]),
                             np.concatenate([dataset.y_train, dataset.y_val]),
                             dataset.x_test, dataset.y_test)
    key = jax.random.fold_in(jax.random.key(seed), _RETRAIN_FOLD)
    m = dense.train_position(key, jnp.asarray(position_D, jnp.float32), data)
    return float(m.val_accuracy)


class _Evaluator:
    """Trains one position at a time, keeps the bookkeeping, enforces budget and time limit."""

    def __init__(self, space, dataset, cfg, seed, budget, time_limit, out_dir, t_start, bar):
        self.space, self.budget, self.time_limit = space, budget, time_limit
        self.out_dir, self.t_start, self.bar = out_dir, t_start, bar
        x_train = dataset.x_train.reshape(len(dataset.x_train), -1)
        self.dense = train.make_dense_train(space, cfg, x_train.shape[1], dataset.num_classes,
                                   input_shape=dataset.input_shape)
        self.data = train.device_data(dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val)
        self.key = jax.random.key(seed)
        self.eval_key = jax.random.fold_in(self.key, _EVAL_FOLD)
        self.trials: list[Trial] = []
        self.history: list[tuple[float, float, int]] = []
        self.best: Trial | None = None
        self.stop_reason = "exhausted"

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def check(self) -> None:
        """Raises _Stop if no further evaluation may start."""
        if self.budget is not None and len(self.trials) >= self.budget:
            self.stop_reason = "budget"
            raise _Stop
        if self.time_limit is not None and self.elapsed() >= self.time_limit:
            self.stop_reason = "time_limit"
            raise _Stop

    def __call__(self, position_D, key=None, round_=None, particle=0) -> float:
        self.check()
        i = len(self.trials)
        u = np.clip(np.asarray(position_D, np.float32), 0.0, 1.0)
        if key is None:
            key = jax.random.fold_in(self.eval_key, i)
        t0 = time.perf_counter()
        m = jax.tree.map(np.asarray, self.dense.train_position(key, jnp.asarray(u), self.data))
        seconds = time.perf_counter() - t0
        fitness = float(m.fitness)
        trial = Trial(i, self.elapsed(), fitness, float(m.val_accuracy), u, self.space.to_python(u))
        self.trials.append(trial)
        if np.isfinite(fitness) and (self.best is None or fitness > self.best.fitness):
            self.best = trial
        best_f = self.best.fitness if self.best is not None else -math.inf
        self.history.append((trial.seconds, best_f, i + 1))
        if self.out_dir is not None:
            r = i if round_ is None else round_
            report.append_jsonl(self.out_dir / report.EVALUATIONS, [{
                "round": r, "particle": particle, "evaluation": i, "config": trial.config,
                "fitness": fitness, "val_accuracy": float(m.val_accuracy),
                "best_val_accuracy": float(m.best_val_accuracy), "val_loss": float(m.val_loss),
                "diverged": bool(m.diverged), "seconds": seconds, "time": trial.seconds,
                "position": dict(zip(self.space.dim_names, u.tolist()))}])
            report.append_jsonl(self.out_dir / report.ROUNDS, [{
                "round": i, "evaluation": i, "best_fitness": best_f,
                "best_config": self.best.config if self.best is not None else None,
                "median_fitness": fitness if np.isfinite(fitness) else None,
                "round_best_fitness": fitness, "diverged": int(bool(m.diverged)),
                "seconds": seconds, "time": trial.seconds}])
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(best=f"{best_f:.4f}", last=f"{fitness:.4f}")
        return fitness


def run_baseline(name: str, space: SearchSpace, dataset: Dataset, *, budget: int | None = None,
                 time_limit: float | None = None, seed: int = 0, epochs: int = 10,
                 batch_size: int = 64, fitness: str = "accuracy", retrain: bool = True,
                 out_dir: str | Path | None = None, progress: bool = True,
                 settings: dict | None = None, **tuner_kwargs) -> BaselineResult:
    """Runs the sequential tuner `name` on the swarm's objective until budget or time runs out.

    Args:
      name: one of `TUNERS`.
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
      **tuner_kwargs: tuner options: grid `grid_points` (target grid size when no budget,
        default 256); pso `swarm_size` (16), `init` ("lhs"), `pso` (dict of `make_pso`
        arguments), `plan_evals`; optunity `swarm_size` (None: Optunity's own suggestion),
        `plan_evals` (default: budget, else 10 x swarm size); tpe/gp `sampler_kwargs`.

    Returns:
      A `BaselineResult`.

    Raises:
      BaselineError: unknown tuner, neither budget nor time_limit, bad options, missing package.

    Example:
        >>> res = run_baseline("tpe", space, ds, budget=20, epochs=5)  # doctest: +SKIP
        >>> res.evaluations, res.test_accuracy  # doctest: +SKIP
    """
    t_start = time.perf_counter()
    if name not in TUNERS:
        raise BaselineError(f"unknown tuner {name!r}; choose one of {list(TUNERS)}")
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
    allowed = _TUNER_KWARGS[name]
    unknown = sorted(set(tuner_kwargs) - allowed)
    if unknown:
        raise BaselineError(f"tuner {name!r} takes no option(s) {unknown}; it takes {sorted(allowed)}")
    run_fn = _TUNER_FNS[name]
    _check_available(name)
    cfg = _train_config(space, epochs, batch_size, fitness)
    out = None if out_dir is None else Path(out_dir).absolute()
    if out is not None:
        _prepare_out_dir(out, {
            "tuner": name, "budget": budget, "time_limit": time_limit, "seed": seed,
            "epochs": epochs, "batch_size": batch_size, "fitness": fitness,
            "tuner_kwargs": tuner_kwargs, "dataset": dataset.name, "space": repr(space),
            "train": cfg._asdict(), "settings": settings, "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()]})
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=budget, desc=name, unit="eval", dynamic_ncols=True)
    ev = _Evaluator(space, dataset, cfg, seed, budget, time_limit, out, t_start, bar)
    try:
        run_fn(ev, space, seed, budget, **tuner_kwargs)
    except _Stop:
        pass
    finally:
        if bar is not None:
            bar.close()
    search_time = time.perf_counter() - t_start
    best = ev.best
    test_acc = None
    if retrain and best is not None:
        test_acc = retrain_accuracy(space, dataset, best.position, seed=seed, epochs=epochs,
                                    batch_size=batch_size, fitness=fitness)
    wall = time.perf_counter() - t_start
    best_config = best.config if best is not None else {}
    best_fitness = best.fitness if best is not None else -math.inf
    if out is not None:
        report.write_json(out / report.BEST, {
            "best_config": best_config, "best_fitness": best_fitness, "fitness": fitness,
            "test_accuracy": test_acc, "evaluations": len(ev.trials), "tuner": name,
            "position": None if best is None else best.position.tolist(),
            "search_seconds": search_time, "wall_seconds": wall, "stop_reason": ev.stop_reason})
        if ev.trials:
            report.write_csv(out / report.EVALUATIONS, out / report.CSV)
            report.plot(out)
    if progress:
        print(f"{name}: {len(ev.trials)} evaluations in {search_time:.1f}s ({ev.stop_reason}); "
              f"best {fitness} {best_fitness:.4f} with {best_config}"
              + (f"; test accuracy after retrain {test_acc:.4f}" if test_acc is not None else ""),
              file=sys.stderr)
    return BaselineResult(name, best_config, best_fitness, test_acc, len(ev.trials), wall,
                          search_time, ev.history, ev.trials,
                          None if best is None else best.position, out, ev.stop_reason)


def _prepare_out_dir(out: Path, info: dict) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BaselineError(f"cannot create the output directory {out}: {e.strerror or e}") from None
    if (out / report.EVALUATIONS).exists():
        raise BaselineError(f"{out} already holds a study; choose a new directory")
    report.write_json(out / report.STUDY, info)


def _check_available(name: str) -> None:
    import importlib.util

    need = {"tpe": ["optuna"], "gp": ["optuna", "torch"], "optunity": ["optunity"]}.get(name, [])
    for pkg in need:
        if importlib.util.find_spec(pkg) is None:
            why = " (Optuna's GPSampler needs PyTorch)" if pkg == "torch" else ""
            raise BaselineError(f"tuner {name!r} needs the package {pkg!r}{why}; "
                                f"install it, e.g. pip install 'jaxswarm[bench]'")


def _worst(value: float) -> float:
    """A finite stand-in for a diverged (-inf / NaN) fitness, for external tuners."""
    return value if math.isfinite(value) else -1e9


# ---------------------------------------------------------------------------
# the tuners: each calls `ev(position)` until it raises _Stop or the tuner is done
# ---------------------------------------------------------------------------


def grid_positions(space: SearchSpace, target: int, seed: int = 0) -> np.ndarray:
    """The grid tuner's positions: >= `target` distinct configs if the space has them, shuffled.

    Args:
      space: the search space.
      target: wanted number of distinct configurations.
      seed: seed of the visiting order.

    Returns:
      f32[N, D] positions, one per distinct configuration, in a seeded random order.

    Example:
        >>> grid_positions(mlp_space(max_layers=1), 8).shape[1]  # doctest: +SKIP
        3
    """
    levels_fn = lambda r: [_levels(space.params[n], r) for n in space.dim_names]
    r, prev = 1, None
    while True:
        levels = levels_fn(r)
        size = math.prod(len(lv) for lv in levels)
        if size > _MAX_GRID and prev is not None:
            levels = prev
            break
        distinct = _distinct(space, levels)
        if len(distinct) >= target or levels == prev:
            break
        prev, r = levels, r + 1
    pos = _distinct(space, levels)
    order = np.random.default_rng(seed).permutation(len(pos))
    return pos[order]


def _levels(p, r: int) -> list[float]:
    if isinstance(p, Int) and p.n <= r:
        return [p.encode(k) for k in range(p.lo, p.hi + 1)]
    if isinstance(p, Choice) and p.k <= r:
        return [p.encode(o) for o in p.options]
    return [(j + 0.5) / r for j in range(r)]


def _distinct(space: SearchSpace, levels) -> np.ndarray:
    pts = np.asarray(list(itertools.product(*levels)), np.float32).reshape(-1, space.num_dims)
    configs = space.to_python_batch(pts)
    seen, keep = set(), []
    for i, c in enumerate(configs):
        k = json.dumps(c, sort_keys=True, default=str)
        if k not in seen:
            seen.add(k)
            keep.append(i)
    return pts[keep]


def _run_grid(ev, space, seed, budget, grid_points: int | None = None):
    target = budget if budget is not None else (grid_points or 256)
    for u in grid_positions(space, target, seed):
        ev(u)


def _run_random(ev, space, seed, budget):
    rng = np.random.default_rng(seed)
    while True:
        ev(rng.random(space.num_dims).astype(np.float32))


def _suggest(trial, space: SearchSpace) -> np.ndarray:
    """Define-by-run: Optuna suggests each active param natively; returns its unit-box position."""
    values, earlier = {}, {}
    for name, p in space.params.items():
        if not p.has_dim:
            if p.is_numeric:
                earlier[name] = p.decode()
            continue
        if p.when is not None and not bool(p.when(earlier)):
            continue
        if isinstance(p, Float):
            v = trial.suggest_float(name, p.lo, p.hi, log=p.log)
        elif isinstance(p, Int):
            v = trial.suggest_int(name, p.lo, p.hi, log=p.log)
        elif isinstance(p, Choice):
            v = trial.suggest_categorical(name, list(p.options))
        else:  # pragma: no cover - no other kinds today
            raise BaselineError(f"parameter {name!r}: unsupported kind {p!r}")
        values[name] = v
        earlier[name] = p.decode(jnp.float32(p.encode(v, name)))
    return space.encode(values)


def _run_optuna(sampler_name):
    def run(ev, space, seed, budget, sampler_kwargs: dict | None = None):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        kw = {"seed": seed, **(sampler_kwargs or {})}
        sampler = (optuna.samplers.TPESampler(**kw) if sampler_name == "tpe"
                   else optuna.samplers.GPSampler(**kw))
        study = optuna.create_study(direction="maximize", sampler=sampler)
        while True:
            ev.check()
            trial = study.ask()
            u = _suggest(trial, space)
            study.tell(trial, _worst(ev(u)))

    return run


def _run_optunity(ev, space, seed, budget, swarm_size: int | None = None,
                  plan_evals: int | None = None):
    import optunity
    from optunity.solvers.ParticleSwarm import ParticleSwarm

    plan = plan_evals or budget or 10 * (swarm_size or 10)
    box = {n: [0.0, 1.0] for n in space.dim_names}
    suggestion = ParticleSwarm.suggest_from_box(plan, **box)
    particles = swarm_size or suggestion["num_particles"]
    generations = int(math.ceil(plan / particles))
    # max_speed as Optunity picks it for the planned run; the extra generations only let
    # rejected (out-of-box) proposals be made up until the budget or time limit stops us.
    solver = optunity.make_solver("particle swarm", num_particles=particles,
                                  num_generations=4 * generations, max_speed=0.7 / generations, **box)

    def f(**kw):
        u = np.asarray([kw[n] for n in space.dim_names], np.float64)
        if np.any(u < 0.0) or np.any(u > 1.0):  # optunity.maximize's hard box constraint
            ev.check()
            return -sys.float_info.max
        return _worst(ev(u.astype(np.float32)))

    state = _py_random.getstate()
    _py_random.seed(seed)
    try:
        optunity.optimize(solver, f, maximize=True, max_evals=0)
    finally:
        _py_random.setstate(state)


def _run_pso(ev, space, seed, budget, swarm_size: int = 16, init: str = "lhs",
             pso: dict | None = None, plan_evals: int | None = None):
    plan = plan_evals or budget or 10 * swarm_size
    swarm = pso_lib.make_pso(swarm_size, space.num_dims, maximize=True,
                             **{"num_iterations": max(1, -(-plan // swarm_size)), **(pso or {})})
    # Same key derivation as tuner.Study: the swarm study's algorithm, one member at a time.
    key = jax.random.key(seed)
    init_key = jax.random.fold_in(key, -1 % (2**31))
    design = sampling.initial_design(init_key, init, swarm_size, space.num_dims)
    state = swarm.init(jax.random.fold_in(init_key, 1), design)
    r = 0
    while True:
        k_train, k_tell = jax.random.split(jax.random.fold_in(key, r))
        keys = jax.random.split(k_train, swarm_size)
        positions = np.asarray(swarm.ask(state))
        fitness = [ev(positions[i], key=keys[i], round_=r, particle=i) for i in range(swarm_size)]
        state = swarm.tell(k_tell, state, jnp.asarray(fitness, jnp.float32))
        r += 1


_TUNER_FNS: dict[str, Callable] = {
    "grid": _run_grid, "random": _run_random, "tpe": _run_optuna("tpe"), "gp": _run_optuna("gp"),
    "optunity": _run_optunity, "pso": _run_pso,
}
_TUNER_KWARGS = {
    "grid": {"grid_points"}, "random": set(), "tpe": {"sampler_kwargs"}, "gp": {"sampler_kwargs"},
    "optunity": {"swarm_size", "plan_evals"}, "pso": {"swarm_size", "init", "pso", "plan_evals"},
}


# ---------------------------------------------------------------------------
# command line: `jaxswarm baseline ...` (wired into cli.py by `add_parser` / `main`)
# ---------------------------------------------------------------------------


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `baseline` subcommand to `cli.py`'s subparsers; returns its parser."""
    p = subparsers.add_parser(
        "baseline", help="run a sequential tuner (grid, random, tpe, gp, optunity, pso) on the same objective",
        description="Run a sequential tuner on the swarm's objective, one configuration at a time; "
                    "writes the same results files as `jaxswarm run`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("baseline")
    g.add_argument("--tuner", required=True, choices=TUNERS, help="which sequential tuner")
    g.add_argument("--budget", type=int, help="configurations to train")
    g.add_argument("--time-limit", type=float, help="seconds (checked between evaluations)")
    g.add_argument("--config", type=Path, help="study file (.toml, .yaml) as for `jaxswarm run`")
    g.add_argument("--dataset", help="digits | mnist | fashion_mnist  [digits]")
    g.add_argument("--data-dir", type=Path, help="directory holding MNIST-format IDX .gz files")
    g.add_argument("--out", type=Path, help="results directory  [runs/<tuner>-<dataset>-<time>]")
    g.add_argument("--epochs", type=int, help="training epochs per evaluation  [10]")
    g.add_argument("--batch-size", type=int, help="minibatch size  [64]")
    g.add_argument("--fitness", choices=("accuracy", "loss"), help="validation accuracy or minus loss  [accuracy]")
    g.add_argument("--seed", type=int, help="random seed  [0]")
    g.add_argument("--swarm-size", type=int, help="pso / optunity: particles  [pso 16, optunity its own]")
    g.add_argument("--no-retrain", dest="retrain", action="store_const", const=False,
                   help="skip the final retrain of the best config on train+val")
    g.add_argument("--val-fraction", type=float, help="share of the training set held out for validation  [0.1]")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    from jaxswarm.cli import add_space_arguments

    add_space_arguments(p.add_argument_group("search space, as for `jaxswarm run`"))
    return p


def main(args: argparse.Namespace) -> int:
    """Runs `jaxswarm baseline` from parsed arguments; returns the exit code."""
    from jaxswarm.cli import build_space, settings_from_args
    from jaxswarm.data import DatasetError, load_dataset

    cfg = settings_from_args(args)
    seed = cfg.get("seed", 0)
    out = cfg.get("out") or Path("runs") / f"{args.tuner}-{cfg['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    kwargs = {}
    if args.swarm_size is not None:
        if args.tuner not in ("pso", "optunity"):
            print(f"jaxswarm: error: --swarm-size applies to pso and optunity, not {args.tuner}", file=sys.stderr)
            return 2
        kwargs["swarm_size"] = args.swarm_size
    if args.tuner == "pso" and cfg.get("pso"):
        kwargs["pso"] = dict(cfg["pso"])
    try:
        space = build_space(cfg["space"])
        dataset = load_dataset(cfg["dataset"], data_dir=cfg.get("data_dir"),
                               val_fraction=cfg.get("val_fraction", 0.1), seed=seed)
        result = run_baseline(
            args.tuner, space, dataset, budget=args.budget, time_limit=args.time_limit, seed=seed,
            epochs=cfg.get("epochs", 10), batch_size=cfg.get("batch_size", 64),
            fitness=cfg.get("fitness", "accuracy"), retrain=cfg.get("retrain", True), out_dir=out,
            progress=not args.quiet, settings={k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()},
            **kwargs)
    except (DatasetError, BaselineError, ValueError, TypeError) as e:
        print(f"jaxswarm: error: {e}", file=sys.stderr)
        return 2
    print(f"results in {result.out_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    _p = argparse.ArgumentParser(prog="python -m jaxswarm.baselines")
    _sub = _p.add_subparsers(dest="command", required=True)
    add_parser(_sub)
    sys.exit(main(_p.parse_args(["baseline", *sys.argv[1:]])))
