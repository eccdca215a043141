"""Population strategies: what the swarm trains next, PSO one among them.

A study round trains S members at once; a `Strategy` says where they are. It
is a NamedTuple of functions over a state pytree, returned by a factory that
closes over the static configuration (as optax and evosax build theirs)::

    state = strategy.init(key, start_SxD)            # start: the study's initial design
    x_SxD = strategy.ask(state)                      # unit-box positions to train this round
    state = strategy.tell(key, state, fitness_S)     # maximized; NaN and +-inf count as worst
    position_D, fitness = strategy.best(state)       # the best evaluation so far

`STRATEGIES` holds them by name and `make_strategy` builds one for a space:

  pso            jaxswarm's PSO (`pso.make_pso`), the study's default; starts from the initial design
  random         uniform points every round ("vectorized random search")
  sobol          the next S points of one scrambled Sobol' sequence every round
  lhs            a fresh maximin Latin hypercube every round
  tpe, gp, cmaes, qmc
                 Optuna's TPESampler (constant liar), GPSampler (needs PyTorch), CmaEsSampler (needs
                 cmaes), QMCSampler: S trials asked per round on Optuna's own define-by-run space
                 (`suggest`), told back after the swarm trained them
  evosax_cma_es, evosax_de, evosax_pso
                 evosax's CMA-ES, differential evolution and PSO in the unit box (the evosax extra)

`pso`, `random` and the evosax strategies are jax functions (``jittable``);
the others run on the host. Only PSO and evosax's population-based
strategies (DE, PSO) start from ``start_SxD``; the samplers draw their own
round 0.

Checkpoints: a state is a pytree of arrays; `to_checkpoint` turns it into the
dict a study stores (flax's state dict: a NamedTuple by field names, as a
study has always stored its `pso.PSOState`) and `from_checkpoint` rebuilds
it. An Optuna strategy's record is its Optuna study (in ``out_dir/optuna.db``
when the study has a results directory, so ``optuna-dashboard`` shows it);
its trials carry user attributes ``round`` and ``member``, and `ask` and
`tell` are idempotent per round: `ask` returns the trials of the state's
round that the study already holds and asks only the missing ones, `tell`
skips the trials already told. A study resumed from the checkpoint of round
k therefore continues on the record as it is, whatever point the killed run
reached after that checkpoint. Each trial is proposed by a fresh sampler
seeded from the study's seed and the trial's number, so the resumed run
proposes what the uninterrupted one did (tested for TPE, CMA-ES and QMC).
One window is not covered: a run killed inside one Optuna ask leaves a
half-suggested trial, which the next ask marks FAIL; it takes a trial number,
so the trials after it are proposed by other seeds than in the uninterrupted
run.

Example (uniform resampling on a toy fitness, no training)::

    >>> import jax, jax.numpy as jnp
    >>> from jaxswarm.space import Float, SearchSpace
    >>> space = SearchSpace({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})
    >>> s = make_strategy("random", space, 8, rounds=5, seed=0)
    >>> state = s.init(jax.random.key(0), None)
    >>> for r in range(5):
    ...     x_SxD = s.ask(state)
    ...     state = s.tell(jax.random.key(r), state, -jnp.sum((x_SxD - 0.5) ** 2, axis=-1))
    >>> position, fitness = s.best(state)
    >>> bool(fitness > -0.1), position.shape
    (True, (2,))
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm import design
from jaxswarm import pso as pso_lib
from jaxswarm.space import Choice, Float, Int, SearchSpace

__all__ = ["Strategy", "StrategyKind", "DrawState", "OptunaState", "OptunaRecord", "EvosaxState", "STRATEGIES",
           "DEFAULT_STRATEGY",
           "OPTUNA_DB", "OPTUNA_STUDY", "make_strategy", "to_checkpoint", "from_checkpoint", "suggest",
           "optimize_batches"]

DEFAULT_STRATEGY = "pso"
OPTUNA_DB = "optuna.db"  # an Optuna strategy's record in a study's results directory
OPTUNA_STUDY = "jaxswarm"  # the Optuna study's name there


class Strategy(NamedTuple):
    """A population strategy: pure functions (host ones: see the module docstring) over a state pytree.

    Attributes:
      name: its key in `STRATEGIES`.
      init: ``init(key, start_SxD) -> state``; ``start_SxD`` is the study's initial design (only PSO
        and evosax's DE and PSO start from it).
      ask: ``ask(state) -> f32[S, D]``, the positions in the unit box to evaluate.
      tell: ``tell(key, state, fitness_S) -> state``: records the fitness of ``ask(state)`` (larger is
        better, non-finite is worst) and moves on to the next round.
      best: ``best(state) -> (f32[D], f32[])``: the best position evaluated so far and its fitness
        (-inf while nothing finite has been told).
      jittable: whether ``tell`` may go under ``jax.jit`` (``ask`` and ``best`` only index the state).
      record: what keeps the strategy's history besides its state (the Optuna study), or None.
      relocate: ``relocate(state, positions_SxD) -> state`` whose `ask` returns those positions (the
        members moved inside a round, PBT's schedule), or None where the strategy cannot take them.
    """

    name: str
    init: Callable[..., Any]
    ask: Callable[[Any], Any]
    tell: Callable[..., Any]
    best: Callable[[Any], tuple]
    jittable: bool
    record: Any = None
    relocate: Callable | None = None


class StrategyKind(NamedTuple):
    """A `STRATEGIES` entry: the factory, a line of help, the optional packages it needs."""

    make: Callable[..., Strategy]  # (space, swarm_size, *, rounds, seed, out_dir, options: dict) -> Strategy
    help: str
    packages: tuple[str, ...] = ()


def to_checkpoint(state) -> dict:
    """The state as the dict of arrays a checkpoint stores (flax's state dict of the pytree)."""
    return flax.serialization.to_state_dict(state)


def from_checkpoint(template, tree: dict):
    """The state `to_checkpoint` stored, rebuilt on the structure of `template` (e.g. a fresh `init`)."""
    return flax.serialization.from_state_dict(template, tree)


def _track_best(best_position_D, best_fitness, iteration, positions_SxD, fitness_S):
    """The best so far after one more round (jax, so it also runs under jit).

    The first round's best member is taken even when every member diverged, so `best` always
    names a position that was evaluated.
    """
    fitness_S = jnp.asarray(fitness_S, jnp.float32)
    f_S = jnp.where(jnp.isfinite(fitness_S), fitness_S, -jnp.inf)
    i = jnp.argmax(f_S)
    better = (f_S[i] > best_fitness) | (iteration == 0)
    return (jnp.where(better, jnp.asarray(positions_SxD, jnp.float32)[i], best_position_D),
            jnp.where(better, f_S[i], best_fitness))


def _start_best(num_dims: int):
    return jnp.full((num_dims,), 0.5, jnp.float32), jnp.asarray(-jnp.inf, jnp.float32)


def _no_options(name: str, options: dict) -> None:
    if options:
        raise ValueError(f"strategy {name!r} takes no strategy_options, got {sorted(options)}")


# -- PSO: today's study, unchanged -------------------------------------------------------------


def _pso_best(state: pso_lib.PSOState):
    return state.global_best_position, state.global_best_fitness


def _make_pso(space, swarm_size, *, rounds, seed, out_dir, options) -> Strategy:
    swarm = pso_lib.make_pso(swarm_size, space.num_dims, maximize=True, **{"num_iterations": rounds, **options})
    return Strategy("pso", swarm.init, swarm.ask, swarm.tell, _pso_best, jittable=True, relocate=_pso_relocate)


def _pso_relocate(state: pso_lib.PSOState, positions_SxD) -> pso_lib.PSOState:
    """The particles moved to `positions_SxD` (their velocities kept): the next tell credits those positions."""
    return state._replace(position=jnp.asarray(positions_SxD, state.position.dtype))


# -- resampling: uniform, Sobol, LHS every round -----------------------------------------------


class DrawState(NamedTuple):
    """State of a resampling strategy. Shapes: S members, D dimensions."""

    position: jax.Array  # f32[S, D] this round's points (ask returns them)
    best_position: jax.Array  # f32[D]
    best_fitness: jax.Array  # f32[] -inf before anything finite
    iteration: jax.Array  # i32[] rounds told so far
    key: jax.Array  # u32[2] key data: round r's points derive from it and r


def _uniform(key, r, n, d):
    return design.uniform(jax.random.fold_in(key, r), n, d)


def _sobol(key, r, n, d):  # one scrambled sequence for the whole study: round r is its points n r .. n (r + 1) - 1
    return design.sobol(key, n, d, skip=n * int(r))


def _lhs(key, r, n, d):
    return design.maximin_lhs(jax.random.fold_in(key, int(r)), n, d)


def _resampling(name: str, draw: Callable, jittable: bool):
    def make(space, swarm_size, *, rounds, seed, out_dir, options) -> Strategy:
        _no_options(name, options)
        n, d = swarm_size, space.num_dims

        def init(key, start_SxD=None) -> DrawState:
            return DrawState(draw(key, 0, n, d), *_start_best(d), jnp.zeros((), jnp.int32),
                             jax.random.key_data(key))

        def ask(state: DrawState):
            return state.position

        def tell(key, state: DrawState, fitness_S) -> DrawState:
            best = _track_best(state.best_position, state.best_fitness, state.iteration, state.position, fitness_S)
            it = state.iteration + 1
            return DrawState(draw(jax.random.wrap_key_data(state.key), it, n, d), *best, it, state.key)

        def best(state: DrawState):
            return state.best_position, state.best_fitness

        return Strategy(name, init, ask, tell, best, jittable)

    return make


# -- Optuna's samplers, S trials a round ---------------------------------------------------------


def suggest(trial, space: SearchSpace) -> np.ndarray:
    """Define-by-run: Optuna suggests each active parameter natively; returns the trial's unit-box position.

    `Float` -> ``suggest_float``, `Int` -> ``suggest_int`` (log scales kept), `Choice` ->
    ``suggest_categorical``; a conditional parameter is suggested only when its ``when`` holds
    for the values before it, so a sampler never models the units of an absent layer. The
    values are encoded back with `SearchSpace.encode` (an inactive coordinate at 0.5).

    Example:
        >>> import optuna  # doctest: +SKIP
        >>> study = optuna.create_study(direction="maximize")  # doctest: +SKIP
        >>> position_D = suggest(study.ask(), space)  # doctest: +SKIP
    """
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
            raise ValueError(f"parameter {name!r}: unsupported kind {p!r}")
        values[name] = v
        earlier[name] = p.decode(jnp.float32(p.encode(v, name)))
    return space.encode(values)


class OptunaState(NamedTuple):
    """State of an Optuna strategy; the trials themselves are in its record (the Optuna study)."""

    best_position: jax.Array  # f32[D]
    best_fitness: jax.Array  # f32[] -inf before anything finite
    iteration: jax.Array  # i32[] rounds told so far: ask returns the trials of this round


def _trial_seed(seed: int, number: int) -> int:
    """The seed of the sampler that proposes trial `number`: a resumed study proposes what the first run did."""
    return int(np.random.SeedSequence([int(seed) % 2**32, int(number)]).generate_state(1)[0])


# Optuna samplers: (optuna, swarm_size, study seed, trial seed, options) -> sampler.
def _tpe(optuna, S, seed, trial_seed, options):
    # constant_liar: the batch's trials still training count as bad, so one batch spreads out.
    return optuna.samplers.TPESampler(**{"constant_liar": True, **options, "seed": trial_seed})


def _gp(optuna, S, seed, trial_seed, options):
    return optuna.samplers.GPSampler(**{**options, "seed": trial_seed})


def _cmaes(optuna, S, seed, trial_seed, options):
    # One generation per round. CMA-ES models the parameters every trial has; a conditional one
    # (units of an optional layer) is sampled independently, which it would warn about every round.
    return optuna.samplers.CmaEsSampler(**{"popsize": S, "warn_independent_sampling": False, **options,
                                           "seed": trial_seed})


def _qmc(optuna, S, seed, trial_seed, options):
    # One scramble for the whole study (the sequence's position is in the study's storage); the
    # independent sampler (round 0, conditional parameters) is seeded per trial.
    with warnings.catch_warnings():  # "experimental" since Optuna 3.0, and it would say so for every trial
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(**{
            "warn_independent_sampling": False, **options, "seed": int(seed) % 2**32,
            "independent_sampler": optuna.samplers.RandomSampler(seed=trial_seed)})


class OptunaRecord:
    """The Optuna study an Optuna strategy keeps, opened on first use (a study takes its folder's lock first).

    Attributes:
      storage: the RDB URL (``sqlite:///.../optuna.db``), or None for an in-memory study.
      study: the `optuna.Study` once opened (`open`).
    """

    def __init__(self, optuna, space: SearchSpace, swarm_size: int, sampler_for: Callable[[int], Any],
                 storage: str | None, fingerprint: dict):
        self._optuna, self.space, self.swarm_size = optuna, space, swarm_size
        self._sampler_for, self.storage, self._fingerprint = sampler_for, storage, fingerprint
        self.study = None

    def open(self):
        """The Optuna study, created or (resuming) loaded from the storage.

        Raises:
          ValueError: the storage holds a study of this name made with other settings.
        """
        if self.study is None:
            optuna = self._optuna
            optuna.logging.set_verbosity(optuna.logging.WARNING)  # not one line per trial (Optuna's global setting)
            study = optuna.create_study(storage=self.storage, study_name=OPTUNA_STUDY, direction="maximize",
                                        sampler=self._sampler_for(0), load_if_exists=True)
            made_by = study.user_attrs.get("jaxswarm")
            if made_by is None:
                study.set_user_attr("jaxswarm", self._fingerprint)
            elif made_by != self._fingerprint:
                raise ValueError(f"{self.storage}: its Optuna study {OPTUNA_STUDY!r} belongs to another study "
                                 f"({made_by}); remove the file or use another results directory")
            self.study = study
        return self.study

    def trials(self, r: int) -> list:
        """Round r's trials, by member (fewer than S when they are not all asked yet)."""
        mine = [t for t in self.open().get_trials(deepcopy=False) if t.user_attrs.get("round") == r]
        return sorted(mine, key=lambda t: t.user_attrs["member"])

    def ask(self, r: int) -> np.ndarray:
        """Round r's positions ``f32[S, D]``: the trials the study holds, the missing ones asked now."""
        study = self.open()
        trials = study.get_trials(deepcopy=False)
        trial_state = self._optuna.trial.TrialState
        for t in trials:  # asked by a run killed inside one ask: never trained, never to be told
            if t.state == trial_state.RUNNING and "member" not in t.user_attrs:
                study.tell(t.number, state=trial_state.FAIL)
        have = {t.user_attrs["member"] for t in trials if t.user_attrs.get("round") == r}
        for i in range(self.swarm_size):
            if i in have:
                continue
            study.sampler = self._sampler_for(len(study.get_trials(deepcopy=False)))  # the next trial's number
            trial = study.ask()
            suggest(trial, self.space)
            trial.set_user_attr("round", r)
            trial.set_user_attr("member", i)  # last: a trial with it is fully suggested
        return np.stack([self.space.encode(t.params) for t in self.trials(r)])

    def tell(self, r: int, fitness_S) -> np.ndarray:
        """Tells round r's trials their fitness (non-finite: -inf), skipping those told before; returns their positions."""
        trials = self.trials(r)
        if len(trials) != self.swarm_size:
            raise ValueError(f"round {r} has {len(trials)} of {self.swarm_size} trials in the Optuna study: "
                             "tell follows ask")
        running = self._optuna.trial.TrialState.RUNNING
        for t, f in zip(trials, np.asarray(fitness_S, np.float64)):
            if t.state == running:
                self.study.tell(t.number, float(f) if math.isfinite(f) else -math.inf)
        return np.stack([self.space.encode(t.params) for t in trials])


def _optuna_strategy(name: str, sampler: Callable):
    def make(space, swarm_size, *, rounds, seed, out_dir, options) -> Strategy:
        import optuna  # optional: the optuna extra

        if jax.process_count() > 1:
            raise ValueError(f"strategy {name!r} keeps one Optuna study and runs on one process; "
                             "a multi-host study needs pso, random or an evosax strategy")
        if "seed" in options:  # each trial's sampler is seeded from the study's seed (resume depends on it)
            raise ValueError(f"strategy_options for {name!r}: seed comes from the study's seed, not from the options")

        def sampler_for(number: int):
            return sampler(optuna, swarm_size, seed, _trial_seed(seed, number), options)

        try:  # the options now, not at the first ask
            sampler_for(0)
        except (TypeError, ValueError) as e:
            raise ValueError(f"strategy_options for {name!r}: {e}") from None
        storage = None if out_dir is None else f"sqlite:///{Path(out_dir).absolute() / OPTUNA_DB}"
        fingerprint = {"strategy": name, "seed": int(seed), "swarm_size": int(swarm_size), "space": repr(space),
                       "options": repr(sorted(options.items()))}
        record = OptunaRecord(optuna, space, swarm_size, sampler_for, storage, fingerprint)
        d = space.num_dims

        def init(key, start_SxD=None) -> OptunaState:
            return OptunaState(*_start_best(d), jnp.zeros((), jnp.int32))

        def ask(state: OptunaState) -> np.ndarray:
            return record.ask(int(state.iteration))

        def tell(key, state: OptunaState, fitness_S) -> OptunaState:
            positions = record.tell(int(state.iteration), fitness_S)
            best = _track_best(state.best_position, state.best_fitness, state.iteration, positions, fitness_S)
            return OptunaState(*best, state.iteration + 1)

        def best(state: OptunaState):
            return state.best_position, state.best_fitness

        return Strategy(name, init, ask, tell, best, jittable=False, record=record)

    return make


# -- evosax ------------------------------------------------------------------------------------


class EvosaxState(NamedTuple):
    """State of an evosax strategy. Shapes: S members, D dimensions."""

    es: Any  # evosax's own state (a flax struct of arrays; it minimizes)
    position: jax.Array  # f32[S, D] evosax's population; ask clips it into the unit box
    best_position: jax.Array  # f32[D]
    best_fitness: jax.Array  # f32[] -inf before anything finite
    iteration: jax.Array  # i32[] rounds told so far


# CMA-ES starts at the box's centre with sigma = 1/6 of the box, so mean +- 3 sigma spans it: Hansen's
# advice to put the optimum inside m +- 3 sigma ("The CMA Evolution Strategy: A Tutorial", 2016), and
# Optuna's CmaEsSampler default (min_range / 6). evosax's default std_init of 1 would put most samples
# on the walls.
_CMA_STD_INIT = 1.0 / 6.0


def _evosax_strategy(name: str, algorithm: str, from_start: bool):
    def make(space, swarm_size, *, rounds, seed, out_dir, options) -> Strategy:
        from evosax import algorithms  # optional: the evosax extra

        n, d = swarm_size, space.num_dims
        if algorithm == "DifferentialEvolution" and n < 4:
            raise ValueError(f"strategy {name!r} needs swarm_size >= 4 (a mutant takes three others), got {n}")
        es = getattr(algorithms, algorithm)(population_size=n, solution=jnp.zeros((d,), jnp.float32))
        params = es.default_params
        if not from_start:
            params = params.replace(std_init=jnp.asarray(_CMA_STD_INIT, jnp.float32))
        try:
            params = params.replace(**options)
        except (TypeError, ValueError):
            known = sorted(f.name for f in dataclasses.fields(params))
            raise ValueError(f"strategy_options for {name!r}: evosax {algorithm} has no parameter(s) "
                             f"{sorted(set(options) - set(known))}; it has {known}") from None

        def init(key, start_SxD) -> EvosaxState:
            k_init, k_ask = jax.random.split(key)
            if from_start:  # the design is the first population, not evaluated yet: every member replaces
                position = jnp.asarray(start_SxD, jnp.float32)
                es_state = es.init(k_init, position, jnp.full((n,), jnp.inf, jnp.float32), params)
            else:
                es_state = es.init(k_init, jnp.full((d,), 0.5, jnp.float32), params)
                position, es_state = es.ask(k_ask, es_state, params)
            return EvosaxState(es_state, position, *_start_best(d), jnp.zeros((), jnp.int32))

        def ask(state: EvosaxState):
            return jnp.clip(state.position, 0.0, 1.0)

        def tell(key, state: EvosaxState, fitness_S) -> EvosaxState:
            k_tell, k_ask = jax.random.split(key)
            fitness_S = jnp.asarray(fitness_S, jnp.float32)
            loss_S = jnp.where(jnp.isfinite(fitness_S), -fitness_S, jnp.inf)  # evosax minimizes
            es_state, _ = es.tell(k_tell, state.position, loss_S, state.es, params)
            position, es_state = es.ask(k_ask, es_state, params)
            best = _track_best(state.best_position, state.best_fitness, state.iteration, ask(state), fitness_S)
            return EvosaxState(es_state, position, *best, state.iteration + 1)

        def best(state: EvosaxState):
            return state.best_position, state.best_fitness

        return Strategy(name, init, ask, tell, best, jittable=True)

    return make


_OPTUNA = ("optuna",)
STRATEGIES: dict[str, StrategyKind] = {
    "pso": StrategyKind(_make_pso, "jaxswarm's particle swarm, from the initial design (the [pso] settings)"),
    "random": StrategyKind(_resampling("random", _uniform, True), "uniform points every round"),
    "sobol": StrategyKind(_resampling("sobol", _sobol, False), "the next points of one scrambled Sobol' sequence"),
    "lhs": StrategyKind(_resampling("lhs", _lhs, False), "a fresh maximin Latin hypercube every round"),
    "tpe": StrategyKind(_optuna_strategy("tpe", _tpe), "Optuna's TPESampler (constant liar), S trials a round",
                        _OPTUNA),
    "gp": StrategyKind(_optuna_strategy("gp", _gp), "Optuna's GPSampler (needs PyTorch)", (*_OPTUNA, "torch")),
    "cmaes": StrategyKind(_optuna_strategy("cmaes", _cmaes), "Optuna's CmaEsSampler, one generation a round",
                          (*_OPTUNA, "cmaes")),
    "qmc": StrategyKind(_optuna_strategy("qmc", _qmc), "Optuna's QMCSampler (scrambled Sobol')", _OPTUNA),
    "evosax_cma_es": StrategyKind(_evosax_strategy("evosax_cma_es", "CMA_ES", False),
                                  "evosax's CMA-ES from the box's centre", ("evosax",)),
    "evosax_de": StrategyKind(_evosax_strategy("evosax_de", "DifferentialEvolution", True),
                              "evosax's differential evolution, from the initial design", ("evosax",)),
    "evosax_pso": StrategyKind(_evosax_strategy("evosax_pso", "PSO", True),
                               "evosax's particle swarm, from the initial design", ("evosax",)),
}

_INSTALL = {"optuna": "pip install 'jaxswarm[optuna]'", "cmaes": "pip install 'jaxswarm[optuna]'",
            "torch": "pip install torch (Optuna's GPSampler needs PyTorch)",
            "evosax": "pip install 'jaxswarm[evosax]'"}


def make_strategy(name: str, space: SearchSpace, swarm_size: int, *, rounds: int, seed: int = 0,
                  out_dir: str | Path | None = None, options: dict | None = None) -> Strategy:
    """Builds the strategy `name` of `STRATEGIES` for `swarm_size` members in `space`'s unit box.

    Args:
      name: a key of `STRATEGIES`.
      space: the search space (its dimension; Optuna's samplers suggest on it natively).
      swarm_size: members trained per round (S).
      rounds: the rounds planned (PSO's inertia schedule reads it).
      seed: the study's seed (Optuna's samplers; the jax strategies take their keys from init/tell).
      out_dir: the study's results directory: an Optuna strategy keeps its study in
        ``out_dir/optuna.db`` (None: in memory).
      options: the strategy's settings: `pso.make_pso` keywords for pso, the sampler's keyword
        arguments for tpe/gp/cmaes/qmc, evosax parameters (e.g. ``std_init``) for evosax_*.

    Raises:
      ValueError: unknown name, a missing package, or bad options (the message names them).

    Example:
        >>> from jaxswarm.space import Float, SearchSpace
        >>> make_strategy("sobol", SearchSpace({"x": Float(0.0, 1.0)}), 4, rounds=2).jittable
        False
    """
    if not isinstance(name, str) or name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {name!r}")
    kind = STRATEGIES[name]
    for package in kind.packages:
        if importlib.util.find_spec(package) is None:
            raise ValueError(f"strategy {name!r} needs the package {package!r}: {_INSTALL[package]}")
    return kind.make(space, swarm_size, rounds=rounds, seed=seed, out_dir=out_dir, options=dict(options or {}))


def optimize_batches(study, objective: Callable[[list], Sequence[float]], *, n_batches: int,
                     batch_size: int) -> None:
    """``study.optimize`` in batches: `objective` gets `batch_size` asked trials at once and returns their values.

    The other direction of the Optuna strategies: an Optuna user keeps the study and its
    sampler, and jaxswarm's engine trains each batch as one swarm (`study.Study.evaluate`).
    The trials of a batch are asked one after another before any is told (with TPE, use
    ``constant_liar=True`` so they spread out); an objective that raises leaves its batch
    FAILed and the error propagates.

    Args:
      study: an `optuna.Study` (its direction decides; jaxswarm's fitness is maximized).
      objective: ``objective(trials) -> values``, one value per trial, in order.
      n_batches: batches to run.
      batch_size: trials per batch (the swarm size of the program that trains them).

    Example:
        >>> import numpy as np, optuna, jaxswarm as js  # doctest: +SKIP
        >>> space = js.mlp_space(max_layers=2, units=(16, 64))  # doctest: +SKIP
        >>> swarm = js.Study(space, js.load_dataset("digits"), js.StudyConfig(swarm_size=8, epochs=3))  # doctest: +SKIP
        >>> def objective(trials):  # doctest: +SKIP
        ...     positions = np.stack([suggest(t, space) for t in trials])
        ...     return swarm.evaluate(positions, r=trials[0].number).fitness
        >>> study = optuna.create_study(direction="maximize",
        ...                             sampler=optuna.samplers.TPESampler(constant_liar=True))  # doctest: +SKIP
        >>> optimize_batches(study, objective, n_batches=4, batch_size=8)  # doctest: +SKIP
        >>> len(study.trials)  # doctest: +SKIP
        32
    """
    for name, value in (("n_batches", n_batches), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    from optuna.trial import TrialState  # optional: the optuna extra

    for _ in range(n_batches):
        trials = [study.ask() for _ in range(batch_size)]
        try:
            values = [float(v) for v in np.asarray(objective(trials), np.float64).reshape(-1)]
            if len(values) != batch_size:
                raise ValueError(f"the objective returned {len(values)} values for a batch of {batch_size} trials")
        except BaseException:
            for t in trials:
                study.tell(t, state=TrialState.FAIL)
            raise
        for t, v in zip(trials, values):
            study.tell(t, v)
