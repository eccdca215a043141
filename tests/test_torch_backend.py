"""The sequential tuners' PyTorch backend (`tuners.torch_backend`): the JAX dense network's objective in torch."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxswarm import cli, results, train
from jaxswarm import tuners as baselines
from jaxswarm.data import load_dataset
from jaxswarm.models import FAMILIES, cnn, cnn_space, mlp, mlp_space
from jaxswarm.models.layers import INIT_SCHEMES, init_std
from jaxswarm.optim import OPTIMIZERS
from jaxswarm.space import Choice, Fixed, Float, SearchSpace
from jaxswarm.tuners import BaselineError, torch_backend

torch = pytest.importorskip("torch")

# Every optimizer hyperparameter is a dimension, so one compiled JAX program trains every member below.
SPACE = SearchSpace({
    "n_layers": Fixed(1), "units_1": Fixed(32), "activation": Choice(["relu", "tanh"]),
    "learning_rate": Float(1e-4, 2.0, log=True), "optimizer": Choice(list(OPTIMIZERS)),
    "momentum": Float(0.0, 0.95), "weight_decay": Float(1e-5, 1e-2, log=True), "lr_decay": Float(0.1, 1.0, log=True),
    "beta2": Float(0.9, 0.999), "eps": Float(1e-8, 1e-3, log=True), "dropout": Float(0.0, 0.5),
    "batch_norm": Choice([False, True]),
})
CONFIG = train.TrainConfig(epochs=3, batch_size=64)
# A rate per optimizer that leaves 3 epochs short of convergence, where the accuracy still follows the optimizer.
RATES = {"sgd": 0.1, "momentum": 0.02, "nesterov": 0.02, "rmsprop": 2e-3, "adagrad": 0.05, "adam": 3e-3,
         "adamw": 3e-3, "nadam": 3e-3, "adadelta": 1.0}
SEEDS = 8  # runs per optimizer and backend in the accuracy test
ACCURACY_TOLERANCE = 0.08


def _position(optimizer: str, **values) -> np.ndarray:
    return SPACE.encode({"n_layers": 1, "units_1": 32, "activation": "relu", "learning_rate": RATES[optimizer],
                         "optimizer": optimizer, "momentum": 0.9, "weight_decay": 1e-4, "lr_decay": 0.3,
                         "beta2": 0.999, "eps": 1e-8, "dropout": 0.1, "batch_norm": False, **values})


# The step-for-step members: every hyperparameter away from its default, batch norm on, no dropout (its masks
# are the one draw the backends cannot share).
STEP = dict(activation="tanh", momentum=0.8, weight_decay=1e-3, lr_decay=0.2, beta2=0.95, eps=1e-4, dropout=0.0,
            batch_norm=True)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Small networks on a CPU shared with other work: torch's intra-op pool only waits there. One thread
    # is also what makes the step-for-step comparison's sums add in one fixed order.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits", seed=0)
    # Validation on the val and test rows (503): fewer examples make each run's accuracy noisier.
    return ds._replace(x_val=np.concatenate([ds.x_val, ds.x_test]), y_val=np.concatenate([ds.y_val, ds.y_test]))


@pytest.fixture(scope="module")
def jax_runs(digits):
    """The JAX side of every comparison, as one vmapped program of the swarm's member (one compile, not one per
    configuration; a member is the dense network, tests/test_mlp.py): ``(positions, keys, metrics, initial and
    final variables, trainer)``; SEEDS members of each optimizer for the accuracy test, then one step-for-step
    member per optimizer."""
    trainer = train.make_train(SPACE, CONFIG, 64, 10)
    data = train.device_data(digits.flat(digits.x_train), digits.y_train, digits.flat(digits.x_val), digits.y_val)
    pos = np.stack([_position(o) for o in OPTIMIZERS for _ in range(SEEDS)]
                   + [_position(o, **STEP) for o in OPTIMIZERS])
    keys = jax.random.split(jax.random.key(0), len(pos))
    run = jax.jit(jax.vmap(lambda k, p: trainer.train_member_warm(k, p, data, None, None)))
    metrics, final = run(keys, jnp.asarray(pos))
    initial = jax.jit(jax.vmap(trainer.init_member))(keys, jnp.asarray(pos))
    return pos, keys, metrics, initial, final, trainer


@pytest.fixture(scope="module")
def torch_trainer(digits):
    trainer = torch_backend.make_torch_train(SPACE, CONFIG, 64, 10)
    return trainer, trainer.data(digits.x_train, digits.y_train, digits.x_val, digits.y_val)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_validation_accuracy_matches_jax_for_every_optimizer(optimizer, jax_runs, torch_trainer):
    """Each backend trains the configuration from its own random draws (initial weights, minibatch order,
    dropout masks), SEEDS times; the mean validation accuracies agree within ACCURACY_TOLERANCE (0.08).

    Why 0.08: 3 epochs leave the network short of convergence (mean accuracies 0.65 to 0.93), where one run's
    accuracy varies by 0.02 to 0.08 (std) from seed to seed, so the difference of two means of 8 runs has a
    std of up to 0.04 (0.025 typical): 0.08 is 2 to 3 of those. With 128 seeds the two backends' means agreed
    within 0.005. A planted wrong learning rate or a lost hyperparameter moves a mean by more (see the
    step-for-step test below for the exact check).
    """
    pos, keys, metrics, _, _, _ = jax_runs
    trainer, data = torch_trainer
    rows = slice(OPTIMIZERS.index(optimizer) * SEEDS, (OPTIMIZERS.index(optimizer) + 1) * SEEDS)
    jax_acc = np.asarray(metrics.val_accuracy[rows])
    torch_acc = np.asarray([float(trainer.train_position(k, p, data).val_accuracy)
                            for k, p in zip(keys[rows], pos[rows])])
    assert abs(torch_acc.mean() - jax_acc.mean()) <= ACCURACY_TOLERANCE, (jax_acc, torch_acc)


def _jax_minibatches(key, n: int, batch: int):
    """`train.fit_span`'s minibatch order for `key` (its key derivation, written out here)."""
    _, k_epochs, _ = jax.random.split(key, 3)
    perm = lambda k: np.array(jax.random.permutation(jax.random.fold_in(k, 1), n))  # a writable copy for torch
    steps = n // batch
    orders = [perm(k)[: steps * batch].reshape(steps, batch) for k in jax.random.split(k_epochs, CONFIG.epochs)]
    return lambda order_seed, epoch, n_, batch_: orders[epoch]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_training_follows_jax_step_for_step(optimizer, jax_runs, torch_trainer, monkeypatch):
    """From the JAX member's initial weights, on its minibatches and without dropout, every optimizer (all its
    hyperparameters away from their defaults, a decaying learning rate, batch norm on) trains the same network:
    weights, running statistics and validation curves agree to float32 rounding after 3 epochs (60 updates)."""
    pos, keys, metrics, initial, final, jax_trainer = jax_runs
    trainer, data = torch_trainer
    i = len(OPTIMIZERS) * SEEDS + OPTIMIZERS.index(optimizer)
    arch, hp = trainer.describe(pos[i])
    assert arch["batch_norm"] and arch["activation"] == "tanh" and float(hp.lr_decay) == pytest.approx(0.2)
    member = lambda tree: jax.tree.map(lambda a: np.asarray(a[i]), tree)
    cut = lambda variables: mlp.dense_params(member(variables), arch, jax_trainer.model_config)
    run = trainer.start(keys[i], pos[i], data)
    torch_backend.from_jax(run.net, cut(initial))
    monkeypatch.setattr(torch_backend, "minibatches", _jax_minibatches(keys[i], len(data.y_train), run.batch))
    curves = np.asarray([torch_backend.train_epoch(run, data, e) for e in range(CONFIG.epochs)])
    want = cut(final)
    for name, tensor in {**run.net.params, **run.net.stats}.items():
        layer, leaf = name.split(".")
        expected = want["params" if name in run.net.params else "batch_stats"][layer][leaf]
        np.testing.assert_allclose(tensor.detach().numpy(), expected, rtol=1e-4, atol=2e-5, err_msg=name)
    np.testing.assert_allclose(curves[:, 0], metrics.train_loss[i], rtol=1e-4)
    np.testing.assert_allclose(curves[:, 1], metrics.val_accuracy_curve[i], atol=1 / len(data.y_val) + 1e-6)
    np.testing.assert_allclose(curves[-1, 2], metrics.val_loss[i], rtol=1e-4)


