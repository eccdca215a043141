"""Particle Swarm Optimization as pure functions over a state pytree.

A PSO strategy is a :class:`PSO` NamedTuple of three pure functions,
``init``, ``ask`` and ``tell``, returned by the factory :func:`make_pso`,
which closes over all static configuration (swarm size, dimension, box,
coefficients, topology, boundary handling), in the style of optax and evosax.
The evolving state is a :class:`PSOState` pytree of arrays. The module knows
nothing of neural networks: it optimizes any vectorized fitness
``f32[S, D] -> f32[S]``.

Every function is jit-able and vmap-able over independent swarms::

    states = jax.vmap(pso.init)(keys)                      # many seeds at once
    states = jax.vmap(pso.tell)(keys2, states, fitness_NxS)

The update (Kennedy & Eberhart 1995; inertia weight of Shi & Eberhart 1998),
per particle ``i`` and dimension ``d`` with fresh ``r1, r2 ~ U[0, 1)``::

    v <- w v + c1 r1 (p_i - x) + c2 r2 (n_i - x)          # inertia form
    v <- chi (v + c1 r1 (p_i - x) + c2 r2 (n_i - x))      # constriction form
    x <- x + v

where ``p_i`` is the particle's personal best and ``n_i`` the best personal
best in its neighbourhood. ``chi = 2 / |2 - phi - sqrt(phi^2 - 4 phi)|`` with
``phi = c1 + c2 > 4`` is the Clerc & Kennedy (2002) constriction factor
(``c1 = c2 = 2.05`` gives ``chi ~ 0.7298``, the same dynamics as the default
inertia form ``w = 0.7298, c1 = c2 = 1.49618``). Topologies follow Kennedy &
Mendes (2002): global best, ring (lbest) and von Neumann (2-D torus).

Personal bests are a real memory. Optunity's PSO (the tool of the study
jaxswarm grows from) makes each particle's personal best alias its current
position, so its cognitive term ``c1 r1 (p_i - x)`` is always zero and its
particles only follow the global best; here ``best_position`` is a separate
array that only changes when a particle finds a strictly better fitness.

Fitness conventions: ``best_fitness`` and ``global_best_fitness`` are kept in
the user's sign convention (smaller is better unless ``maximize=True``).
Non-finite fitness (NaN, +inf or -inf, whatever the direction) is treated as
the worst possible value (``+inf`` when minimizing, ``-inf`` when
maximizing), so a diverged evaluation never becomes a personal or global
best, and personal bests never get worse. Before any finite fitness has been
seen, ``best_fitness`` holds that worst value.

References:
  J. Kennedy, R. Eberhart. Particle swarm optimization. ICNN 1995.
  Y. Shi, R. Eberhart. A modified particle swarm optimizer. IEEE WCCI 1998.
  M. Clerc, J. Kennedy. The particle swarm - explosion, stability, and
    convergence in a multidimensional complex space. IEEE TEC 6(1), 2002.
  J. Kennedy, R. Mendes. Population structure and particle swarm
    performance. IEEE CEC 2002.

Example (ask/tell on a 5-D sphere)::

    import jax, jax.numpy as jnp
    from jaxswarm.pso import make_pso

    pso = make_pso(20, 5, lower=-5.0, upper=5.0)
    key = jax.random.key(0)
    key, k = jax.random.split(key)
    state = pso.init(k)
    tell = jax.jit(pso.tell)
    for _ in range(100):
        x_SxD = pso.ask(state)
        key, k = jax.random.split(key)
        state = tell(k, state, jnp.sum(x_SxD**2, axis=-1))
    print(state.global_best_fitness)   # close to 0
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["PSOState", "PSOParams", "PSO", "make_pso", "default_params", "minimize", "neighbor_indices",
           "von_neumann_grid", "constriction_factor", "TOPOLOGIES", "BOUNDARIES"]

_DEFAULT_INERTIA = 0.7298

# Initial velocities are uniform in +-_INIT_VEL_FRAC * (upper - lower) per
# dimension (and never beyond the velocity clamp).
_INIT_VEL_FRAC = 0.1


class PSOState(NamedTuple):
    """State of one swarm. Shapes: S particles, D dimensions."""

    position: jax.Array  # f32[S, D] positions to evaluate next (ask returns them)
    velocity: jax.Array  # f32[S, D]
    best_position: jax.Array  # f32[S, D] personal bests (own memory)
    best_fitness: jax.Array  # f32[S] user's sign; worst (+-inf) when none yet
    global_best_position: jax.Array  # f32[D]
    global_best_fitness: jax.Array  # f32[]
    iteration: jax.Array  # i32[] number of tell() calls so far


class PSOParams(NamedTuple):
    """The velocity update's coefficients: a pytree, so a sweep over them vmaps.

    ``inertia_t = inertia_start + (inertia_end - inertia_start) * min(t / (T - 1), 1)``
    at the t-th tell (T = ``num_iterations``; constant when start == end).
    With constriction, ``chi`` replaces the inertia weight (set it with
    `constriction_factor` when sweeping ``c1`` / ``c2``).
    """

    inertia_start: jax.Array  # f32[]
    inertia_end: jax.Array  # f32[]
    c1: jax.Array  # f32[] cognitive coefficient (pull toward the personal best)
    c2: jax.Array  # f32[] social coefficient (pull toward the neighbourhood best)
    chi: jax.Array  # f32[] Clerc-Kennedy constriction factor (constriction form only)


def default_params(inertia=_DEFAULT_INERTIA, c1: float = 1.49618, c2: float = 1.49618,
                   constriction: bool = False) -> PSOParams:
    """`PSOParams` as arrays: constant inertia, or ``(start, end)`` for a linear decay.

    Example::

        >>> float(default_params(c1=2.05, c2=2.05, constriction=True).chi)  # doctest: +ELLIPSIS
        0.7298...
    """
    start, end = (inertia if isinstance(inertia, (tuple, list)) else (inertia, inertia))
    chi = constriction_factor(c1, c2) if constriction else 1.0
    f32 = lambda v: jnp.asarray(float(v), jnp.float32)
    return PSOParams(f32(start), f32(end), f32(c1), f32(c2), f32(chi))


class PSO(NamedTuple):
    """A PSO strategy: pure functions closing over static configuration.

    Attributes:
      init: ``init(key, init_position=None) -> PSOState``.
      ask: ``ask(state) -> f32[S, D]``, the positions to evaluate.
      tell: ``tell(key, state, fitness_S, params=None) -> PSOState``; ``params``
        None uses `params`.
      params: the `PSOParams` `make_pso` was given.
    """

    init: Callable[..., PSOState]
    ask: Callable[[PSOState], jax.Array]
    tell: Callable[..., PSOState]
    params: PSOParams


def constriction_factor(c1: float, c2: float) -> float:
    """Clerc & Kennedy (2002) constriction factor ``chi`` for ``phi = c1 + c2``.

    Args:
      c1: cognitive coefficient.
      c2: social coefficient.

    Returns:
      ``2 / |2 - phi - sqrt(phi^2 - 4 phi)|``.

    Raises:
      ValueError: if ``c1 + c2 <= 4``.

    Example::

        >>> round(constriction_factor(2.05, 2.05), 4)
        0.7298
    """
    phi = float(c1) + float(c2)
    if not phi > 4.0:
        raise ValueError(
            f"constriction needs phi = c1 + c2 > 4, got c1={c1}, c2={c2} "
            f"(phi={phi}); the usual choice is c1 = c2 = 2.05")
    return 2.0 / abs(2.0 - phi - math.sqrt(phi * phi - 4.0 * phi))


def von_neumann_grid(num_particles: int) -> tuple[int, int]:
    """Rows x cols of the von Neumann torus: as square as possible, exact.

    ``rows`` is the largest divisor of ``num_particles`` not above its square
    root, so ``rows * cols == num_particles`` and ``rows <= cols``. A prime
    swarm size gives ``rows == 1``.

    Example::

        >>> von_neumann_grid(30)
        (5, 6)
    """
    rows = 1
    for r in range(1, math.isqrt(num_particles) + 1):
        if num_particles % r == 0:
            rows = r
    return rows, num_particles // rows


def _global(s: int, neighbors: int) -> None:
    return None  # everyone is everyone's neighbour: the update uses the global best directly


def _ring(s: int, neighbors: int) -> np.ndarray:
    half = neighbors // 2
    return ((np.arange(s)[:, None] + np.arange(-half, half + 1)[None, :]) % s).astype(np.int32)


def _von_neumann(s: int, neighbors: int) -> np.ndarray:
    idx = np.arange(s)
    rows, cols = von_neumann_grid(s)
    if rows == 1:
        return ((idx[:, None] + np.array([0, -1, 1, -2, 2])[None, :]) % s).astype(np.int32)
    r, c = idx // cols, idx % cols
    table = np.stack([
        idx,
        ((r - 1) % rows) * cols + c,
        ((r + 1) % rows) * cols + c,
        r * cols + (c - 1) % cols,
        r * cols + (c + 1) % cols,
    ], axis=1)
    return table.astype(np.int32)


# Topologies (Kennedy & Mendes 2002): name -> (S, neighbors) -> static table int32[S, A] of each
# particle's A neighbours (itself included), or None for the global best.
TOPOLOGIES: dict[str, Callable[[int, int], np.ndarray | None]] = {
    "global": _global,
    "ring": _ring,
    "von_neumann": _von_neumann,
}


def neighbor_indices(num_particles: int, topology: str,
                     neighbors: int = 2) -> np.ndarray | None:
    """Static neighbourhood table ``int32[S, A]`` (self included) or None.

    * ``"global"``: returns ``None`` (everyone is everyone's neighbour; the
      update uses the global best directly).
    * ``"ring"``: particle ``i`` sees ``i - k/2 .. i + k/2`` (mod S), i.e. its
      ``neighbors`` nearest indices plus itself.
    * ``"von_neumann"``: particles laid row-major on a ``rows x cols`` torus
      (:func:`von_neumann_grid`); ``i`` sees itself and its up, down, left and
      right cells. When ``rows == 1`` (S prime) a 1 x S torus would
      degenerate to a ring with 2 neighbours, so instead ``i`` sees
      ``i +- 1`` and ``i +- 2`` (mod S): a ring with 4 neighbours, keeping the
      von Neumann degree of 4. Small swarms may list a neighbour twice, which
      is harmless.

    Args:
      num_particles: swarm size S.
      topology: a key of `TOPOLOGIES`.
      neighbors: ring only: number of neighbours k (even), k/2 on each side.

    Returns:
      The table, or None for "global".

    Example::

        >>> neighbor_indices(5, "ring", 2)[0].tolist()
        [4, 0, 1]
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; expected one of {tuple(TOPOLOGIES)}")
    return TOPOLOGIES[topology](num_particles, neighbors)


