"""The packed layout trains the same objective as the masked layout, isolates NaNs, compiles rarely."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxswarm import train
from jaxswarm.layouts import packed
from jaxswarm.models import mlp as models
from jaxswarm.models import mlp_space

F, C = 7, 3
ACTS = ("relu", "tanh", "sigmoid", "elu")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, F)).astype(np.float32)
    y = ((x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1)).astype(np.int32)
    return train.device_data(x[:80], y[:80], x[80:], y[80:])


def _space(**kw):
    kw = {"max_layers": 3, "units": (2, 12), "activations": ACTS, "learning_rate": (1e-3, 3e-2), **kw}
    return mlp_space(**kw)


CFG = train.TrainConfig(epochs=2, batch_size=16, eval_batch_size=32)


def _archs(trainer_hparams, pos):
    arch_S, _ = jax.vmap(trainer_hparams)(pos)
    return [(int(n), tuple(int(v) for v in u[:n])) for n, u in zip(arch_S.n_layers, arch_S.units)]


def test_ladder_up_is_monotone_and_bounds_padding():
    values = [packed.ladder_up(n) for n in range(1, 600)]
    assert all(v >= n for n, v in zip(range(1, 600), values))
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert max(v / n for n, v in zip(range(1, 600), values)) <= 1.5
    assert packed.ladder_up(200, cap=192) == 200 and packed.ladder_up(150, cap=192) == 192


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plan_places_every_member_once_and_tables_are_inverse(seed):
    rng = np.random.default_rng(seed)
    archs = []
    for _ in range(40):
        d = int(rng.integers(1, 4))
        archs.append((d, tuple(int(u) for u in np.exp(rng.uniform(np.log(16), np.log(256), d)).astype(int))))
    plan = packed.make_plan(archs, 256, 10, 784, groups=5)
    t = plan.tables
    P, R = plan.shape.columns, len(t.gather_R)
    assert P >= sum(a[1][0] for a in archs)
    assert len(plan.shape.groups) <= 5
    # every member's first layer: its own contiguous columns, unit ids 0..u0-1
    for m, (d, units) in enumerate(archs):
        cols = np.nonzero(t.col_member_P == m)[0]
        assert len(cols) == units[0] and np.array_equal(t.col_unit_P[cols], np.arange(units[0]))
        assert np.all(np.diff(cols) == 1)
        # its slot lies in a group of its depth whose widths hold its widths
        slot = t.member_slot_S[m]
        assert t.slot_member_T[slot] == m
        caps = np.cumsum([0] + [g.capacity for g in plan.shape.groups])
        g = plan.shape.groups[np.searchsorted(caps, slot, side="right") - 1]
        assert g.depth == d and all(u <= w for u, w in zip(units, g.widths))
    # the backward gather is the inverse of the forward one on used columns
    used = t.gather_R < P
    assert np.array_equal(t.inverse_P[t.gather_R[used]], np.nonzero(used)[0])
    assert np.all(t.inverse_P[t.col_member_P < 0] == R)
    assert len(np.unique(t.gather_R[used])) == used.sum() == sum(a[1][0] for a in archs)


def test_plan_reuses_a_known_shape_for_a_reordered_swarm():
    archs = [(1, (20,)), (2, (30, 10)), (3, (64, 16, 16)), (2, (17, 200))]
    first = packed.make_plan(archs, 256, 10, 64)
    again = packed.make_plan(archs[::-1], 256, 10, 64, known=[first.shape])
    assert again.shape == first.shape


def _masked_logits_and_grads(space, keys, pos, x, y):
    cfg = models.config(space, F, C)
    hp = models.decode(space, models.config(space, F, C))
    arch_S, _ = jax.vmap(hp)(pos)
    k_init = jax.vmap(lambda k: jax.random.split(k, 3)[0])(keys)
    variables = jax.vmap(models.init_mlp, in_axes=(0, 0, None))(k_init, arch_S, cfg)

    def loss(params_S):
        def one(p, s, a):
            logits, _ = models.apply_mlp({"params": p, "batch_stats": s}, x, a, cfg, train=False)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        return jax.vmap(one)(params_S, variables["batch_stats"], arch_S).sum()

    def logits(params_S):
        return jax.vmap(lambda p, s, a: models.apply_mlp({"params": p, "batch_stats": s}, x, a, cfg,
                                                         train=False)[0])(
            params_S, variables["batch_stats"], arch_S)

    return logits(variables["params"]), jax.grad(loss)(variables["params"])


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_and_gradients_equal_the_masked_members(key, data, seed):
    space = _space()
    S = 7
    pos = jax.random.uniform(jax.random.fold_in(key, seed), (S, space.num_dims))
    keys = jax.random.split(jax.random.fold_in(key, 100 + seed), S)
    x, y = data.x_train[:16], data.y_train[:16]
    trainer = packed.make_packed_train(space, CFG, F, C, groups=2)
    plan = trainer.plan(pos)
    params = jax.jit(lambda k, p: trainer.init(k, p, plan))(keys, pos)
    logits = jax.jit(lambda w, p: trainer.apply(w, p, x, plan))(params, pos)
    grads = jax.jit(jax.grad(lambda w, p: trainer.loss(w, p, x, y, plan)))(params, pos)
    ref_logits, ref_grads = jax.jit(lambda k, p: _masked_logits_and_grads(space, k, p, x, y))(keys, pos)
    cfg = models.config(space, F, C)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    ours = packed.unpack_params(grads, plan, cfg)
    for name in ours:
        for leaf in ("kernel", "bias"):
            np.testing.assert_allclose(ours[name][leaf], ref_grads[name][leaf], rtol=1e-4, atol=1e-6,
                                       err_msg=f"{name}/{leaf}")
    # and the packed params at init are the masked members' params, exactly
    init_back = packed.unpack_params(params, plan, cfg)
    k_init = jax.vmap(lambda k: jax.random.split(k, 3)[0])(keys)
    arch_S, _ = jax.vmap(models.decode(space, models.config(space, F, C)))(pos)
    ref = jax.vmap(models.init_mlp, in_axes=(0, 0, None))(k_init, arch_S, cfg)["params"]
    for name in init_back:
        np.testing.assert_array_equal(init_back[name]["kernel"], ref[name]["kernel"])


@pytest.mark.parametrize("seed,optimizers", [(0, None), (3, ("sgd", "momentum", "rmsprop", "adam"))])
def test_training_matches_the_masked_trainer_with_a_shared_shuffle_key(key, data, seed, optimizers):
    space = _space(optimizers=optimizers, weight_decay=(1e-5, 1e-2) if optimizers else None)
    S = 6
    pos = jax.random.uniform(jax.random.fold_in(key, seed), (S, space.num_dims))
    keys = jax.random.split(jax.random.fold_in(key, 10 + seed), S)
    shuffle_key = jax.random.fold_in(key, 20 + seed)
    got = packed.make_packed_train(space, CFG, F, C, groups=3).train_swarm(keys, pos, data, shuffle_key)
    masked = train.make_train(space, CFG, F, C)
    want = jax.jit(jax.vmap(masked.train_member, in_axes=(0, 0, None, None)))(keys, pos, data, shuffle_key)
    depths = {a[0] for a in _archs(masked.hparams, pos)}
    assert len(depths) >= 2  # a real mix of depths
    assert got.train_loss.shape == want.train_loss.shape == (S, CFG.epochs)
    for field in ("train_loss", "val_loss", "val_accuracy_curve"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=2e-4, atol=1e-5,
                                   err_msg=field)
    np.testing.assert_array_equal(got.diverged, want.diverged)


def test_a_diverging_member_never_disturbs_the_others(key, data):
    space = _space(learning_rate=(1e-3, 1e35), optimizers=("sgd",))
    S = 5
    pos = jax.random.uniform(key, (S, space.num_dims))
    lr_dim, act_dim = space.names.index("learning_rate"), space.names.index("activation")
    sane = pos.at[:, lr_dim].set(0.03).at[2, act_dim].set(0.0)  # lr ~ 1e-2; member 2 relu
    wild = sane.at[2, lr_dim].set(1.0)  # lr 1e35: member 2 overflows to inf/NaN
    keys = jax.random.split(jax.random.fold_in(key, 1), S)
    sk = jax.random.fold_in(key, 2)
    trainer = packed.make_packed_train(space, CFG, F, C, groups=2)
    a = trainer.train_swarm(keys, sane, data, sk)
    b = trainer.train_swarm(keys, wild, data, sk)
    assert trainer.stats["traces"] == 1  # same architectures, same program
    assert bool(b.diverged[2]) and b.fitness[2] == -jnp.inf and not bool(a.diverged[2])
    others = np.array([0, 1, 3, 4])
    assert not np.any(np.asarray(b.diverged)[others])
    for field in ("train_loss", "val_loss", "fitness"):
        np.testing.assert_array_equal(np.asarray(getattr(b, field))[others],
                                      np.asarray(getattr(a, field))[others], err_msg=field)


def test_moved_particles_that_fit_the_known_plan_do_not_recompile(key, data):
    space = _space()
    S = 12
    trainer = packed.make_packed_train(space, CFG, F, C, groups=4)
    pos = jax.random.uniform(key, (S, space.num_dims))
    keys = jax.random.split(jax.random.fold_in(key, 2), S)
    trainer.train_swarm(keys, pos, data, key)
    # reordered swarm; new learning rates and activations; a narrower first layer
    moved = pos[::-1]
    for name in ("learning_rate", "activation"):
        d = space.names.index(name)
        moved = moved.at[:, d].set(jax.random.uniform(jax.random.fold_in(key, d), (S,)))
    d = space.names.index("units_1")
    moved = moved.at[:, d].set(moved[:, d] * 0.8)
    hp = models.decode(space, models.config(space, F, C))
    assert sorted(_archs(hp, moved)) != sorted(_archs(hp, pos))
    m = trainer.train_swarm(keys, moved, data, key)
    assert trainer.stats["traces"] == 1 and len(trainer.stats["shapes"]) == 1
    assert m.fitness.shape == (S,)


def test_supports_and_bad_input():
    assert packed.supports(_space())
    assert not packed.supports(_space(dropout=(0.0, 0.5)))
    assert not packed.supports(_space(batch_norm=True))
    with pytest.raises(ValueError, match="batch_norm"):
        packed.make_packed_train(_space(batch_norm=True), CFG, F, C)
    with pytest.raises(ValueError, match="groups"):
        packed.make_plan([(1, (4,))], 8, 2, 4, groups=0)
