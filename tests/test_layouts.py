"""The packed layout trains the same objective as the masked layout, isolates NaNs, compiles rarely."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxswarm import train
from jaxswarm.data import kfold_indices
from jaxswarm.layouts import LAYOUTS, auto, packed, resolve
from jaxswarm.layouts.masked import DataShape
from jaxswarm.models import cnn_space, family_of
from jaxswarm.study import StudyConfig
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


def test_first_layer_columns_are_blocked_by_optimizer():
    """Several optimizers: one column block per optimizer name (an absent one gets none), each member's
    columns inside its optimizer's block; a known shape serves a swarm only where every block fits it."""
    archs, opts = [(1, [20]), (2, [30, 10]), (1, [16]), (2, [24, 8])], [0, 2, 2, 0]
    p = packed.make_plan(archs, 256, 10, 64, optimizers=opts, n_optimizers=3)
    blocks = p.shape.blocks
    assert len(blocks) == 3 and blocks[1] == 0 and sum(blocks) == p.shape.columns
    assert blocks[0] >= 20 + 24 and blocks[2] >= 30 + 16
    block_of = np.repeat(np.arange(3), blocks)
    cols = np.asarray(p.tables.col_member_P)
    for m, o in enumerate(opts):
        assert set(block_of[cols == m]) == {o} and (cols == m).sum() == archs[m][1][0]
    again = packed.make_plan(archs, 256, 10, 64, known=[p.shape], optimizers=opts, n_optimizers=3)
    assert again.shape == p.shape
    moved = packed.make_plan(archs, 256, 10, 64, known=[p.shape], optimizers=[0, 1, 2, 0], n_optimizers=3)
    assert moved.shape != p.shape and moved.shape.blocks[1] >= 30  # optimizer 1's block was empty
    plain = packed.make_plan(archs, 256, 10, 64)
    assert plain.shape.blocks == () and packed.make_plan(
        archs, 256, 10, 64, known=[plain.shape], optimizers=opts, n_optimizers=3).shape.blocks  # not reused unblocked


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
            logits, _ = models.apply_mlp({"params": p, "batch_stats": s}, x, a, cfg, train=True,
                                         key=jax.random.key(0))  # batch statistics; no dropout in the space
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        return jax.vmap(one)(params_S, variables["batch_stats"], arch_S).sum()

    def logits(params_S):
        return jax.vmap(lambda p, s, a: models.apply_mlp({"params": p, "batch_stats": s}, x, a, cfg,
                                                         train=False)[0])(
            params_S, variables["batch_stats"], arch_S)

    return logits(variables["params"]), jax.grad(loss)(variables["params"])


@pytest.mark.parametrize("seed,batch_norm,dropout", [(0, False, None), (1, False, None), (2, True, (0.0, 0.6))])
def test_forward_and_gradients_equal_the_masked_members(key, data, seed, batch_norm, dropout):
    space = _space(batch_norm=batch_norm, dropout=dropout)
    S = 7
    pos = jax.random.uniform(jax.random.fold_in(key, seed), (S, space.num_dims))
    keys = jax.random.split(jax.random.fold_in(key, 100 + seed), S)
    x, y = data.x_train[:16], data.y_train[:16]
    trainer = packed.make_packed_train(space, CFG, F, C, groups=2)
    plan = trainer.plan(pos)
    variables = jax.jit(lambda k, p: trainer.init(k, p, plan))(keys, pos)
    logits = jax.jit(lambda w, p: trainer.apply(w, p, x, plan)[0])(variables, pos)
    drop_keys = jax.vmap(lambda _: jax.random.key(0))(jnp.arange(S))  # the reference's key, every member
    grads = jax.jit(jax.grad(lambda w, p: trainer.loss((w, variables[1]), p, x, y, plan, drop_keys)))(
        variables[0], pos)
    ref_logits, ref_grads = jax.jit(lambda k, p: _masked_logits_and_grads(space, k, p, x, y))(keys, pos)
    cfg = models.config(space, F, C)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    ours = packed.unpack_params(grads, plan, cfg)
    for name in ours:
        for leaf in ("kernel", "bias"):
            np.testing.assert_allclose(ours[name][leaf], ref_grads[name][leaf], rtol=1e-4, atol=1e-6,
                                       err_msg=f"{name}/{leaf}")
    # and the packed params at init are the masked members' params, exactly
    if batch_norm:  # a real mix: some members normalize, some do not
        arch_S, _ = jax.vmap(models.decode(space, models.config(space, F, C)))(pos)
        assert 0 < int(np.sum(arch_S.batch_norm)) < S
    init_back = packed.unpack_params(variables[0], plan, cfg)
    k_init = jax.vmap(lambda k: jax.random.split(k, 3)[0])(keys)
    arch_S, _ = jax.vmap(models.decode(space, models.config(space, F, C)))(pos)
    ref = jax.vmap(models.init_mlp, in_axes=(0, 0, None))(k_init, arch_S, cfg)["params"]
    for name in init_back:
        np.testing.assert_array_equal(init_back[name]["kernel"], ref[name]["kernel"])


