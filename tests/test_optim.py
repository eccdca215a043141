"""Tests for jaxswarm.optim: per-member optimizers with traced hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxswarm.optim import (
    OPTIMIZERS,
    OptHParams,
    current_learning_rate,
    default_hparams,
    hparams_of,
    make_optimizer,
    with_hparams,
)

STEPS = 4
LR, MOM, WD = 0.05, 0.8, 0.01


@pytest.fixture
def key():
    return jax.random.key(0)


def _params(key):
    kw, kb = jax.random.split(key)
    return {"w": jax.random.normal(kw, (3, 4)), "b": jax.random.normal(kb, (4,))}


@jax.jit
def _grad(params):
    """Gradient of a non-quadratic loss, so it depends on the trajectory."""
    loss = lambda p: jnp.sum(jnp.sin(p["w"]) ** 2) + jnp.sum(p["b"] ** 4) + jnp.sum(p["w"] @ p["b"])
    return jax.grad(loss)(params)


def _plain(name, lr, m, wd, b2=0.999, eps=1e-8):
    """The plain Optax optimizer, written out independently of jaxswarm.optim."""
    l2 = optax.add_decayed_weights(wd)
    return {
        "sgd": lambda: optax.chain(l2, optax.sgd(lr)),
        "momentum": lambda: optax.chain(l2, optax.sgd(lr, momentum=m)),
        "nesterov": lambda: optax.chain(l2, optax.sgd(lr, momentum=m, nesterov=True)),
        "rmsprop": lambda: optax.chain(l2, optax.rmsprop(lr, momentum=m)),
        "adagrad": lambda: optax.chain(l2, optax.adagrad(lr)),
        "adam": lambda: optax.chain(l2, optax.adam(lr, b1=m, b2=b2, eps=eps)),
        "adamw": lambda: optax.adamw(lr, b1=m, b2=b2, eps=eps, weight_decay=wd),
        "nadam": lambda: optax.chain(l2, optax.nadam(lr, b1=m, b2=b2, eps=eps)),
        "adadelta": lambda: optax.chain(l2, optax.adadelta(lr)),
    }[name]()


def _run(init, update, params, steps=STEPS, grad_fn=_grad):
    """Applies `steps` updates; returns the list of (updates, params) per step."""
    state, out = init(params), []
    for _ in range(steps):
        updates, state = update(grad_fn(params), state, params)
        params = optax.apply_updates(params, updates)
        out.append((updates, params))
    return out


def _assert_trajectories_close(a, b, rtol):
    for (u_a, p_a), (u_b, p_b) in zip(a, b, strict=True):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-7), u_a, u_b)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-7), p_a, p_b)


_OPT = make_optimizer(OPTIMIZERS, total_steps=STEPS)
_update = jax.jit(_OPT.update)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_selected_update_equals_plain_optax(key, name):
    """Like with like: the plain optimizer gets the same float32 hyperparameters (beta2 and eps
    off their defaults, so an optimizer that ignored them would fail here)."""
    hp = default_hparams(optimizer=name, learning_rate=LR, momentum=MOM, weight_decay=WD, beta2=0.95, eps=1e-3)
    ours = _run(lambda p: _OPT.init(p, hp), _update, _params(key))
    plain_tx = _plain(name, hp.learning_rate, hp.momentum, hp.weight_decay, hp.beta2, hp.eps)
    plain = _run(plain_tx.init, jax.jit(plain_tx.update), _params(key))
    _assert_trajectories_close(ours, plain, rtol=1e-6)


@pytest.mark.parametrize("name", ["adam", "momentum"])
def test_plain_python_float_hyperparameters_agree_loosely(key, name):
    """Against Python-float hyperparameters only float32 rounding differs (beta2 and eps untuned:
    Python floats too, as a space that does not tune them builds its optimizer)."""
    opt = make_optimizer(OPTIMIZERS, total_steps=STEPS, traced=())
    hp = default_hparams(optimizer=name, learning_rate=LR, momentum=MOM, weight_decay=WD)
    ours = _run(lambda p: opt.init(p, hp), jax.jit(opt.update), _params(key))
    plain_tx = _plain(name, LR, MOM, WD)
    _assert_trajectories_close(ours, _run(plain_tx.init, plain_tx.update, _params(key)), rtol=2e-5)


@pytest.mark.parametrize("name", ["adam", "nesterov"])
def test_lr_decay_equals_optax_cosine_schedule(key, name):
    total, decay = 6, 0.1
    opt = make_optimizer(("sgd", "nesterov", "adam"), total_steps=total)
    hp = default_hparams(names=opt.names, optimizer=name, learning_rate=LR, momentum=MOM,
                         weight_decay=WD, lr_decay=decay)
    ours = _run(lambda p: opt.init(p, hp), jax.jit(opt.update), _params(key), steps=total + 2)
    sched = optax.cosine_decay_schedule(hp.learning_rate, total - 1, alpha=hp.lr_decay)
    plain_tx = _plain(name, sched, hp.momentum, hp.weight_decay, hp.beta2, hp.eps)
    plain = _run(plain_tx.init, jax.jit(plain_tx.update), _params(key), steps=total + 2)
    _assert_trajectories_close(ours, plain, rtol=1e-6)


def test_lr_schedule_reaches_lr_times_decay_at_the_end(key):
    total, lr, decay = 5, 0.2, 0.25
    opt = make_optimizer(("sgd",), total_steps=total)
    state = opt.init({"w": jnp.zeros(3)}, default_hparams(names=("sgd",), learning_rate=lr, lr_decay=decay))
    grads = {"w": jnp.ones(3)}
    used = []
    for _ in range(total + 2):
        announced = float(current_learning_rate(opt, state))
        updates, state = opt.update(grads, state, {"w": jnp.zeros(3)})
        used.append(-float(updates["w"][0]))
        assert used[-1] == announced
    np.testing.assert_allclose(used[0], lr, rtol=1e-7)
    np.testing.assert_allclose(used[total - 1], lr * decay, rtol=1e-6)  # the last planned step
    np.testing.assert_allclose(used[total:], lr * decay, rtol=1e-6)  # stays there
    mid = (total - 1) // 2  # cos(pi/2) = 0: halfway between lr and lr * decay
    np.testing.assert_allclose(used[mid], lr * (decay + 1) / 2, rtol=1e-6)
    assert all(a > b for a, b in zip(used[: total - 1], used[1:total]))  # monotone decay
    # lr_decay = 1 is exactly the constant learning rate.
    const = opt.init({"w": jnp.zeros(3)}, default_hparams(names=("sgd",), learning_rate=lr))
    for _ in range(total):
        updates, const = opt.update(grads, const, {"w": jnp.zeros(3)})
        assert float(updates["w"][0]) == -np.float32(lr)


def test_no_recompiles_when_values_change(key):
    traces = {"init": 0, "update": 0}

    def init(params, hp):
        traces["init"] += 1
        return _OPT.init(params, hp)

    def update(grads, state, params):
        traces["update"] += 1
        return _OPT.update(grads, state, params)

    init_j, update_j = jax.jit(init), jax.jit(update)
    params = _params(key)
    state = None
    for i, name in enumerate(OPTIMIZERS):
        hp = default_hparams(optimizer=name, learning_rate=0.1 / (i + 1), momentum=0.5 + 0.05 * i,
                             weight_decay=0.01 * i, lr_decay=1.0 - 0.1 * i, beta2=0.9 + 0.01 * i,
                             eps=10.0 ** -(i + 1))
        fresh = init_j(params, hp)
        # Also change values inside an existing state.
        state = fresh if state is None else with_hparams(state, hp)
        for s in (fresh, state):
            updates, _ = update_j(_grad(params), s, params)
            jax.block_until_ready(updates)
        assert int(hparams_of(state).optimizer) == i
    assert traces == {"init": 1, "update": 1}


def test_vmapped_members_equal_separate_runs(key):
    names = OPTIMIZERS
    S = len(names)
    hp_S = OptHParams(
        optimizer=jnp.arange(S, dtype=jnp.int32),
        learning_rate=jnp.linspace(0.01, 0.1, S),
        momentum=jnp.linspace(0.5, 0.95, S),
        weight_decay=jnp.linspace(0.0, 0.02, S),
        lr_decay=jnp.linspace(1.0, 0.1, S),
        beta2=jnp.linspace(0.9, 0.999, S),
        eps=jnp.logspace(-8, -3, S),
    )
    params_S = jax.vmap(_params)(jax.random.split(key, S))
    runs_S = _run(lambda p: jax.vmap(_OPT.init)(p, hp_S), jax.jit(jax.vmap(_OPT.update)), params_S,
                  grad_fn=jax.jit(jax.vmap(_grad)))
    for s in range(S):
        hp = jax.tree.map(lambda x: x[s], hp_S)
        single = _run(lambda p: _OPT.init(p, hp), _update, jax.tree.map(lambda x: x[s], params_S))
        batched = [jax.tree.map(lambda x: x[s], step) for step in runs_S]
        _assert_trajectories_close(batched, single, rtol=1e-6)


def test_hyperparams_live_in_opt_state(key):
    hp = default_hparams(optimizer="rmsprop", learning_rate=0.3, momentum=0.1,
                         weight_decay=0.2, lr_decay=0.5)
    state = _OPT.init(_params(key), hp)
    stored = hparams_of(state)
    assert stored.optimizer.dtype == jnp.int32 and stored.learning_rate.dtype == jnp.float32
    jax.tree.map(np.testing.assert_array_equal, stored, hp)
    _, state = _update(_grad(_params(key)), state, _params(key))
    jax.tree.map(np.testing.assert_array_equal, hparams_of(state), hp)


def test_validation():
    with pytest.raises(ValueError, match="adamax"):
        make_optimizer(("sgd", "adamax"))
    with pytest.raises(ValueError):
        make_optimizer(())
    with pytest.raises(ValueError):
        make_optimizer(("sgd", "sgd"))
    with pytest.raises(ValueError, match="total_steps"):
        make_optimizer(total_steps=0)
    with pytest.raises(ValueError, match="adam"):
        default_hparams(names=("sgd",), optimizer="adam")
    with pytest.raises(ValueError, match="lr"):
        default_hparams(lr=0.1)
    assert int(default_hparams(names=("sgd", "adam")).optimizer) == 1
    assert int(default_hparams(names=("sgd", "momentum")).optimizer) == 0