def test_epoch_spans_train_as_the_one_shot_run(torch_trainer):
    """The pruning tuners' path: epochs trained one span at a time give the one-shot run's metrics, bitwise."""
    trainer, data = torch_trainer
    pos, key = _position("adam", batch_norm=True, dropout=0.2), jax.random.key(3)
    whole = trainer.train_position(key, pos, data)
    run, hp = trainer.span_program(pos, len(data.y_train))
    m0, state = run(key, hp, data, None, 0, 1)
    m1, state = run(key, hp, data, state, 1, 2)
    np.testing.assert_array_equal(np.concatenate([m0.val_accuracy_curve, m1.val_accuracy_curve]),
                                  whole.val_accuracy_curve)
    np.testing.assert_array_equal(np.concatenate([m0.train_loss, m1.train_loss]), whole.train_loss)
    assert float(m1.val_loss) == float(whole.val_loss)


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_initial_kernels_are_drawn_as_jax_draws_them(scheme):
    """Every kernel: the scheme's std (`layers.init_std` with the real fans), and the draw's bound (a unit
    truncated normal stops at 2 / 0.8796 std, a uniform at sqrt(3) std)."""
    mcfg = mlp.MLPConfig(400, 100, 2, 300, ("relu", "tanh"), (scheme,))
    arch = mlp.arch_to_python(mlp.make_arch(dict(n_layers=2, units=[300, 200], activation=("relu", "tanh"),
                                                 init=scheme), mcfg))
    net = torch_backend.make_network(FAMILIES["mlp"], arch, mcfg, torch.Generator().manual_seed(0))
    for name, gain2, (fan_in, fan_out) in (("dense_0", 2.0, (400, 300)), ("dense_1", 1.0, (300, 200)),
                                           ("out", 1.0, (200, 100))):
        w = net.params[f"{name}.kernel"].detach().numpy()
        std, uniform = init_std(scheme, gain2, fan_in, fan_out)
        assert w.std() == pytest.approx(std, rel=0.02), name
        assert np.abs(w).max() <= std * (np.sqrt(3) if uniform else 2 / 0.87962566103423978) * (1 + 1e-6)
        assert np.abs(w).max() >= std * (np.sqrt(3) if uniform else 2 / 0.87962566103423978) * 0.99
        assert not net.params[f"{name}.bias"].detach().any()


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_cnn_computes_the_jax_cnn(pooling):
    """The CNN family from the same weights: logits and running statistics in training, logits in evaluation
    (NCHW maps and OIHW kernels inside, the dense layer's rows in the JAX network's (H, W, C) order)."""
    mcfg = cnn.CNNConfig((9, 10, 2), 5, max_blocks=2, max_filters=6, max_kernel=5, max_dense=12,
                         activations=("elu",))
    arch = cnn.cnn_arch_to_python(cnn.make_cnn_arch(dict(n_blocks=2, filters=[4, 6], kernel=[3, 5], dense_units=12,
                                                         pooling=pooling, activation="elu", batch_norm=True), mcfg))
    variables = cnn.init_dense_cnn(jax.random.key(0), arch, (9, 10, 2), 5)
    x = np.random.default_rng(0).random((7, 9 * 10 * 2), np.float32)
    net = torch_backend.from_jax(torch_backend.make_network(FAMILIES["cnn"], arch, mcfg), variables)
    x_torch = torch.from_numpy(x).reshape(7, 9, 10, 2).permute(0, 3, 1, 2)
    apply = jax.jit(lambda v, x, is_training: cnn.apply_dense_cnn(v, x.reshape(-1, 9, 10, 2), arch, train=is_training,
                                                                  return_batch_stats=True, conv="xla"),
                    static_argnums=2)  # one program each way (eager convolutions would compile op by op)
    logits, stats = apply(variables, jnp.asarray(x), True)
    np.testing.assert_allclose(net.apply(x_torch, True).detach().numpy(), logits, rtol=1e-4, atol=1e-5)
    for name, tensor in net.stats.items():
        layer, leaf = name.split(".")
        np.testing.assert_allclose(tensor.numpy(), stats[layer][leaf], rtol=1e-5, atol=1e-6)
    logits, _ = apply({**variables, "batch_stats": stats}, jnp.asarray(x), False)
    np.testing.assert_allclose(net.apply(x_torch, False).detach().numpy(), logits, rtol=1e-4, atol=1e-5)