# Batch norm runs with SGD: before batch norm a bias has zero gradient in exact arithmetic, and Adam
# turns its float32 rounding noise (~1e-9) into steps of size lr that move the running mean. The two
# layouts then differ in val_loss by ~1e-4 while their training losses agree to 1e-7 (measured).
@pytest.mark.parametrize("seed,optimizers,batch_norm,dropout", [
    pytest.param(0, None, False, None, marks=pytest.mark.slow),  # ~12 s; Adam alone is a case of the next one
    pytest.param(3, ("sgd", "momentum", "rmsprop", "adam"), False, None, marks=pytest.mark.slow),  # ~17 s
    (4, ("sgd",), True, (0.0, 0.6)),
    pytest.param(5, ("adam", "adamw", "nadam", "adadelta"), False, None, marks=pytest.mark.slow)])  # ~25 s
def test_training_matches_the_masked_trainer_with_a_shared_shuffle_key(key, data, seed, optimizers, batch_norm,
                                                                       dropout):
    # The Adam family's beta2 and eps, the init scheme and an activation per layer, tuned too.
    adam = optimizers is not None and "nadam" in optimizers
    space = _space(optimizers=optimizers, weight_decay=(1e-5, 1e-2) if optimizers else None, batch_norm=batch_norm,
                   dropout=dropout, beta2=(0.9, 0.9999) if adam else None, eps=(1e-8, 1e-3) if adam else None,
                   init_schemes=("auto", "he_uniform", "glorot_normal", "lecun_uniform") if adam else None,
                   per_layer_activation=adam)
    S = 6
    pos = jax.random.uniform(jax.random.fold_in(key, seed), (S, space.num_dims))
    keys = jax.random.split(jax.random.fold_in(key, 10 + seed), S)
    shuffle_key = jax.random.fold_in(key, 20 + seed)
    trainer = packed.make_packed_train(space, CFG, F, C, groups=3)
    got = trainer.train_swarm(keys, pos, data, shuffle_key)
    assert bool(trainer.plan(pos).shape.blocks) == (len(optimizers or ()) > 1)  # blocked where several optimizers
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
    assert packed.supports(_space(dropout=(0.0, 0.5), batch_norm=True))
    assert not packed.supports(cnn_space())
    with pytest.raises(ValueError, match="MLP"):
        packed.make_packed_train(cnn_space(), CFG, F, C)
    with pytest.raises(ValueError, match="groups"):
        packed.make_plan([(1, (4,))], 8, 2, 4, groups=0)


def test_k_folds_train_each_fold_as_its_own_hold_out_split(key, data):
    space = _space(batch_norm=True)
    S, K = 5, 3
    pos = jax.random.uniform(key, (S, space.num_dims))
    keys = jax.random.split(jax.random.fold_in(key, 1), S)
    sk = jax.random.fold_in(key, 2)
    x = np.concatenate([np.asarray(data.x_train), np.asarray(data.x_val)])
    y = np.concatenate([np.asarray(data.y_train), np.asarray(data.y_val)])
    tr, va = kfold_indices(len(x), K, seed=0)
    trainer = packed.make_packed_train(space, CFG, F, C, groups=2)
    got = trainer.train_swarm(keys, pos, train.fold_data(x, y, tr, va), sk)
    per_fold = []
    for i in range(K):  # the same members, keys and minibatch order, one fold at a time
        fold = train.device_data(x[tr[i]], y[tr[i]], x[va[i]], y[va[i]])
        k_i = jax.vmap(lambda k: jax.random.split(k, K)[i])(keys)
        per_fold.append(trainer.train_swarm(k_i, pos, fold, jax.random.fold_in(sk, i)))
    assert got.fold_fitness.shape == (S, K)
    np.testing.assert_allclose(got.fold_fitness, np.stack([m.fitness for m in per_fold], 1), atol=1e-6)
    np.testing.assert_allclose(got.fitness, np.mean([m.fitness for m in per_fold], 0), rtol=1e-6)
    np.testing.assert_allclose(got.train_loss, np.mean([m.train_loss for m in per_fold], 0), rtol=1e-5)