def _clip(x_SxD, vel_SxD, out_SxD, lo, hi, span, key):
    """Puts the coordinate on the wall and zeroes that velocity component."""
    return jnp.clip(x_SxD, lo, hi), jnp.where(out_SxD, 0.0, vel_SxD)


def _reflect(x_SxD, vel_SxD, out_SxD, lo, hi, span, key):
    """Mirrors the coordinate back into the box and negates that velocity component."""
    # Triangle-wave fold of (x - lo) onto [0, span]: exact mirror for one overshoot, still inside
    # the box for any larger one. Applied to out-of-box coordinates only: lo + (x - lo) would
    # round in-box coordinates to the precision of |lo|.
    y = jnp.mod(x_SxD - lo, 2.0 * span)
    y = jnp.where(y > span, 2.0 * span - y, y)
    return jnp.where(out_SxD, jnp.clip(lo + y, lo, hi), x_SxD), jnp.where(out_SxD, -vel_SxD, vel_SxD)


def _redraw(x_SxD, vel_SxD, out_SxD, lo, hi, span, key):
    """Redraws the coordinate uniformly in the box and zeroes that velocity component."""
    fresh_SxD = lo + span * jax.random.uniform(key, x_SxD.shape, jnp.float32)
    return jnp.where(out_SxD, fresh_SxD, x_SxD), jnp.where(out_SxD, 0.0, vel_SxD)