def test_cnn_space_trains_in_torch(digits):
    """A CNN position decodes and trains (digits' 8x8 images), an epoch at a time as in one run."""
    space = cnn_space(max_blocks=2, filters=(4, 8), kernels=(3,), dense_units=(8, 16), activations=("relu",),
                      learning_rate=(1e-2, 3e-2), dropout=(0.1, 0.3), batch_norm=True, poolings=("max", "avg"))
    trainer = torch_backend.make_torch_train(space, train.TrainConfig(epochs=2, batch_size=64), 64, 10,
                                             input_shape=digits.input_shape)
    data = trainer.data(digits.x_train, digits.y_train, digits.x_val, digits.y_val)
    assert tuple(data.x_train.shape[1:]) == (1, 8, 8)
    pos = np.full(space.num_dims, 0.5, np.float32)
    whole = trainer.train_position(jax.random.key(1), pos, data)
    run, hp = trainer.span_program(pos, len(data.y_train))
    m0, state = run(jax.random.key(1), hp, data, None, 0, 1)
    m1, _ = run(jax.random.key(1), hp, data, state, 1, 1)
    np.testing.assert_array_equal([*m0.val_accuracy_curve, *m1.val_accuracy_curve], whole.val_accuracy_curve)
    assert trainer.describe(pos)[0]["batch_norm"] and not bool(whole.diverged)
    assert whole.train_loss[1] < whole.train_loss[0]