def test_auto_picks_per_backend_and_workload():
    space, image = mlp_space(), DataShape(784, 10, None)
    big = StudyConfig(swarm_size=32, rounds=10, epochs=5)
    name, why = auto.choose(family_of(space), space, big, image, 54_000, backend="cpu")
    assert name == "packed" and "saves" in why  # masked would compute ~5x the FLOPs for 10 rounds
    small = StudyConfig(swarm_size=4, rounds=2, epochs=1)
    assert auto.choose(family_of(space), space, small, DataShape(64, 10, None), 1_000, backend="cpu")[0] == "masked"
    saved, cost = auto.packed_saving(family_of(space), space, image, big, 54_000)
    assert saved > cost > 0
    assert auto.choose(family_of(space), space, big, image, 54_000, backend="gpu")[0] == "masked"
    warm = StudyConfig(swarm_size=32, rounds=10, epochs=5, mode="warm")
    assert auto.choose(family_of(space), space, warm, image, 54_000, backend="cpu")[0] == "packed"
    extras = mlp_space(dropout=(0.0, 0.5), batch_norm=True)
    assert auto.choose(family_of(extras), extras, big, image, 54_000, backend="cpu")[0] == "packed"
    batches = mlp_space(batch_sizes=(32, 128))  # a packed trainer per batch size: twice the compiles
    assert auto.packed_saving(family_of(batches), batches, image, big, 54_000)[1] == 2 * cost
    assert auto.choose(family_of(batches), batches, big, image, 54_000, backend="cpu")[0] == "packed"
    name, why = auto.choose(family_of(batches), batches, small, DataShape(64, 10, None), 1_000, backend="cpu")
    assert name == "serial" and "skip the chunks" in why  # packing does not pay: serial skips the idle chunks
    assert auto.choose(family_of(batches), batches, big, image, 54_000, backend="gpu")[0] == "masked"
    assert auto.choose(family_of(space), space, StudyConfig(swarm_size=32, rounds=10, epochs=5, folds=3), image,
                       36_000, backend="cpu")[0] == "packed"
    cnn = cnn_space()
    assert auto.choose(family_of(cnn), cnn, big, DataShape(784, 10, (28, 28, 1)), 54_000, backend="cpu")[0] == "serial"
    name, why = auto.choose(family_of(cnn), cnn, small, DataShape(64, 10, (8, 8, 1)), 1_000, backend="cpu")
    assert name == "masked" and "compile" in why  # digits, one short round: the serial compile would dominate
    layout, why = resolve("auto", family_of(space), space, big, image, 54_000)
    assert layout is LAYOUTS["packed"] and why.startswith("layout auto -> packed: ")
    assert resolve("serial", family_of(space), space, big, image, 54_000)[0] is LAYOUTS["serial"]


def test_short_rounds_merge_groups_and_reuse_plans_long_rounds_keep_them_tight():
    rng = np.random.default_rng(0)
    archs = [(int(d), tuple(int(u) for u in rng.integers(16, 257, d))) for d in rng.integers(1, 4, 32)]
    loose = packed.make_plan(archs, 256, 10, 784, groups=8, free_merge=1e12)  # compiling dominates
    tight = packed.make_plan(archs, 256, 10, 784, groups=8, free_merge=0.0)  # training dominates
    assert len(loose.shape.groups) == len({d for d, _ in archs})  # one group per depth is left
    assert len(tight.shape.groups) == 8
    assert packed.plan_flops(loose.shape, 784, 10) > packed.plan_flops(tight.shape, 784, 10)
    wider = [(d, tuple(min(256, u + 8) for u in us)) for d, us in archs]
    fresh = packed.make_plan(wider, 256, 10, 784, groups=8)
    roomy = packed.make_plan(wider, 256, 10, 784, groups=8, headroom=1.0).shape  # fits, costs more than fresh
    assert packed.plan_flops(roomy, 784, 10) > packed.plan_flops(fresh.shape, 784, 10)
    assert packed.make_plan(wider, 256, 10, 784, groups=8, known=[roomy], switch_cost=1e12).shape == roomy
    assert packed.make_plan(wider, 256, 10, 784, groups=8, known=[roomy], switch_cost=0.0).shape == fresh.shape


