"""Per-member batch sizes (`train.fit_span`): a swarm member trains as the dense network of its size
with its own batch size, in one program for every size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxswarm import execute, optim, train
from jaxswarm import space as sp
from jaxswarm.layouts import packed
from jaxswarm.models import mlp
from jaxswarm.models.cnn import cnn_space

SIZES = (8, 16, 32, 64)
N = 100  # not a multiple of any size: every epoch leaves a tail that no update reads


def _data(n=N, m=32, f=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + m, f)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    return train.device_data(x[:n], y[:n], x[n:], y[n:])


def _space(batch=sp.Choice(list(SIZES)), dropout=sp.Float(0.0, 0.5)):
    params = {
        "n_layers": sp.Int(1, 2),
        "units_1": sp.Int(2, 8, log=True),
        "units_2": sp.Int(2, 8, log=True, when=lambda v: v["n_layers"] >= 2),
        "activation": sp.Choice(["relu", "tanh"]),
        "learning_rate": sp.Float(1e-2, 1e-1, log=True),
        "optimizer": sp.Choice(["sgd", "momentum", "adam"]),
        "lr_decay": sp.Float(0.1, 1.0, log=True),
        "batch_size": batch,
    }
    if dropout is not None:
        params["dropout"] = dropout
    return sp.SearchSpace(params)


CONFIG = train.TrainConfig(epochs=3, batch_size=16)


def _position(space, **values):
    base = {"n_layers": 2, "units_1": 5, "units_2": 3, "activation": "tanh", "learning_rate": 0.05,
            "optimizer": "adam", "lr_decay": 0.2, "batch_size": 16, "dropout": 0.3}
    return jnp.asarray(space.encode({k: v for k, v in {**base, **values}.items() if k in space.params}))


def _dense_run(trainer, space, key, position, data):
    """The dense network of the member's real size, started from the member's own weights, trained
    alone with the member's batch size (a batch a step, `fit_span`'s static path)."""
    arch, hp = jax.jit(trainer.hparams)(position)
    arch_py = mlp.arch_to_python(arch)
    start = mlp.dense_params(jax.jit(trainer.init_member)(key, position), arch_py, trainer.model_config)
    batch = space.to_python(position)["batch_size"]
    config = train.batch_config(space, CONFIG, trainer.family)._replace(batch_size=batch)
    names = optim.optimizer_names(space)
    opt = optim.make_optimizer((names[int(hp.optimizer)],), train.total_steps(config, N), optim.adam_hparams(space))
    apply_fn = lambda v, x, training, k: mlp.apply_dense_of(v, x, arch_py, trainer.model_config, train=training,
                                                            key=k)
    run = jax.jit(lambda k: train.fit_span(k, lambda _: start, apply_fn, opt, hp._replace(optimizer=jnp.int32(0)),
                                           data, config, None, 0, CONFIG.epochs))
    return run(key), arch_py, trainer.model_config


def test_members_train_as_the_dense_network_with_their_batch_size():
    """Curves, final weights and the number of updates (N // b an epoch) of swarm members of every batch
    size, one program for all, equal the dense network's trained alone with that batch size, dropout
    included (the same chunks' draws)."""
    space, data = _space(), _data()
    trainer = train.make_train(space, CONFIG, 6, 2)
    keys = jax.random.split(jax.random.key(4), len(SIZES))
    positions = jnp.stack([_position(space, batch_size=b, units_1=4 + i) for i, b in enumerate(SIZES)])
    start = jax.jit(jax.vmap(lambda k, p: trainer.start_member(k, p, N)))(keys, positions)
    swarm, states = jax.jit(jax.vmap(lambda k, p, s: trainer.train_member_span(k, p, data, s, 0, CONFIG.epochs)))(
        keys, positions, start)
    counts = states.opt_state.inner_state.count
    assert [int(c) for c in counts] == [CONFIG.epochs * (N // b) for b in SIZES]
    for i, batch in enumerate(SIZES):
        if batch not in (16, 64):  # two against the dense network (its compiles are slow); 8 and 32 below
            continue
        (dense, dense_state), arch_py, cfg = _dense_run(trainer, space, keys[i], positions[i], data)
        np.testing.assert_allclose(swarm.train_loss[i], dense.train_loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(swarm.val_loss[i], dense.val_loss, rtol=1e-5, atol=1e-6)
        assert float(swarm.val_accuracy[i]) == float(dense.val_accuracy)
        member = jax.tree.map(lambda a: a[i], {"params": states.params, "batch_stats": states.batch_stats})
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     mlp.dense_params(member, arch_py, cfg)["params"], dense_state.params)
        updates = CONFIG.epochs * (N // batch)
        assert int(states.opt_state.inner_state.count[i]) == int(dense_state.opt_state.inner_state.count) == updates
        assert int(states.opt_state.inner_state.horizon[i]) == updates  # its own cosine schedule's length


def test_chunked_updates_are_the_plain_loop_with_that_batch_size():
    """Without dropout, a member of the batch_size choice makes the updates of a member whose batch size
    is fixed (the plain loop, a batch a step): accumulating chunk gradients is the batch's gradient."""
    data, key = _data(), jax.random.key(2)
    for batch in (8,):
        chosen, fixed = _space(dropout=None), _space(batch=sp.Fixed(batch), dropout=None)
        one = lambda space: jax.jit(train.make_train(space, CONFIG, 6, 2).train_member)(
            key, _position(space, batch_size=batch), data)
        a, b = one(chosen), one(fixed)
        np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.val_loss, b.val_loss, rtol=1e-5, atol=1e-6)


def _packed_swarm(space):
    sizes = (64, 16, 16, 64, 16)
    positions = jnp.stack([_position(space, batch_size=b, units_1=3 + i, n_layers=1 + i % 2,
                                     optimizer=("sgd", "momentum", "adam")[i % 3]) for i, b in enumerate(sizes)])
    return sizes, positions, jax.random.split(jax.random.key(4), len(sizes)), jax.random.key(9)


def _masked_curves(space, positions, keys, shuffle, data):
    masked = train.make_train(space, CONFIG, 6, 2)
    return jax.jit(jax.vmap(lambda k, p: masked.train_member(k, p, data, shuffle)))(keys, positions)


def test_packed_trains_each_batch_size_as_the_masked_members():
    """The packed layout trains a batch_size choice as the masked members (which are the dense networks',
    above), dropout included, in member order: one trainer per size, each member on batches of its real size."""
    space, data = _space(), _data()
    trainer = packed.make_packed_train(space, CONFIG, 6, 2)
    sizes, positions, keys, shuffle = _packed_swarm(space)
    want = _masked_curves(space, positions, keys, shuffle, data)
    got = trainer.train_swarm(keys, positions, data, shuffle)
    np.testing.assert_allclose(got.train_loss, want.train_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.val_loss, want.val_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.val_accuracy, want.val_accuracy)
    assert trainer.stats["traces"] == 2 and set(trainer.by_batch) == set(SIZES)  # 16 and 64: one program each
    with pytest.raises(ValueError, match="by_batch"):
        trainer.plan(positions)


@pytest.mark.slow  # ~25 s: two more span programs; packed spans of one batch size run by default (test_schedules)
def test_packed_batch_size_spans_make_each_members_own_updates():
    """A schedule's spans on the packed batch-size trainers: epochs 0-1 then 2 equal the whole run, and every
    member makes its own batch size's number of updates."""
    space, data = _space(), _data()
    trainer = packed.make_packed_train(space, CONFIG, 6, 2)
    sizes, positions, keys, shuffle = _packed_swarm(space)
    want = _masked_curves(space, positions, keys, shuffle, data)
    states = trainer.start_states(keys, positions, N)
    _, states = trainer.train_span(keys, positions, data, shuffle, states, 0, 2)
    rung, states = trainer.train_span(keys, positions, data, shuffle, states, 2, 1)
    np.testing.assert_allclose(rung.val_loss, want.val_loss, rtol=1e-5, atol=1e-6)
    assert [int(c) for c in states.opt_state.inner_state.count] == [CONFIG.epochs * (N // b) for b in sizes]


def test_one_program_for_every_batch_size_and_decode_reaches_each_fairly():
    space, data = _space(), _data()
    trainer = train.make_train(space, CONFIG, 6, 2)
    traces = []

    def counted(k, p, d):
        traces.append(1)
        return trainer.train_member(k, p, d)

    runner = execute.make_swarm_runner(counted, log=None)
    seen = set()
    for r in range(2):
        pos = jax.random.uniform(jax.random.key(r), (8, space.num_dims))
        metrics = runner(jax.random.split(jax.random.key(5), 8), pos, data)
        assert np.all(np.isfinite(np.asarray(metrics.train_loss)))
        seen |= {space.to_python(p)["batch_size"] for p in pos}
    assert len(traces) == 1 and len(seen) >= 3
    u = jax.random.uniform(jax.random.key(0), (4000, space.num_dims))
    decoded = np.asarray(jax.vmap(train.batch_reader(space))(u))
    share = np.array([(decoded == b).mean() for b in SIZES])
    np.testing.assert_allclose(share, 0.25, atol=0.03)


def test_batch_size_choice_is_validated_and_routed():
    with pytest.raises(ValueError, match="batch norm"):
        train.make_train(sp.SearchSpace({**_space().params, "batch_norm": sp.Choice([False, True])}), CONFIG, 6, 2)
    with pytest.raises(ValueError, match="batch norm"):
        cnn = cnn_space(max_blocks=1, filters=(2, 4), dense_units=(4, 8), batch_sizes=(16, 32))
        train.make_train(sp.SearchSpace({**cnn.params, "batch_norm": sp.Choice([False, True])}), CONFIG, 64, 2,
                         input_shape=(8, 8, 1))
    for bad in (sp.Int(8, 64), sp.Choice([8, 16.5]), sp.Choice([0, 8])):
        with pytest.raises(ValueError, match="batch_size"):
            train.make_train(_space(batch=bad), CONFIG, 6, 2)
    with pytest.raises(ValueError, match="batch_size"):
        mlp.mlp_space(batch_sizes=(32, 0))
    for make in (mlp.mlp_space, cnn_space):  # at once, before any data is read
        with pytest.raises(ValueError, match="batch_norm"):
            make(batch_norm=True, batch_sizes=(32, 64))
    assert packed.supports(_space()) and not packed.supports(cnn_space(batch_sizes=(16, 32)))
    assert train.batch_config(_space(batch=sp.Fixed(32)), CONFIG, train.family_of(_space())).batch_size == 32
    assert train.chunk_size((32, 48, 128), 1000) == 16 and train.chunk_size((32, 128), 20) == 20
    space = mlp.mlp_space(max_layers=2, units=(4, 8), batch_sizes=(32, 64, 128))
    assert space.params["batch_size"].options == (32, 64, 128)


@pytest.mark.slow  # the conv program's compile (~30 s here); the MLP cases above cover the loop
def test_cnn_members_train_with_their_own_batch_size():
    """The CNN without batch norm takes a batch_size choice on the masked path too (one program)."""
    space = cnn_space(max_blocks=1, filters=(2, 4), dense_units=(4, 8), batch_sizes=(8, 32))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(72, 16)).astype(np.float32)
    data = train.device_data(x[:48], (x[:48, 0] > 0).astype(np.int32), x[48:], (x[48:, 0] > 0).astype(np.int32))
    trainer = train.make_train(space, train.TrainConfig(epochs=1, batch_size=16), 16, 2, input_shape=(4, 4, 1))
    pos = jax.random.uniform(jax.random.key(3), (6, space.num_dims))
    keys = jax.random.split(jax.random.key(1), 6)
    _, states = jax.jit(jax.vmap(lambda k, p: trainer.train_member_span(k, p, data, trainer.start_member(k, p, 48),
                                                                        0, 1)))(keys, pos)
    sizes = [space.to_python(p)["batch_size"] for p in pos]
    assert set(sizes) == {8, 32}
    assert [int(c) for c in states.opt_state.inner_state.count] == [48 // b for b in sizes]


def test_sequential_baselines_tune_the_batch_size_and_train_each_trial_with_its_own():
    """Optuna's define-by-run space gets the choice; each trial trains alone with its batch size (the dense
    trainer's configuration), as its record says."""
    pytest.importorskip("optuna")
    from jaxswarm.data import load_dataset
    from jaxswarm.tuners import run_baseline

    space = mlp.mlp_space(max_layers=1, units=(4, 8), batch_sizes=(16, 64))
    res = run_baseline("tpe", space, load_dataset("digits"), budget=2, epochs=1, retrain=False, progress=False)
    assert len(res.trials) == 2 and all(t.config["batch_size"] in (16, 64) for t in res.trials)
    data = _data()
    values = {"units_1": 4, "activation": "relu", "learning_rate": 0.05}
    chosen = train.make_dense_train(_space(dropout=None), CONFIG, 6, 2)
    loss = lambda dense, space, b: np.asarray(dense.train_position(
        jax.random.key(1), _position(space, **values, batch_size=b), data).train_loss)
    fixed_space = _space(batch=sp.Fixed(8), dropout=None)
    eight = loss(chosen, _space(dropout=None), 8)
    np.testing.assert_allclose(eight, loss(train.make_dense_train(fixed_space, CONFIG, 6, 2), fixed_space, 8),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(eight, loss(chosen, _space(dropout=None), 32))


def test_a_members_own_schedule_length_is_the_static_schedule_of_that_length():
    """`optim.make_optimizer`'s traced ``total_steps`` (a member's batch size's updates) schedules the
    learning rate exactly as an optimizer built with that static length."""
    hp = optim.default_hparams(("adam",), learning_rate=0.1, lr_decay=0.05)
    params = {"w": jnp.zeros(3)}
    for steps in (1, 7, 40):
        static = optim.make_optimizer(("adam",), steps)
        traced = optim.make_optimizer(("adam",), 1)
        s, t = static.init(params, hp), jax.jit(lambda p, n: traced.init(p, hp, n))(params, steps)
        for _ in range(steps + 2):  # past the end too: the last rate holds
            assert float(optim.current_learning_rate(static, s)) == float(optim.current_learning_rate(traced, t))
            s = static.update(params, s, params)[1]
            t = traced.update(params, t, params)[1]