# Boundary handlers: name -> (x, vel, out-of-box mask, lo, hi, span, key) -> (x, vel).
BOUNDARIES: dict[str, Callable] = {"clip": _clip, "reflect": _reflect, "random": _redraw}


def _box(value, num_dims: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full((num_dims,), float(arr))
    if arr.shape != (num_dims,):
        raise ValueError(
            f"{name} must be a scalar or have shape ({num_dims},), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


def make_pso(num_particles: int, num_dims: int, *, lower=0.0, upper=1.0,
             maximize: bool = False, topology: str = "global",
             neighbors: int = 2, inertia=_DEFAULT_INERTIA,
             num_iterations: int | None = None, c1: float = 1.49618,
             c2: float = 1.49618, constriction: bool = False,
             vmax: float | None = 0.5, boundary: str = "reflect") -> PSO:
    """Build a PSO strategy (init / ask / tell) for a fixed swarm shape.

    Args:
      num_particles: swarm size S >= 2.
      num_dims: search dimension D >= 1.
      lower: lower bound of the box, scalar or ``[D]``.
      upper: upper bound of the box, scalar or ``[D]``; ``lower < upper``.
      maximize: if True larger fitness is better.
      topology: "global" (gbest), "ring" (lbest) or "von_neumann"; see
        :func:`neighbor_indices`.
      neighbors: ring only: even k with ``2 <= k <= S - 1``; particle ``i``
        sees ``k/2`` neighbours on each side plus itself.
      inertia: inertia weight w, a float, or ``(start, end)`` for a linear
        decay (Shi & Eberhart 1998): ``w_t = start + (end - start) *
        min(t / (num_iterations - 1), 1)`` at the ``t``-th tell (t from 0),
        constant at ``end`` afterwards.
      num_iterations: number of tell() calls planned; required when inertia
        is a tuple, unused otherwise.
      c1: cognitive coefficient (pull toward the personal best).
      c2: social coefficient (pull toward the neighbourhood best).
      constriction: if True use the Clerc-Kennedy form
        ``v <- chi (v + c1 r1 (p - x) + c2 r2 (n - x))`` with ``chi`` from
        ``phi = c1 + c2`` (must exceed 4, e.g. ``c1 = c2 = 2.05``). ``chi``
        then plays the part of the inertia weight, so ``inertia`` must be
        left at its default (it is ignored); anything else raises.
      vmax: velocity clamp per dimension as a fraction of ``upper - lower``;
        None disables clamping. Initial velocities are uniform in
        ``+- 0.1 (upper - lower)`` (and within the clamp).
      boundary: what happens to coordinates that leave the box after a move:
        "clip" puts them on the wall and zeroes that velocity component;
        "reflect" mirrors them back into the box (a triangle-wave fold, so
        any overshoot lands inside) and negates that velocity component;
        "random" redraws them uniformly in ``[lower, upper]`` and zeroes that
        velocity component.

    Returns:
      A :class:`PSO` with ``init(key, init_position=None)``, ``ask(state)``,
      ``tell(key, state, fitness_S, params=None)`` and ``params`` (the
      coefficients as a `PSOParams` pytree: pass other values to ``tell`` to
      sweep them, vmapped, without rebuilding the strategy). ``init_position`` (``f32[S, D]``,
      e.g. a Latin hypercube design) is clipped into the box; without it
      positions are uniform in the box. ``tell`` first records the fitness of
      ``state.position`` (personal, neighbourhood and global bests), then
      moves the swarm; the returned state's ``position`` is what to evaluate
      next.

    Raises:
      ValueError: on any invalid setting (the message names the value).

    Example::

        >>> import jax, jax.numpy as jnp
        >>> pso = make_pso(16, 3, lower=-2.0, upper=2.0, topology="ring")
        >>> state = pso.init(jax.random.key(0))
        >>> fit = jnp.sum(pso.ask(state) ** 2, axis=-1)
        >>> state = pso.tell(jax.random.key(1), state, fit)
        >>> int(state.iteration)
        1
    """
    _check(num_particles, num_dims, topology, neighbors, inertia, num_iterations, c1, c2, constriction, vmax,
           boundary)
    swarm = _swarm_config(num_particles, num_dims, lower, upper, maximize, topology, neighbors, num_iterations,
                          constriction, vmax, boundary)
    params = default_params(inertia, c1, c2, constriction)
    return PSO(init=functools.partial(_init, swarm), ask=_ask, tell=functools.partial(_tell, swarm, params),
               params=params)


class _SwarmConfig(NamedTuple):
    """`make_pso`'s static configuration, checked and as arrays: what `_init` and `_tell` read.

    Not a traced pytree: the strategy's functions close over it (`functools.partial`).
    """

    num_particles: int  # S
    num_dims: int  # D
    sign: float  # +1.0 minimizing, -1.0 maximizing: score = sign * fitness, always minimized
    worst: float  # the worst fitness in the user's sign: +inf minimizing, -inf maximizing
    lower_D: jax.Array  # f32[D]
    upper_D: jax.Array  # f32[D]
    span_D: jax.Array  # f32[D] upper_D - lower_D
    init_speed_D: jax.Array  # f32[D] initial velocities are uniform in +- init_speed_D
    vclamp_D: jax.Array | None  # f32[D] velocity clamp per dimension; None: no clamp
    neighbors_SxA: jax.Array | None  # i32[S, A] neighbourhood table (`TOPOLOGIES`); None: global best
    decay_steps: int  # the inertia reaches its end value after this many tells
    constriction: bool  # Clerc-Kennedy form (chi) instead of the inertia weight
    handle_boundary: Callable  # a `BOUNDARIES` handler


def _swarm_config(num_particles, num_dims, lower, upper, maximize, topology, neighbors, num_iterations,
                  constriction, vmax, boundary) -> _SwarmConfig:
    """`make_pso`'s settings (already `_check`ed) as a `_SwarmConfig`; a ValueError for a bad box."""
    S, D = int(num_particles), int(num_dims)
    lo_D, hi_D = _box(lower, D, "lower"), _box(upper, D, "upper")
    if not np.all(lo_D < hi_D):
        raise ValueError(f"need lower < upper in every dimension, got lower={lower!r}, "
                         f"upper={upper!r}")
    lower_D, upper_D = jnp.asarray(lo_D, jnp.float32), jnp.asarray(hi_D, jnp.float32)
    init_speed_D = _INIT_VEL_FRAC * (hi_D - lo_D)
    if vmax is not None:
        init_speed_D = np.minimum(init_speed_D, vmax * (hi_D - lo_D))
    neighbors_SxA = TOPOLOGIES[topology](S, neighbors)
    return _SwarmConfig(
        num_particles=S,
        num_dims=D,
        sign=-1.0 if maximize else 1.0,
        worst=-jnp.inf if maximize else jnp.inf,
        lower_D=lower_D,
        upper_D=upper_D,
        span_D=upper_D - lower_D,
        init_speed_D=jnp.asarray(init_speed_D, jnp.float32),
        vclamp_D=None if vmax is None else jnp.asarray(vmax * (hi_D - lo_D), jnp.float32),
        neighbors_SxA=None if neighbors_SxA is None else jnp.asarray(neighbors_SxA),
        decay_steps=1 if num_iterations is None else max(int(num_iterations) - 1, 1),
        constriction=constriction,
        handle_boundary=BOUNDARIES[boundary],
    )


def _score(swarm: _SwarmConfig, fitness: jax.Array) -> jax.Array:
    """Minimization score of `fitness`; non-finite fitness -> +inf (worst)."""
    score = swarm.sign * fitness
    return jnp.where(jnp.isfinite(score), score, jnp.inf)


def _init(swarm: _SwarmConfig, key: jax.Array, init_position: jax.Array | None = None) -> PSOState:
    """A fresh swarm (`PSO.init`): positions uniform in the box or `init_position` clipped into it."""
    S, D = swarm.num_particles, swarm.num_dims
    key_position, key_velocity = jax.random.split(key)
    if init_position is None:
        pos_SxD = swarm.lower_D + swarm.span_D * jax.random.uniform(key_position, (S, D), jnp.float32)
    else:
        init_position = jnp.asarray(init_position, jnp.float32)
        if init_position.shape != (S, D):
            raise ValueError(f"init_position must have shape ({S}, {D}), "
                             f"got {init_position.shape}")
        pos_SxD = jnp.clip(init_position, swarm.lower_D, swarm.upper_D)
    vel_SxD = swarm.init_speed_D * jax.random.uniform(key_velocity, (S, D), jnp.float32, -1.0, 1.0)
    return PSOState(
        position=pos_SxD,
        velocity=vel_SxD,
        best_position=pos_SxD,
        best_fitness=jnp.full((S,), swarm.worst, jnp.float32),
        global_best_position=pos_SxD[0],
        global_best_fitness=jnp.asarray(swarm.worst, jnp.float32),
        iteration=jnp.zeros((), jnp.int32),
    )


def _ask(state: PSOState) -> jax.Array:
    """The positions to evaluate (`PSO.ask`)."""
    return state.position


class _Bests(NamedTuple):
    """The bests once a tell has recorded its fitness. Shapes: S particles, D dimensions."""

    position_SxD: jax.Array  # f32[S, D] personal bests
    fitness_S: jax.Array  # f32[S] their fitness, user's sign
    score_S: jax.Array  # f32[S] their minimization score (`_score`)
    global_position_D: jax.Array  # f32[D] the best personal best
    global_fitness: jax.Array  # f32[]


def _record_bests(swarm: _SwarmConfig, state: PSOState, fitness_S: jax.Array) -> _Bests:
    """Personal and global bests after `state.position` scored `fitness_S`."""
    # Personal bests: strictly better finite fitness only.
    new_score_S = _score(swarm, fitness_S)
    best_score_S = _score(swarm, state.best_fitness)
    improved_S = new_score_S < best_score_S
    pbest_SxD = jnp.where(improved_S[:, None], state.position, state.best_position)
    pbest_fitness_S = jnp.where(improved_S, fitness_S, state.best_fitness)
    pbest_score_S = jnp.where(improved_S, new_score_S, best_score_S)
    # Global best = best personal best (monotone because pbests are).
    best_particle = jnp.argmin(pbest_score_S)
    return _Bests(pbest_SxD, pbest_fitness_S, pbest_score_S, pbest_SxD[best_particle],
                  pbest_fitness_S[best_particle])


def _neighbourhood_bests(swarm: _SwarmConfig, bests: _Bests) -> jax.Array:
    """f32[S, D]: the best personal best in each particle's neighbourhood (Kennedy & Mendes 2002)."""
    if swarm.neighbors_SxA is None:
        return jnp.broadcast_to(bests.global_position_D, (swarm.num_particles, swarm.num_dims))
    local_score_SxA = bests.score_S[swarm.neighbors_SxA]
    pick_S = jnp.take_along_axis(
        swarm.neighbors_SxA, jnp.argmin(local_score_SxA, axis=1)[:, None], axis=1)[:, 0]
    return bests.position_SxD[pick_S]


def _move(swarm: _SwarmConfig, params: PSOParams, key: jax.Array, state: PSOState, bests: _Bests,
          nbest_SxD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """New (position, velocity), both f32[S, D]: the velocity update, the clamp, then the boundary."""
    S, D = swarm.num_particles, swarm.num_dims
    key_cognitive, key_social, key_boundary = jax.random.split(key, 3)
    r1_SxD = jax.random.uniform(key_cognitive, (S, D), jnp.float32)
    r2_SxD = jax.random.uniform(key_social, (S, D), jnp.float32)
    x_SxD = state.position
    pull_SxD = params.c1 * r1_SxD * (bests.position_SxD - x_SxD) + params.c2 * r2_SxD * (nbest_SxD - x_SxD)
    if swarm.constriction:
        vel_SxD = params.chi * (state.velocity + pull_SxD)
    else:
        frac = jnp.minimum(state.iteration.astype(jnp.float32) / swarm.decay_steps, 1.0)
        inertia_t = params.inertia_start + (params.inertia_end - params.inertia_start) * frac
        vel_SxD = inertia_t * state.velocity + pull_SxD
    if swarm.vclamp_D is not None:
        vel_SxD = jnp.clip(vel_SxD, -swarm.vclamp_D, swarm.vclamp_D)
    x_SxD = x_SxD + vel_SxD
    out_SxD = (x_SxD < swarm.lower_D) | (x_SxD > swarm.upper_D)
    return swarm.handle_boundary(x_SxD, vel_SxD, out_SxD, swarm.lower_D, swarm.upper_D, swarm.span_D,
                                 key_boundary)


def _tell(swarm: _SwarmConfig, default_params: PSOParams, key: jax.Array, state: PSOState,
          fitness: jax.Array, params: PSOParams | None = None) -> PSOState:
    """`PSO.tell`: records the fitness of `state.position` in the bests, then moves the swarm."""
    params = default_params if params is None else params
    fitness_S = jnp.asarray(fitness, jnp.float32)
    if fitness_S.shape != (swarm.num_particles,):
        raise ValueError(f"fitness must have shape ({swarm.num_particles},), got {fitness_S.shape}")
    bests = _record_bests(swarm, state, fitness_S)
    position_SxD, velocity_SxD = _move(swarm, params, key, state, bests, _neighbourhood_bests(swarm, bests))
    return PSOState(
        position=position_SxD,
        velocity=velocity_SxD,
        best_position=bests.position_SxD,
        best_fitness=bests.fitness_S,
        global_best_position=bests.global_position_D,
        global_best_fitness=bests.global_fitness,
        iteration=state.iteration + 1,
    )


def _check(num_particles, num_dims, topology, neighbors, inertia, num_iterations, c1, c2, constriction, vmax,
           boundary) -> None:
    """`make_pso`'s static settings: one ValueError naming the first bad one."""
    def number(x) -> float | None:
        # A real number as a float (numpy scalars and 0-d arrays too); None for bools, strings, the rest.
        if isinstance(x, (bool, np.bool_, str, bytes)):
            return None
        try:
            return float(x)
        except (TypeError, ValueError):
            return None

    def integer(x) -> bool:
        v = number(x)
        return v is not None and math.isfinite(v) and v == int(v)

    if not integer(num_particles) or num_particles < 2:
        raise ValueError(f"num_particles must be an integer >= 2, got {num_particles!r}")
    if not integer(num_dims) or num_dims < 1:
        raise ValueError(f"num_dims must be an integer >= 1, got {num_dims!r}")
    if not isinstance(topology, str) or topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; expected one of {tuple(TOPOLOGIES)}")
    if not isinstance(boundary, str) or boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; expected one of {tuple(BOUNDARIES)}")
    if topology == "ring":
        if not integer(neighbors) or neighbors < 2 or neighbors % 2 or neighbors > num_particles - 1:
            raise ValueError(
                f"neighbors={neighbors!r} out of range for a ring of "
                f"{num_particles} particles: need an even integer with "
                f"2 <= neighbors <= {num_particles - 1}")
    if isinstance(inertia, (tuple, list)):
        if len(inertia) != 2:
            raise ValueError(f"inertia as a schedule must be (start, end), got {inertia!r}")
        if not all(number(w) is not None and math.isfinite(number(w)) for w in inertia):
            raise ValueError(f"inertia (start, end) must be finite numbers, got {inertia!r}")
        if num_iterations is None:
            raise ValueError(f"inertia={tuple(inertia)!r} is a linear decay and needs "
                             "num_iterations, got None")
        if not integer(num_iterations) or num_iterations < 1:
            raise ValueError(f"num_iterations must be an integer >= 1, got {num_iterations!r}")
    elif number(inertia) is None or not math.isfinite(number(inertia)):
        raise ValueError(f"inertia must be a finite number or (start, end), got {inertia!r}")
    for name, c in (("c1", c1), ("c2", c2)):
        # A negative or infinite coefficient pushes particles away or out of every bound.
        if number(c) is None or not math.isfinite(number(c)) or number(c) < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {c!r}")
    if not isinstance(constriction, (bool, np.bool_)):
        raise ValueError(f"constriction must be True or False, got {constriction!r}")
    if constriction and (isinstance(inertia, (tuple, list)) or float(inertia) != _DEFAULT_INERTIA):
        raise ValueError(
            f"constriction=True replaces the inertia weight by chi; leave inertia "
            f"at its default, got inertia={inertia!r}")
    if vmax is not None and (number(vmax) is None or not number(vmax) > 0):
        raise ValueError(f"vmax must be a number > 0 or None, got {vmax!r}")


def minimize(key: jax.Array, fn: Callable[[jax.Array], jax.Array],
             num_particles: int, num_dims: int, num_iterations: int, *,
             init_position: jax.Array | None = None, **pso_kwargs):
    """Run PSO on a vectorized ``fn: f32[S, D] -> f32[S]`` with one lax.scan.

    The swarm is evaluated ``num_iterations`` times (budget ``num_particles *
    num_iterations`` evaluations), each evaluation followed by a tell. The
    function is traceable, so it can be wrapped in ``jax.jit`` or vmapped
    over keys (``fn`` must then be closed over). ``maximize=True`` in
    ``pso_kwargs`` maximizes instead; ``num_iterations`` is forwarded to
    :func:`make_pso` for inertia schedules.

    Args:
      key: PRNG key.
      fn: vectorized fitness, ``f32[S, D] -> f32[S]``.
      num_particles: swarm size S.
      num_dims: dimension D.
      num_iterations: number of swarm evaluations (= tell calls).
      init_position: optional ``f32[S, D]`` initial positions.
      **pso_kwargs: forwarded to :func:`make_pso`.

    Returns:
      ``(best_position f32[D], best_fitness f32[], state PSOState)``.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> x, f, _ = minimize(jax.random.key(0), lambda x: jnp.sum(x**2, -1),
        ...                    20, 4, 200, lower=-5.0, upper=5.0)
        >>> bool(f < 1e-6)
        True
    """
    pso = make_pso(num_particles, num_dims, num_iterations=num_iterations, **pso_kwargs)
    k_init, k_run = jax.random.split(key)
    state = pso.init(k_init, init_position)

    def step(state, k):
        return pso.tell(k, state, fn(pso.ask(state))), None

    state, _ = jax.lax.scan(step, state, jax.random.split(k_run, num_iterations))
    return state.global_best_position, state.global_best_fitness, state
