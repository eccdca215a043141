import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxswarm import execute, train
from jaxswarm import space as sp
from jaxswarm.data import kfold_indices
from jaxswarm.models.cnn import cnn_space
from jaxswarm.models.layers import INIT_SCHEMES


@pytest.fixture
def key():
    return jax.random.key(0)


def _data(n=96, m=32, f=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n + m, f)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    return train.device_data(x[:n], y[:n], x[n:], y[n:])


SPACE = sp.SearchSpace({
    "n_layers": sp.Int(1, 2),
    "units_1": sp.Int(2, 8, log=True),
    "units_2": sp.Int(2, 8, log=True, when=lambda v: v["n_layers"] >= 2),
    "activation": sp.Choice(["relu", "tanh", "elu"]),
    "learning_rate": sp.Float(1e-3, 1e-1, log=True),
    "optimizer": sp.Choice(["sgd", "momentum", "adam"]),
})
CONFIG = train.TrainConfig(epochs=2, batch_size=16)


def _trainer(space=SPACE, config=CONFIG, **kw):
    return train.make_train(space, config, in_features=6, num_classes=2, **kw)


def _swarm(trainer, chunk_size=None):
    """The runner studies use (execute), over this trainer's members."""
    return execute.make_swarm_runner(trainer.train_member, chunk_size=chunk_size, log=None)