def test_baseline_runs_on_torch_end_to_end(digits, tmp_path):
    """A random search and a pruning one (an epoch at a time) with backend="torch"; the winner's retrain is JAX's."""
    space = mlp_space(max_layers=1, units=(4, 16))
    res = baselines.run_baseline("random", space, digits, budget=2, epochs=1, out_dir=tmp_path / "r",
                                 progress=False, backend="torch")
    assert res.evaluations == 2 and res.test_accuracy is not None
    assert json.loads((tmp_path / "r" / results.STUDY).read_text())["backend"] == "torch"
    assert json.loads((tmp_path / "r" / results.BEST).read_text())["backend"] == "torch"
    rows = results.read_jsonl(tmp_path / "r" / results.EVALUATIONS)
    assert [r["fitness"] for r in rows] == [t.fitness for t in res.trials]
    pytest.importorskip("optuna")
    res = baselines.run_baseline("tpe_sha", space, digits, budget=3, epochs=3, retrain=False, progress=False,
                                 backend="torch", min_epochs=1)
    assert res.evaluations == 3 and {t.epochs for t in res.trials} <= {1, 3}


def test_cli_baseline_takes_backend(tmp_path):
    out = tmp_path / "cli"
    assert cli.main(["baseline", "--tuner", "random", "--budget", "1", "--epochs", "1", "--max-layers", "1",
                     "--units", "4", "8", "--no-retrain", "--quiet", "--backend", "torch", "--out", str(out)]) == 0
    assert json.loads((out / results.STUDY).read_text())["backend"] == "torch"


def test_jaxswarm_imports_without_torch():
    """torch stays optional: the package, the tuners and the command line import without importing it."""
    code = "import sys, jaxswarm, jaxswarm.tuners, jaxswarm.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr


def test_missing_torch_is_a_one_line_error(digits, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch_backend, "available", lambda: False)
    space = mlp_space(max_layers=1, units=(4, 8))
    with pytest.raises(BaselineError, match=r"pip install torch==2\.13\.0") as e:
        baselines.run_baseline("random", space, digits, budget=1, epochs=1, progress=False, backend="torch")
    assert "\n" not in str(e.value)
    assert cli.main(["baseline", "--tuner", "random", "--budget", "1", "--backend", "torch", "--quiet",
                     "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install torch==2.13.0" in err
    with pytest.raises(BaselineError, match="backend must be one of"):
        baselines.run_baseline("random", space, digits, budget=1, progress=False, backend="tensorflow")