@pytest.mark.slow  # covered by default: warm mode: test_study's warm tests
def test_warm_members_continue_as_the_masked_warm_members_do(key, data):
    space = _space(batch_norm=True, optimizers=("sgd",))  # members with batch norm and without; SGD: see above
    S = 6
    pos = jax.random.uniform(jax.random.fold_in(key, 7), (S, space.num_dims))
    keys = jax.random.split(jax.random.fold_in(key, 8), S)
    keys2 = jax.random.split(jax.random.fold_in(key, 9), S)
    sk, sk2 = jax.random.fold_in(key, 10), jax.random.fold_in(key, 11)
    trainer = packed.make_packed_train(space, CFG, F, C, groups=3)
    masked = train.make_train(space, CFG, F, C)
    warm = jax.jit(jax.vmap(masked.train_member_warm, in_axes=(0, 0, None, 0, 0, None)))
    start = trainer.init_variables(keys, pos)
    # nothing kept: the fresh members of train_swarm, and variables ready for the next round
    fresh = trainer.train_swarm(keys, pos, data, sk)
    m1, v1 = trainer.train_swarm(keys, pos, data, sk, start, np.zeros(S, bool))
    np.testing.assert_array_equal(m1.fitness, fresh.fitness)
    w1, wv1 = warm(keys, pos, data, start, jnp.zeros(S, bool), sk)
    for leaf in ("kernel", "bias"):
        for name in v1["params"]:
            if name.startswith(("dense", "out")):
                np.testing.assert_allclose(v1["params"][name][leaf], wv1["params"][name][leaf], rtol=2e-4, atol=2e-5,
                                           err_msg=f"{name}/{leaf}")
    # half kept: they continue from round 1's weights, the others start over
    keep = np.array([True, False, True, False, True, False])
    m2, v2 = trainer.train_swarm(keys2, pos, data, sk2, v1, keep)
    w2, _ = warm(keys2, pos, data, wv1, jnp.asarray(keep), sk2)
    for field in ("train_loss", "val_loss"):
        np.testing.assert_allclose(getattr(m2, field), getattr(w2, field), rtol=5e-4, atol=1e-5, err_msg=field)
    again = trainer.train_swarm(keys2, pos, data, sk2)  # a member not kept is a fresh member
    np.testing.assert_array_equal(np.asarray(m2.fitness)[~keep], np.asarray(again.fitness)[~keep])



def test_compiled_ahead_of_time_trains_as_train_swarm(key, data):
    """`compile` (the benches' split of compile and training time) gives the program train_swarm runs."""
    space = _space(max_layers=2)
    trainer = packed.make_packed_train(space, CFG, F, C, groups=3)
    pos = jax.random.uniform(key, (4, space.num_dims))
    keys, shuffle_key = jax.random.split(jax.random.fold_in(key, 1), 4), jax.random.fold_in(key, 2)
    compiled, plan = trainer.compile(keys, pos, data, shuffle_key)
    got = compiled(keys, pos, data, shuffle_key, plan.tables)
    want = trainer.train_swarm(keys, pos, data, shuffle_key)
    np.testing.assert_array_equal(got.train_loss, want.train_loss)
    assert trainer.stats["traces"] == 1  # one program: train_swarm ran the compiled shape


def test_a_member_diverging_in_its_last_step_is_diverged_with_no_finite_val_loss(key, data):
    """A NaN that enters only at the last step of the last epoch (a training row placed there by the shared
    shuffle): every member is diverged, fitness -inf, and no val_loss is finite. A reduction that skipped
    NaNs (a nanmean over steps, a nansum over validation chunks) would report finite losses here."""
    cfg = CFG._replace(epochs=1)
    n = data.x_train.shape[0]
    assert n % cfg.batch_size == 0  # no row dropped: the permutation's last row is in the last step
    shuffle_key = jax.random.fold_in(key, 5)
    last_row = int(jax.random.permutation(jax.random.split(shuffle_key, cfg.epochs)[0], n)[-1])
    x = np.array(data.x_train)
    x[last_row] = np.nan
    poisoned = data._replace(x_train=jnp.asarray(x))
    space = _space(optimizers=("sgd", "adam"))
    pos = jax.random.uniform(jax.random.fold_in(key, 6), (4, space.num_dims))
    keys = jax.random.split(jax.random.fold_in(key, 7), 4)
    clean = packed.make_packed_train(space, cfg, F, C, groups=2).train_swarm(keys, pos, data, shuffle_key)
    assert not np.any(np.asarray(clean.diverged))
    m = packed.make_packed_train(space, cfg, F, C, groups=2).train_swarm(keys, pos, poisoned, shuffle_key)
    assert np.all(np.asarray(m.diverged)) and np.all(np.asarray(m.fitness) == -np.inf)
    assert not np.any(np.isfinite(np.asarray(m.val_loss)))
    assert np.all(np.isfinite(np.asarray(clean.train_loss)))