def test_swarm_equals_loop_of_single_members(key):
    trainer, data = _trainer(), _data()
    pos = jax.random.uniform(key, (5, SPACE.num_dims))
    keys = jax.random.split(jax.random.key(1), 5)
    swarm = _swarm(trainer)(keys, pos, data)
    single = jax.jit(trainer.train_member)
    for i in range(5):
        one = single(keys[i], pos[i], data)
        np.testing.assert_allclose(swarm.train_loss[i], one.train_loss, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(swarm.val_accuracy[i], one.val_accuracy, atol=1e-6)
        np.testing.assert_allclose(swarm.fitness[i], one.fitness, atol=1e-6)


@pytest.mark.slow  # covered by default: members alone = the swarm: test_swarm_equals_loop_of_single_members
def test_members_one_at_a_time_equal_the_vmapped_swarm(key):
    """Branching members trained one after another (no vmap, chunks of one) train the same members."""
    data = _data()
    pos = jax.random.uniform(key, (4, SPACE.num_dims))
    keys = jax.random.split(jax.random.key(1), 4)
    vmapped = _swarm(_trainer())(keys, pos, data)
    serial = _swarm(_trainer(branching=True), chunk_size=1)(keys, pos, data)
    np.testing.assert_allclose(serial.train_loss, vmapped.train_loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(serial.fitness, vmapped.fitness, atol=1e-6)


@pytest.mark.slow  # ~40 s; tests/test_fingerprint.py pins the serial and masked CNN to recorded values
def test_serial_cnn_members_branch_and_equal_masked(key):
    """The serial CNN runs only each member's own blocks (cnn.CNNConfig.branching), same metrics."""
    space = cnn_space(max_blocks=2, filters=(2, 4), dense_units=(4, 8), activations=("relu", "tanh"),
                      batch_norm=True, dropout=(0.0, 0.3), poolings=("max", "avg"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 8 * 8)).astype(np.float32)
    data = train.device_data(x[:32], (x[:32, 0] > 0).astype(np.int32), x[32:], (x[32:, 0] > 0).astype(np.int32))
    pos = jax.random.uniform(key, (4, space.num_dims))
    keys = jax.random.split(jax.random.key(2), 4)
    out = {}
    for layout, branching, chunk in (("masked", False, None), ("serial", True, 1)):
        t = train.make_train(space, CONFIG, 64, 2, input_shape=(8, 8, 1), branching=branching)
        assert t.model_config.branching == branching
        out[layout] = _swarm(t, chunk)(keys, pos, data)
    np.testing.assert_allclose(out["serial"].train_loss, out["masked"].train_loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["serial"].val_accuracy, out["masked"].val_accuracy, atol=1e-6)


def test_moved_particles_do_not_retrace_the_member(key):
    """The member function the runner wraps is traced once, wherever the particles move."""
    traces = []
    trainer, data = _trainer(), _data()

    def counted_member(k, p, d):
        traces.append(1)
        return trainer.train_member(k, p, d)

    runner = execute.make_swarm_runner(counted_member, log=None)
    keys = jax.random.split(key, 4)
    for r in range(3):  # three rounds, particles anywhere in the box
        pos = jax.random.uniform(jax.random.fold_in(key, r), (4, SPACE.num_dims))
        runner(keys, pos, data).fitness.block_until_ready()
    assert len(traces) == 1


def test_diverging_member_is_isolated(key):
    wide = sp.SearchSpace({**SPACE.params, "learning_rate": sp.Float(1e-3, 1e30, log=True)})
    trainer, data = _trainer(wide), _data()
    lr, opt, act = (wide.dim_names.index(n) for n in ("learning_rate", "optimizer", "activation"))
    pos = np.array(jax.random.uniform(key, (4, wide.num_dims)))
    pos[:, lr] *= 0.05  # lr <= ~1e-1.4 for everyone
    keys = jax.random.split(jax.random.key(3), 4)
    swarm = _swarm(trainer)
    base = swarm(keys, jnp.asarray(pos), data)
    pos[0, lr], pos[0, opt], pos[0, act] = 1.0, 0.0, 0.0  # member 0: relu, sgd, lr = 1e30: overflows
    m = swarm(keys, jnp.asarray(pos), data)
    assert bool(m.diverged[0]) and m.fitness[0] == -np.inf
    assert not np.any(np.asarray(m.diverged[1:])) and np.all(np.isfinite(np.asarray(m.fitness[1:])))
    np.testing.assert_array_equal(m.val_accuracy[1:], base.val_accuracy[1:])
    np.testing.assert_array_equal(m.train_loss[1:], base.train_loss[1:])


def test_training_learns_a_separable_problem(key):
    space = sp.SearchSpace({"n_layers": sp.Fixed(1), "units_1": sp.Int(8, 8),
                            "learning_rate": sp.Fixed(0.05)})
    trainer = _trainer(space, CONFIG._replace(epochs=10))
    m = _swarm(trainer)(jax.random.split(key, 2), jnp.full((2, 1), 0.5), _data())
    assert np.all(np.asarray(m.val_accuracy) > 0.85)
    assert np.all(np.asarray(m.train_loss[:, -1]) < np.asarray(m.train_loss[:, 0]))


@pytest.mark.slow  # covered by default: k folds: test_layouts' k-fold test
def test_kfold_is_particles_times_folds_in_one_program(key):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    tr, va = kfold_indices(120, 3, seed=0)
    folds = train.fold_data(x, y, tr, va)
    trainer = _trainer()
    pos = jax.random.uniform(key, (3, SPACE.num_dims))
    keys = jax.random.split(key, 3)
    m = _swarm(trainer)(keys, pos, folds)
    assert m.fitness.shape == (3,) and m.train_loss.shape == (3, CONFIG.epochs)
    # the CV fitness is the mean over folds of single-fold runs with the fold keys
    fold_keys = jax.random.split(keys[1], 3)
    accs = [trainer.train_member(fold_keys[k], pos[1], train.Data(folds.x[tr[k]], folds.y[tr[k]],
                                                                  folds.x[va[k]], folds.y[va[k]])).fitness
            for k in range(3)]
    np.testing.assert_allclose(m.fitness[1], np.mean(accs), atol=1e-5)


def test_warm_start_continues_from_given_weights(key):
    trainer, data = _trainer(), _data()
    pos = jnp.asarray(SPACE.encode({"n_layers": 1, "units_1": 8, "activation": "relu",
                                    "learning_rate": 0.03, "optimizer": "adam"}))
    m1, v1 = trainer.train_member_warm(key, pos, data, None, None)
    k2 = jax.random.key(9)
    kept, _ = trainer.train_member_warm(k2, pos, data, v1, jnp.asarray(True))
    fresh, _ = trainer.train_member_warm(k2, pos, data, v1, jnp.asarray(False))
    cold, _ = trainer.train_member_warm(k2, pos, data, None, None)
    np.testing.assert_allclose(fresh.train_loss, cold.train_loss, rtol=1e-6)
    assert kept.train_loss[0] < cold.train_loss[0]  # starts from trained weights
    # init_member gives exactly the weights a fresh run starts from: keeping them is the fresh run
    start = trainer.init_member(k2, pos)
    from_start, _ = trainer.train_member_warm(k2, pos, data, start, jnp.asarray(True))
    np.testing.assert_array_equal(from_start.train_loss, cold.train_loss)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="fitness"):
        _trainer(config=CONFIG._replace(fitness="f1"))
    with pytest.raises(ValueError, match="epochs"):
        _trainer(config=CONFIG._replace(epochs=0))
    with pytest.raises(ValueError, match="not among the supported"):
        _trainer(sp.SearchSpace({"activation": sp.Choice(["relu", "mish3"])}))


def test_dense_trainer_compiles_per_configuration_and_program_splits_compile_from_training(key, compiles):
    """A sequential tuner pays a compile for every configuration; `program`'s compiled form trains without one.

    Benches time `program`'s compile and its run apart: the run must compile nothing
    and give what `train_position` gives.
    """
    dense, data = train.make_dense_train(SPACE, CONFIG, 6, 2), _data()
    pos = jax.random.uniform(key, (2, SPACE.num_dims))
    dense.train_position(key, pos[0], data)  # warm the eager caches
    with compiles() as c:
        ref = dense.train_position(key, pos[1], data)
    assert c.count >= 1  # a new configuration: its own program
    run, hp = dense.program(pos[1], data.x_train.shape[0])
    compiled = run.lower(key, hp, data).compile()
    with compiles() as c:
        m = compiled(key, hp, data)
    assert c.count == 0
    np.testing.assert_array_equal(m.train_loss, ref.train_loss)
    arch, _ = dense.describe(pos[1])
    assert m.train_loss.shape == (CONFIG.epochs,) and 1 <= arch["n_layers"] <= 2


ADAM_FAMILY = sp.SearchSpace({
    **{k: v for k, v in SPACE.params.items() if k != "optimizer"},
    "optimizer": sp.Choice(["adam", "adamw", "nadam", "adadelta"]),
    "beta2": sp.Float(0.9, 0.9999),
    "eps": sp.Float(1e-8, 1e-3, log=True),
    "init": sp.Choice(list(INIT_SCHEMES)),
})


@pytest.mark.slow  # covered by default: the optimizers: test_optim, test_layouts
def test_adam_family_members_train_alone_as_in_the_swarm_and_compile_once(key):
    """beta2, eps, nadam, adadelta and the init scheme are traced: one member program for every
    value, and each swarm member trains as it does alone (test_optim checks each update against
    plain Optax, test_reference each scheme against variance_scaling)."""
    trainer, data = _trainer(ADAM_FAMILY), _data()
    traces = []

    def counted_member(k, p, d):
        traces.append(1)
        return trainer.train_member(k, p, d)

    runner = execute.make_swarm_runner(counted_member, log=None)
    single = jax.jit(trainer.train_member)
    keys = jax.random.split(key, 8)
    seen, inits = set(), set()
    for r in range(2):
        pos = jax.random.uniform(jax.random.fold_in(key, r), (8, ADAM_FAMILY.num_dims))
        swarm = runner(keys, pos, data)
        for i in range(8):
            seen.add(ADAM_FAMILY.to_python(pos[i])["optimizer"])
            inits.add(ADAM_FAMILY.to_python(pos[i])["init"])
            np.testing.assert_allclose(swarm.train_loss[i], single(keys[i], pos[i], data).train_loss,
                                       rtol=2e-5, atol=1e-6)
    assert len(traces) == 1
    assert seen == {"adam", "adamw", "nadam", "adadelta"} and len(inits) >= 5


def test_beta2_and_eps_change_the_training():
    """Not ignored: the same member with another beta2 or eps trains differently (Adam), and
    adadelta ignores both."""
    data, k = _data(), jax.random.key(3)
    space = sp.SearchSpace({**ADAM_FAMILY.params, "optimizer": sp.Choice(["adam", "adadelta"])})
    trainer = jax.jit(_trainer(space).train_member)
    base = {"n_layers": 1, "units_1": 4, "activation": "tanh", "learning_rate": 0.05, "beta2": 0.99, "eps": 1e-8,
            "init": "auto"}

    def loss(**kw):
        return np.asarray(trainer(k, jnp.asarray(space.encode({**base, **kw})), data).train_loss)

    adam = loss(optimizer="adam")
    assert not np.allclose(adam, loss(optimizer="adam", beta2=0.9))
    assert not np.allclose(adam, loss(optimizer="adam", eps=1e-3))
    np.testing.assert_array_equal(loss(optimizer="adadelta"), loss(optimizer="adadelta", beta2=0.9, eps=1e-3))
