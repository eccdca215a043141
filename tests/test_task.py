"""The Task protocol: a swarm of your own Flax module trains as each member would alone, compiles once
per static signature, continues spans exactly, and refuses bad input in one line."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxswarm import task as tk
from jaxswarm.data import load_dataset
from jaxswarm.space import Choice, Float, Int, SearchSpace
from jaxswarm.study import Study, StudyConfig


class Net(nn.Module):
    """A small classifier with a static width and a traced dropout rate."""

    width: int

    @nn.compact
    def __call__(self, x, hp, train):
        h = nn.relu(nn.Dense(self.width)(x))
        rate = hp.get("dropout", 0.0)
        if train:  # inverted dropout at a traced rate (nn.Dropout takes a static one)
            keep = jax.random.uniform(self.make_rng("dropout"), h.shape) >= rate
            h = jnp.where(keep, h / (1.0 - rate), 0.0)
        return nn.Dense(3)(h)


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5)).astype(np.int32)
    return tk.TaskData({"x": x[:64], "y": y[:64]}, {"x": x[64:], "y": y[64:]})


def _task(**kw):
    return tk.Task(lambda static: Net(static["width"]), tk.softmax_loss, tk.classification_metrics,
                   tk.Objective("accuracy"), _data(), batch_size=16, eval_batch_size=20, **kw)


SPACE = SearchSpace({"width": Choice([4, 8]), "learning_rate": Float(1e-3, 1e-1, log=True),
                     "dropout": Float(0.0, 0.5)})


def _swarm(S=5, seed=1):
    positions = np.array(jax.random.uniform(jax.random.key(seed), (S, SPACE.num_dims)))
    positions[:, 0] = np.where(np.arange(S) % 2 == 0, 0.1, 0.9)  # both widths present
    return jax.random.split(jax.random.key(seed + 100), S), positions


def test_each_member_equals_its_module_trained_alone():
    """Members of two static groups in one call, with dropout: each equals its trainable run alone with the
    same key and hyperparameters (init, 2 epochs, evaluate), parameters and metrics."""
    build = tk.supervised(_task())
    engine = tk.make_engine(build, SPACE, epochs=2, objective=tk.Objective("accuracy"), group_size=2)
    keys, positions = _swarm()  # widths 4, 8, 4, 8, 4: calls of two members and of one
    result = engine.train(keys, positions)
    assert len(engine.groups(positions)) == 2
    for m, config in enumerate(SPACE.to_python_batch(positions)):
        trainable = build({"width": config["width"]})
        hp = {"learning_rate": jnp.float32(config["learning_rate"]), "dropout": jnp.float32(config["dropout"])}

        state, metrics = jax.jit(functools.partial(tk.run_member, trainable, epochs=2))(keys[m], hp)
        # vmapped and single matmuls may round differently in float32 (a few ulps); any wrong key,
        # hyperparameter or data order moves these by far more.
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     result.states[m].params, state.params)
        for name in ("accuracy", "loss"):
            np.testing.assert_allclose(result.metrics[name][m], metrics[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.fitness, result.metrics["accuracy"])


def test_at_most_two_programs_per_static_signature_and_floats_never_recompile():
    engine = tk.make_engine(tk.supervised(_task()), SPACE, epochs=1, objective=tk.Objective("accuracy"),
                            group_size=2)
    keys, positions = _swarm(S=5)  # widths 4, 8, 4, 8, 4: width 4 in a call of two and one of one
    engine.train(keys, positions)
    assert engine.stats["compiles"] == 3 and len(engine.stats["signatures"]) == 2
    flipped = positions.copy()
    flipped[:, 0] = 1.0 - positions[:, 0]  # widths 8, 4, 8, 4, 8: width 8 now needs its one-member program
    engine.train(keys, flipped)
    assert engine.stats["compiles"] == 4
    moved = flipped.copy()
    moved[:, 1:] = np.asarray(jax.random.uniform(jax.random.key(9), (5, 2)))  # learning rate, dropout move
    for p in (positions, flipped, moved):
        engine.train(keys, p)
    assert engine.stats["compiles"] == 4  # every signature and call size compiled: nothing new


@pytest.mark.slow  # covered by default: spans through a study: test_task_study's successive-halving test
def test_two_spans_train_as_one():
    engine = tk.make_engine(tk.supervised(_task()), SPACE, epochs=2, objective=tk.Objective("accuracy"))
    keys, positions = _swarm(S=3)
    straight = engine.train(keys, positions)
    first = engine.train(keys, positions, n_epochs=1)
    second = engine.train(keys, positions, states=first.states, n_epochs=1)
    # Two programs (one epoch's scan, two epochs') may fuse the same arithmetic differently: an ulp. A span
    # that restarted its epoch count, its optimizer state or its key would reshuffle and move far more.
    for a, b in zip(straight.states, second.states):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), a, b)
    np.testing.assert_allclose(straight.metrics["loss"], second.metrics["loss"], rtol=1e-5)
    assert [int(s.epoch) for s in second.states] == [2, 2, 2]  # each epoch shuffles with its own key


def test_regression_minimizes_mse():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)
    data = tk.TaskData({"x": x[:60], "y": y[:60]}, {"x": x[60:], "y": y[60:]})

    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x, hp, train):
            return nn.Dense(1)(x)[:, 0]

    task = tk.Task(lambda static: Linear(), tk.mse_loss, tk.regression_metrics, tk.Objective("mse", "min"), data,
                   batch_size=20)
    space = SearchSpace({"learning_rate": Float(1e-4, 3e-1, log=True)})
    engine = tk.make_engine(tk.supervised(task), space, epochs=20, objective=task.objective)
    positions = np.array([[0.05], [0.95]], np.float32)
    result = engine.train(jax.random.split(jax.random.key(0), 2), positions)
    np.testing.assert_array_equal(result.fitness, -result.metrics["mse"])
    assert result.metrics["mse"][1] < result.metrics["mse"][0]  # the larger rate learns the line in 20 epochs


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(ValueError, match="'units' takes 241 values"):
        tk.static_names(SearchSpace({"units": Int(16, 256)}))
    with pytest.raises(ValueError, match="is a Float"):
        tk.static_names(SPACE, static=("learning_rate",))
    bad = tk.TaskData({"x": np.zeros((10, 2), np.float32), "y": np.zeros(9, np.int32)}, _data().val)
    with pytest.raises(ValueError, match="same leading example axis"):
        tk.supervised(_task()._replace(data=bad))
    per_example = _task()._replace(loss=lambda logits, batch: logits.sum(-1))
    engine = tk.make_engine(tk.supervised(per_example), SPACE, epochs=1, objective=tk.Objective("accuracy"))
    with pytest.raises(ValueError, match=r"static hyperparameters \{'width': [48]\} failed.*must be a scalar"):
        engine.train(*_swarm(S=2))
    with pytest.raises(ValueError, match="direction is 'max' or 'min'"):
        tk.Objective("accuracy", "up").fitness({"accuracy": np.zeros(2)})


def test_the_default_optimizer_is_the_member_s_static_optimizer_choice():
    """A space with an `optimizer` Choice: each member trains with the optimizer it names (here plain SGD and
    Adam at its traced learning rate, `optim.plain_optimizer`), exactly as a task given that optimizer."""
    space = SearchSpace({"width": Choice([4]), "optimizer": Choice(["sgd", "adam"]),
                         "learning_rate": Float(1e-3, 1e-1, log=True)})
    engine = tk.make_engine(tk.supervised(_task()), space, epochs=2, objective=tk.Objective("accuracy"), group_size=1)
    positions = np.array([[0.5, 0.1, 0.7], [0.5, 0.9, 0.7]], np.float32)  # sgd, then adam, one learning rate
    keys = jax.random.split(jax.random.key(3), 2)
    result = engine.train(keys, positions)
    lr = float(engine.hyperparameters(positions[0])[1]["learning_rate"])
    for i, tx in enumerate((lambda hp: optax.sgd(hp["learning_rate"]),
                            lambda hp: optax.chain(optax.add_decayed_weights(0.0),
                                                   optax.adam(hp["learning_rate"], b1=0.9, b2=0.999, eps=1e-8)))):
        alone = tk.make_engine(tk.supervised(_task(optimizer=tx)), SearchSpace({
            "width": Choice([4]), "learning_rate": Float(1e-3, 1e-1, log=True)}), epochs=2,
            objective=tk.Objective("accuracy"), group_size=1)
        want = alone.train(keys[np.array([i])], positions[[i]][:, [0, 2]])
        assert float(alone.hyperparameters(positions[i, [0, 2]])[1]["learning_rate"]) == lr
        np.testing.assert_allclose(result.metrics["loss"][i], want.metrics["loss"][0], rtol=1e-6)
    assert result.metrics["loss"][0] != result.metrics["loss"][1]


def test_the_mlp_preset_regresses_with_mse_and_refuses_float_labels_for_cross_entropy():
    """`mlp_task(data, loss="mse")` on a 1-D float target: the study minimizes the MSE (its best value is the
    rows' smallest), and the retrained winner predicts ``[N]`` values that beat the test target's mean."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32) + 0.1 * rng.normal(size=300)).astype(np.float32)
    data = tk.TaskData({"x": x[:200], "y": y[:200]}, {"x": x[200:250], "y": y[200:250]},
                       {"x": x[250:], "y": y[250:]})
    task = tk.mlp_task(data, loss="mse", space=tk.mlp_task_space(depths=(1,), widths=(16,), weight_decay=None))
    study = Study(task.space, task, StudyConfig(swarm_size=4, rounds=2, epochs=20, batch_size=32), None, progress=False)
    result = study.run()
    assert task.objective == tk.Objective("mse", "min")
    assert -result.best_fitness == pytest.approx(min(r["metrics"]["mse"] for r in study.evaluations))
    predictions = np.asarray(result.model.predict({"x": x[250:]}))
    assert predictions.shape == (50,)
    assert result.test_metrics["test_mse"] < 0.5 * np.var(y[250:])
    with pytest.raises(ValueError, match="integer class labels"):
        tk.mlp_task(data, loss="cross_entropy")



def test_the_cnn_preset_trains_the_network_its_static_values_name_and_classifies_digits():
    """`cnn_task` on the embedded digits' 8x8 images: a member's state holds the network its static values name
    (block b a 3x3 conv of ``filters * 2**b`` channels, each halving the map), and a short study's retrained
    winner classifies the test images far above chance (0.1). Flat features and float labels are refused."""
    data = tk.TaskData.from_dataset(load_dataset("digits"))
    space = tk.cnn_task_space(blocks=(1, 2), filters=(4,), dense=(16,), weight_decay=None)
    task = tk.cnn_task(data, space=space)
    study = Study(space, task, StudyConfig(swarm_size=4, rounds=2, epochs=4, batch_size=32), None, progress=False)
    result = study.run()
    two = space.encode({"blocks": 2, "filters": 4, "dense": 16, "learning_rate": 1e-2})[None]
    (state,) = study.engine.state_shapes(two)
    shapes = {layer: p["kernel"].shape for layer, p in state.params.items()}
    assert shapes == {"Conv_0": (3, 3, 1, 4), "Conv_1": (3, 3, 4, 8), "Dense_0": (2 * 2 * 8, 16), "Dense_1": (16, 10)}
    assert result.test_metrics["test_accuracy"] > 0.8
    with pytest.raises(ValueError, match="images"):
        tk.cnn_task(tk.TaskData({"x": data.train["x"].reshape(len(data.train["x"]), -1), "y": data.train["y"]},
                                data.val))
    with pytest.raises(ValueError, match="integer class labels"):
        tk.cnn_task(data._replace(train={**data.train, "y": data.train["y"].astype(np.float32)}))


@pytest.mark.parametrize("kernel", [3, 5])
def test_task_conv_is_flax_conv_with_the_same_parameters(kernel):
    """`task.Conv(f, k)` initializes the parameters `nn.Conv(f, (k, k))` does from the same key and computes
    the same outputs (as matmuls on a CPU; rtol 1e-5: another summation order)."""
    x = jax.random.normal(jax.random.key(1), (2, 9, 7, 3))
    ours, flax_conv = tk.Conv(4, kernel), nn.Conv(4, (kernel, kernel))
    params = ours.init(jax.random.key(0), x)
    want = flax_conv.init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, params, want)
    params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias too
    np.testing.assert_allclose(ours.apply(params, x), flax_conv.apply(params, x), rtol=1e-5, atol=1e-5)
