"""Tests for jaxswarm.pso: convergence, best-memory invariants, NaN safety,
topologies, boundaries, vmap equivalence, no recompiles, input validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxswarm.pso import (PSOState, constriction_factor, default_params, make_pso, minimize,
                          neighbor_indices, von_neumann_grid)


@pytest.fixture
def key():
    return jax.random.key(0)


def sphere(x_SxD):
    return jnp.sum(x_SxD**2, axis=-1)


def rosenbrock(x_SxD):
    a, b = x_SxD[:, :-1], x_SxD[:, 1:]
    return jnp.sum(100.0 * (b - a**2) ** 2 + (1.0 - a) ** 2, axis=-1)


def rastrigin(x_SxD):
    return 10.0 * x_SxD.shape[-1] + jnp.sum(x_SxD**2 - 10.0 * jnp.cos(2 * jnp.pi * x_SxD),
                                            axis=-1)


def jmin(key, fn, S, D, T, **kw):
    """minimize() under one jit (eager op-by-op dispatch is slower to compile)."""
    return jax.jit(lambda k: minimize(k, fn, S, D, T, **kw))(key)


def run_history(key, pso, fn, T, init_position=None):
    """Scan T ask/eval/tell steps; returns final state and stacked states
    (the state after each tell)."""
    k0, k1 = jax.random.split(key)
    state = pso.init(k0, init_position)

    def step(s, k):
        s = pso.tell(k, s, fn(pso.ask(s)))
        return s, s

    return jax.jit(lambda st, ks: jax.lax.scan(step, st, ks))(state, jax.random.split(k1, T))


# ---------------------------------------------------------------- convergence
# 10-D, 30 particles x 300 tells, 8 seeds vmapped. All configurations run in
# ONE jitted program (compiling is most of the cost on CPU). Tolerances come
# from measurements over 16 seeds, with margin: sphere max 3e-13; Rosenbrock
# median 4.8, max 9; Rastrigin median 7.5, max 17 (random points score ~1e5
# on Rosenbrock and ~170 on Rastrigin); sphere with ring max 1e-7, von Neumann
# max 3e-9, inertia 0.9 -> 0.4 max 1e-16, constriction max 5e-13.
BOX = {"sphere": (-5.12, 5.12), "rosenbrock": (-5.0, 10.0), "rastrigin": (-5.12, 5.12)}
FNS = {"sphere": sphere, "rosenbrock": rosenbrock, "rastrigin": rastrigin}
CONVERGENCE_RUNS = {
    # name: (function, pso kwargs, median tolerance, max tolerance)
    "sphere": ("sphere", {}, 1e-9, 1e-8),
    "rosenbrock": ("rosenbrock", {}, 10.0, 100.0),
    "rastrigin": ("rastrigin", {}, 15.0, 30.0),
    "sphere_ring": ("sphere", dict(topology="ring"), 1e-5, 1e-5),
    "sphere_von_neumann": ("sphere", dict(topology="von_neumann"), 1e-6, 1e-6),
    "sphere_inertia_decay": ("sphere", dict(inertia=(0.9, 0.4)), 1e-9, 1e-9),
    "sphere_constriction": ("sphere", dict(constriction=True, c1=2.05, c2=2.05), 1e-9, 1e-9),
    "rosenbrock_constriction": ("rosenbrock", dict(constriction=True, c1=2.05, c2=2.05),
                                10.0, 100.0),
}


@pytest.fixture(scope="module")
def convergence_results():
    keys = jax.random.split(jax.random.key(0), 8)

    def run_all(keys):
        out = {}
        for name, (fname, kw, _, _) in CONVERGENCE_RUNS.items():
            lo, hi = BOX[fname]
            out[name] = jax.vmap(lambda k: minimize(k, FNS[fname], 30, 10, 300, lower=lo,
                                                    upper=hi, **kw)[1])(keys)
        return out

    return jax.tree.map(np.asarray, jax.jit(run_all)(keys))


@pytest.mark.parametrize("name", list(CONVERGENCE_RUNS))
def test_converges_10d(convergence_results, name):
    _, _, median_tol, max_tol = CONVERGENCE_RUNS[name]
    f = convergence_results[name]
    assert f.shape == (8,) and np.all(np.isfinite(f))
    assert np.median(f) < median_tol, f
    assert np.max(f) < max_tol, f


def test_minimize_returns_consistent_best(key):
    x, f, state = jmin(key, sphere, 20, 4, 150, lower=-5.0, upper=5.0)
    assert x.shape == (4,) and f.shape == () and isinstance(state, PSOState)
    assert int(state.iteration) == 150
    np.testing.assert_allclose(sphere(x[None])[0], f, rtol=1e-6)
    assert f == jnp.min(state.best_fitness)
    assert f < 1e-6


def test_same_seed_same_result(key):
    a = jmin(key, rastrigin, 12, 3, 50, lower=-5.12, upper=5.12, topology="ring")
    b = jmin(key, rastrigin, 12, 3, 50, lower=-5.12, upper=5.12, topology="ring")
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(u, v)


# ------------------------------------------------------------- personal bests
def test_personal_bests_monotone_and_real_memory(key):
    pso = make_pso(16, 5, lower=-5.12, upper=5.12)
    _, hist = run_history(key, pso, rastrigin, 60)
    bf_TxS = np.asarray(hist.best_fitness)
    assert np.all(np.isfinite(bf_TxS))
    assert np.all(np.diff(bf_TxS, axis=0) <= 0)  # never worse
    assert np.all(np.diff(np.asarray(hist.global_best_fitness)) <= 0)
    # Stored best fitness is the fitness of the stored best position.
    np.testing.assert_allclose(jax.vmap(rastrigin)(hist.best_position), bf_TxS, rtol=1e-5)
    # A real memory: after moving, most particles are not at their best.
    moved = np.any(np.asarray(hist.best_position[-1] != hist.position[-1]), axis=-1)
    assert moved.mean() > 0.5
    # Global best is the best personal best.
    np.testing.assert_array_equal(hist.global_best_fitness, bf_TxS.min(axis=1))


def test_cognitive_term_is_active(key):
    """With c2 = 0 (no social pull) the velocity change is exactly the
    cognitive pull c1 r1 (p - x), nonzero because p is a memory distinct from
    x (in Optunity's PSO p aliases x and this term is always zero), and
    particles improve their own bests without any shared information."""
    w, c1 = 0.7298, 1.49618
    pso = make_pso(10, 4, lower=-50.0, upper=50.0, c2=0.0, vmax=None)
    state, hist = run_history(key, pso, lambda x: sphere(x - 1.0), 30)
    first, last = np.asarray(hist.best_fitness[0]), np.asarray(hist.best_fitness[-1])
    assert np.mean(last < first) >= 0.8  # most particles improved on their own

    # A NaN round changes no best, so the pull is toward the remembered bests.
    new = jax.jit(pso.tell)(jax.random.key(3), state, jnp.full((10,), jnp.nan))
    np.testing.assert_array_equal(new.best_position, state.best_position)
    pull = np.asarray(new.velocity - w * state.velocity)
    gap = c1 * np.asarray(state.best_position - state.position)
    assert np.count_nonzero(gap) > 0.5 * gap.size
    ratio = pull[gap != 0] / gap[gap != 0]  # = r1, uniform in [0, 1)
    assert np.all((ratio >= -1e-4) & (ratio <= 1 + 1e-4))
    assert 0.3 < ratio.mean() < 0.7
    np.testing.assert_allclose(pull[gap == 0], 0.0, atol=1e-5)


# ---------------------------------------------------------------- NaN / inf
@pytest.mark.parametrize("maximize", [False, True])
def test_nonfinite_fitness_never_becomes_best(key, maximize):
    S, D, T = 12, 3, 40
    pso = make_pso(S, D, lower=-2.0, upper=2.0, maximize=maximize)
    sgn = -1.0 if maximize else 1.0
    k_init, k_run = jax.random.split(key)
    state = pso.init(k_init)
    bad_values = jnp.array([jnp.nan, jnp.inf, -jnp.inf])

    @jax.jit
    def step(k, state, first):
        k_mask, k_bad, k_tell = jax.random.split(k, 3)
        f = sgn * sphere(pso.ask(state))
        # First round: only particle 0 is bad, so it has no best yet.
        bad = jnp.where(first, jnp.arange(S) == 0, jax.random.bernoulli(k_mask, 0.4, (S,)))
        f = jnp.where(bad, jax.random.choice(k_bad, bad_values, (S,)), f)
        return pso.tell(k_tell, state, f)

    for t, k in enumerate(jax.random.split(k_run, T)):
        prev = state.best_fitness
        state = step(k, state, t == 0)
        if t == 0:
            worst = -jnp.inf if maximize else jnp.inf
            assert state.best_fitness[0] == worst
            assert np.all(np.isfinite(state.best_fitness[1:]))
        else:
            assert np.all(np.isfinite(state.best_fitness[1:]))
        assert not np.any(np.isnan(state.best_fitness))
        assert np.isfinite(state.global_best_fitness)
        # Never worse, in the user's direction.
        assert np.all(sgn * state.best_fitness <= sgn * prev)
    # Every recorded best is a real finite evaluation of its position.
    finite = np.isfinite(np.asarray(state.best_fitness))
    np.testing.assert_allclose(sgn * sphere(state.best_position)[finite],
                               state.best_fitness[finite], rtol=1e-6)
    np.testing.assert_allclose(sgn * sphere(state.global_best_position[None])[0],
                               state.global_best_fitness, rtol=1e-6)


def test_all_nan_keeps_worst_and_positions_finite(key):
    pso = make_pso(6, 2)
    state = pso.init(key)
    tell = jax.jit(pso.tell)
    for k in jax.random.split(key, 5):
        state = tell(k, state, jnp.full((6,), jnp.nan))
    assert np.all(state.best_fitness == jnp.inf)
    assert state.global_best_fitness == jnp.inf
    assert np.all(np.isfinite(state.position)) and np.all(np.isfinite(state.velocity))


# ------------------------------------------------------------------ topologies
def _recover_neighborhood_best(pso, key, x_SxD, fitness_S):
    """One tell with inertia 0, c1 = 0, c2 = 1: v = r2 * (n - x) per
    coordinate. Return, for each particle, the unique candidate index j with
    v / (x_j - x) in [0, 1] in every dimension (or v == 0 when n is itself)."""
    state = pso.init(key, x_SxD)
    new = jax.jit(pso.tell)(jax.random.key(7), state, fitness_S)
    v = np.asarray(new.velocity)
    x = np.asarray(x_SxD)
    found = []
    for i in range(x.shape[0]):
        if np.all(v[i] == 0):
            found.append(i)
            continue
        cands = [j for j in range(x.shape[0]) if j != i
                 and np.all((v[i] / (x[j] - x[i]) >= 0) & (v[i] / (x[j] - x[i]) <= 1))]
        assert len(cands) == 1, (i, cands)
        found.append(cands[0])
    return found


def test_ring_neighborhood_best_hand_case(key):
    S, D = 6, 32
    pso = make_pso(S, D, lower=-1.0, upper=1.0, topology="ring", neighbors=2,
                   inertia=0.0, c1=0.0, c2=1.0, vmax=None)
    x = jax.random.uniform(key, (S, D), minval=-1.0, maxval=1.0)
    fitness = jnp.array([5.0, 1.0, 4.0, 0.0, 3.0, 2.0])
    # i sees {i-1, i, i+1} mod 6.
    assert _recover_neighborhood_best(pso, key, x, fitness) == [1, 1, 3, 3, 3, 5]


def test_ring_wider_neighborhood(key):
    S, D = 7, 32
    pso = make_pso(S, D, lower=-1.0, upper=1.0, topology="ring", neighbors=4,
                   inertia=0.0, c1=0.0, c2=1.0, vmax=None)
    x = jax.random.uniform(key, (S, D), minval=-1.0, maxval=1.0)
    fitness = jnp.array([0.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    # i sees i-2..i+2 mod 7: 0 wins for 5, 6, 0, 1, 2; 3 -> 5 (f=2), 4 -> 6 (f=1).
    assert _recover_neighborhood_best(pso, key, x, fitness) == [0, 0, 0, 5, 6, 0, 0]


def test_von_neumann_neighborhood_best_hand_case(key):
    # 3 x 3 torus, row-major:  0(8) 1(3) 2(6) / 3(1) 4(7) 5(0) / 6(5) 7(2) 8(4)
    S, D = 9, 32
    pso = make_pso(S, D, lower=-1.0, upper=1.0, topology="von_neumann",
                   inertia=0.0, c1=0.0, c2=1.0, vmax=None)
    x = jax.random.uniform(key, (S, D), minval=-1.0, maxval=1.0)
    fitness = jnp.array([8.0, 3.0, 6.0, 1.0, 7.0, 0.0, 5.0, 2.0, 4.0])
    assert _recover_neighborhood_best(pso, key, x, fitness) == [3, 7, 5, 5, 5, 5, 3, 7, 5]


def test_global_topology_follows_best(key):
    S, D = 5, 32
    pso = make_pso(S, D, lower=-1.0, upper=1.0, inertia=0.0, c1=0.0, c2=1.0, vmax=None)
    x = jax.random.uniform(key, (S, D), minval=-1.0, maxval=1.0)
    fitness = jnp.array([3.0, jnp.nan, 2.0, 9.0, 2.5])
    assert _recover_neighborhood_best(pso, key, x, fitness) == [2] * S


def test_neighbor_tables():
    assert von_neumann_grid(30) == (5, 6)
    assert von_neumann_grid(16) == (4, 4)
    assert von_neumann_grid(7) == (1, 7)
    assert neighbor_indices(8, "global") is None
    ring = neighbor_indices(8, "ring", 4)
    assert ring.shape == (8, 5) and sorted(ring[0].tolist()) == [0, 1, 2, 6, 7]
    # Prime swarm size: 1 x S torus replaced by a ring with 4 neighbours.
    vn7 = neighbor_indices(7, "von_neumann")
    assert sorted(vn7[0].tolist()) == [0, 1, 2, 5, 6]
    # Every von Neumann neighbourhood on a proper grid has 5 distinct members
    # and the relation is symmetric.
    vn = neighbor_indices(20, "von_neumann")  # 4 x 5
    for i in range(20):
        assert len(set(vn[i].tolist())) == 5
        for j in vn[i]:
            assert i in vn[j]


# ------------------------------------------------------------------ boundaries
@pytest.mark.parametrize("boundary", ["clip", "reflect", "random"])
def test_positions_stay_in_box(key, boundary):
    lo = jnp.array([-1.0, 0.0, 10.0, -100.0])
    hi = jnp.array([1.0, 0.1, 20.0, 100.0])
    # Large coefficients and no clamp: an exploding swarm that hits the walls.
    pso = make_pso(16, 4, lower=lo, upper=hi, boundary=boundary, vmax=None,
                   inertia=1.2, c1=2.5, c2=2.5)
    # Optimum of the fitness lies outside the box, pulling particles out.
    _, hist = run_history(key, pso, lambda x: jnp.sum((x - hi - 5.0) ** 2, -1), 50)
    pos = np.asarray(hist.position)
    assert np.all(pos >= np.asarray(lo)) and np.all(pos <= np.asarray(hi))
    assert np.all(np.isfinite(np.asarray(hist.velocity)))
    # The walls were actually hit (some coordinate sits on or near the upper wall).
    assert np.any(np.isclose(pos, np.asarray(hi), rtol=0, atol=1e-2 * np.asarray(hi - lo)))


def _one_move(boundary, x0, v0):
    """One tell that moves x0 by exactly v0 (w = 1, no pulls, no clamp)."""
    S, D = x0.shape
    pso = make_pso(S, D, lower=0.0, upper=1.0, boundary=boundary, vmax=None,
                   inertia=1.0, c1=0.0, c2=0.0)
    state = pso.init(jax.random.key(0), x0)._replace(velocity=v0)
    return jax.jit(pso.tell)(jax.random.key(1), state, jnp.zeros((S,)))


def test_boundary_handlers_one_step():
    x0 = jnp.array([[0.9, 0.5, 0.1], [0.5, 0.5, 0.5]])
    v0 = jnp.array([[0.3, 0.2, -0.4], [0.1, -0.1, 2.3]])
    # expected raw: [[1.2, 0.7, -0.3], [0.6, 0.4, 2.8]]
    out = np.array([[True, False, True], [False, False, True]])

    r = _one_move("reflect", x0, v0)
    np.testing.assert_allclose(r.position, [[0.8, 0.7, 0.3], [0.6, 0.4, 0.8]], atol=1e-6)
    np.testing.assert_allclose(r.velocity, np.where(out, -v0, v0), atol=1e-7)

    c = _one_move("clip", x0, v0)
    np.testing.assert_allclose(c.position, [[1.0, 0.7, 0.0], [0.6, 0.4, 1.0]], atol=1e-6)
    np.testing.assert_allclose(c.velocity, np.where(out, 0.0, v0), atol=1e-7)

    q = _one_move("random", x0, v0)
    p = np.asarray(q.position)
    np.testing.assert_allclose(p[~out], (x0 + v0)[~out], atol=1e-6)  # untouched
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(q.velocity, np.where(out, 0.0, v0), atol=1e-7)


def test_reflect_keeps_full_precision_inside_box(key):
    """In-box coordinates are not re-expressed as lo + (x - lo), which would
    round them to the float32 grid of |lo| and stall convergence near 0."""
    x, f, _ = jmin(key, sphere, 20, 3, 400, lower=-5.12, upper=5.12)
    # The float32 spacing at 5.12 is 4.8e-7; the best point is much finer.
    ax = np.abs(np.asarray(x))
    assert np.any((ax > 0) & (ax < 1e-8)), x
    assert f < 1e-16


def test_velocity_clamp(key):
    pso = make_pso(16, 3, lower=0.0, upper=jnp.array([1.0, 10.0, 100.0]), vmax=0.2,
                   inertia=1.0, c1=3.0, c2=3.0)
    _, hist = run_history(key, pso, rastrigin, 30)
    limit = 0.2 * np.array([1.0, 10.0, 100.0])
    v = np.abs(np.asarray(hist.velocity))
    assert np.all(v <= limit * (1 + 1e-6))
    assert np.any(v > 0.99 * limit)  # the clamp binds


# ------------------------------------------------------------------- maximize
def test_maximize_mirrors_minimize(key):
    kw = dict(lower=-3.0, upper=3.0, topology="ring")
    xa, fa, sa = jmin(key, sphere, 12, 4, 60, **kw)
    xb, fb, sb = jmin(key, lambda x: -sphere(x), 12, 4, 60, maximize=True, **kw)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(fa, -fb)
    np.testing.assert_array_equal(sa.position, sb.position)
    np.testing.assert_array_equal(sa.best_fitness, -sb.best_fitness)
    assert fb > -1e-3


# ----------------------------------------------------------------------- vmap
def test_vmap_swarms_equal_separate_runs(key):
    N, S, D, T = 8, 10, 4, 15
    pso = make_pso(S, D, lower=-5.12, upper=5.12, topology="von_neumann",
                   boundary="random")
    k_init, k_run = jax.random.split(key)
    init_keys = jax.random.split(k_init, N)
    step_keys_TxN = jax.random.split(k_run, T * N).reshape(T, N)

    tell = jax.jit(pso.tell)
    vtell = jax.jit(jax.vmap(pso.tell))
    states = jax.vmap(pso.init)(init_keys)
    singles = [pso.init(k) for k in init_keys]
    for t in range(T):
        states = vtell(step_keys_TxN[t], states, jax.vmap(rastrigin)(states.position))
        singles = [tell(step_keys_TxN[t, n], s, rastrigin(s.position))
                   for n, s in enumerate(singles)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *singles)
    for name, a, b in zip(PSOState._fields, states, stacked):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_init_and_init_position(key):
    pso = make_pso(8, 3, lower=jnp.array([0.0, -1.0, 5.0]), upper=jnp.array([1.0, 1.0, 6.0]))
    init = jax.jit(pso.init)
    s = init(key)
    pos = np.asarray(s.position)
    assert pos.shape == (8, 3) and s.position.dtype == jnp.float32
    assert np.all(pos >= [0.0, -1.0, 5.0]) and np.all(pos <= [1.0, 1.0, 6.0])
    assert np.all(np.abs(np.asarray(s.velocity)) <= 0.1 * np.array([1.0, 2.0, 1.0]) + 1e-7)
    assert np.all(s.best_fitness == jnp.inf) and s.global_best_fitness == jnp.inf
    assert s.iteration == 0 and s.iteration.dtype == jnp.int32
    design = jnp.tile(jnp.array([0.5, 0.0, 5.5]), (8, 1))
    np.testing.assert_array_equal(init(key, design).position, design)
    batch = jax.jit(jax.vmap(pso.init))(jax.random.split(key, 4))
    assert batch.position.shape == (4, 8, 3)
    assert len(np.unique(np.asarray(batch.position[:, 0, 0]))) == 4
    with pytest.raises(ValueError, match="init_position"):
        pso.init(key, jnp.zeros((7, 3)))
    with pytest.raises(ValueError, match="fitness"):
        pso.tell(key, s, jnp.zeros((7,)))


# --------------------------------------------------- inertia and constriction
def test_inertia_linear_decay_values(key):
    """With no pulls, v_{t+1} = w_t v_t: check w_t = 0.9 -> 0.4 linearly over
    num_iterations = 6 tells, then constant."""
    pso = make_pso(4, 2, lower=-1e6, upper=1e6, inertia=(0.9, 0.4), num_iterations=6,
                   c1=0.0, c2=0.0, vmax=None)
    state = pso.init(key)
    tell = jax.jit(pso.tell)
    ws = []
    for k in jax.random.split(key, 8):
        new = tell(k, state, jnp.zeros(4))
        # abs: a reflection at a wall negates the velocity component.
        ws.append(np.abs(np.asarray(new.velocity / state.velocity)))
        state = new
    expected = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.4, 0.4])
    np.testing.assert_allclose(np.stack(ws), np.broadcast_to(expected[:, None, None],
                                                              (8, 4, 2)), rtol=1e-5)


def test_constriction_factor(key):
    chi = constriction_factor(2.05, 2.05)
    assert abs(chi - 0.72984) < 1e-4
    # All particles on one point: pulls vanish, so v' = chi v.
    pso = make_pso(5, 3, lower=-10.0, upper=10.0, constriction=True, c1=2.05, c2=2.05,
                   vmax=None)
    state = pso.init(key, jnp.zeros((5, 3)))
    new = jax.jit(pso.tell)(key, state, jnp.ones(5))
    np.testing.assert_allclose(new.velocity, chi * state.velocity, rtol=1e-6)


# -------------------------------------------------------------------- compile
def test_tell_traces_once(key):
    traces = []

    pso = make_pso(8, 3, topology="ring", inertia=(0.9, 0.4), num_iterations=10)

    @jax.jit
    def step(k, state):
        traces.append(1)  # Python side effect: runs only while tracing
        return pso.tell(k, state, sphere(pso.ask(state)))

    state = pso.init(key)
    for k in jax.random.split(key, 10):
        state = step(k, state)
    assert int(state.iteration) == 10
    assert len(traces) == 1


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("kwargs,match", [
    (dict(num_particles=1), "num_particles"),
    (dict(num_particles=2.5), "num_particles"),
    (dict(num_dims=0), "num_dims"),
    (dict(lower=1.0, upper=1.0), "lower < upper"),
    (dict(lower=[0.0, 2.0], upper=[1.0, 1.0]), "lower < upper"),
    (dict(lower=[0.0, 0.0, 0.0]), "lower"),
    (dict(upper=math.inf), "upper"),
    (dict(topology="star"), "topology"),
    (dict(boundary="wrap"), "boundary"),
    (dict(topology="ring", neighbors=0), "neighbors"),
    (dict(topology="ring", neighbors=3), "neighbors"),
    (dict(topology="ring", neighbors=10), "neighbors"),
    (dict(inertia=(0.9, 0.4)), "num_iterations"),
    (dict(inertia=(0.9, 0.5, 0.4), num_iterations=5), "inertia"),
    (dict(constriction=True), "c1 \\+ c2 > 4"),
    (dict(constriction=True, c1=2.0, c2=2.0), "c1 \\+ c2 > 4"),
    (dict(constriction=True, c1=2.05, c2=2.05, inertia=0.5), "inertia"),
    (dict(vmax=0.0), "vmax"),
    (dict(c1=-0.1), "c1 must be a finite number >= 0, got -0.1"),
    (dict(c2=math.inf), "c2 must be a finite number >= 0, got inf"),
    (dict(c1=math.nan), "c1 must be a finite number >= 0"),
    (dict(c2="2"), "c2 must be a finite number >= 0, got '2'"),
    (dict(c1=True), "c1 must be a finite number >= 0, got True"),
    (dict(inertia=math.nan), "inertia must be a finite number or \\(start, end\\), got nan"),
    (dict(inertia="0.7"), "inertia must be a finite number"),
    (dict(inertia=(0.9, math.inf), num_iterations=5), "inertia \\(start, end\\) must be finite numbers"),
    (dict(constriction="yes"), "constriction must be True or False, got 'yes'"),
    (dict(vmax="half"), "vmax must be a number > 0 or None, got 'half'"),
    (dict(topology=["ring"]), "unknown topology \\['ring'\\]"),
    (dict(num_particles="four"), "num_particles must be an integer >= 2, got 'four'"),
    (dict(topology="ring", neighbors="two"), "neighbors='two'"),
])
def test_bad_inputs_raise(kwargs, match):
    args = dict(num_particles=8, num_dims=2)
    args.update(kwargs)
    S, D = args.pop("num_particles"), args.pop("num_dims")
    with pytest.raises(ValueError, match=match):
        make_pso(S, D, **args)


def test_a_coefficient_sweep_vmaps_over_params_and_equals_separate_strategies():
    """PSOParams is a pytree: one vmapped tell over several c1 equals a strategy built per c1."""
    c1s = (0.5, 1.0, 2.0)
    pso = make_pso(8, 3)
    state = pso.init(jax.random.key(0))
    fit = jnp.sum(pso.ask(state) ** 2, axis=-1)
    sweep = jax.tree.map(lambda *xs: jnp.stack(xs), *[pso.params._replace(c1=jnp.float32(c)) for c in c1s])
    moved = jax.vmap(pso.tell, in_axes=(None, None, None, 0))(jax.random.key(1), state, fit, sweep)
    for i, c in enumerate(c1s):
        alone = make_pso(8, 3, c1=c).tell(jax.random.key(1), state, fit)
        np.testing.assert_allclose(moved.position[i], alone.position, rtol=1e-6, atol=1e-7)
    assert default_params() == pso.params


def test_numpy_coefficients_and_zero_pulls_are_still_valid():
    pso = make_pso(np.int64(8), 2, c1=np.float32(0.0), c2=0, inertia=(np.float64(0.9), 0.4), num_iterations=5,
                   vmax=np.float32(0.5))
    assert float(pso.params.c1) == 0.0 and float(pso.params.inertia_start) == pytest.approx(0.9)
