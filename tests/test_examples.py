"""Every example in examples/ runs end to end on a tiny budget (the README's and the examples' own
commands run them at full size)."""

import functools
import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxswarm as js

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regression_example_runs_and_reports_both_test_errors(capsys):
    out = _load("regression_diabetes").main(["--rounds", "1", "--swarm-size", "2", "--epochs", "2"])
    assert np.isfinite(out["swarm_mse"]) and np.isfinite(out["sklearn_mse"])
    assert set(out["config"]) == {"depth", "width", "learning_rate", "weight_decay"}
    assert "MLPRegressor()" in capsys.readouterr().out


@pytest.mark.slow  # ~40 s: four compiles of a 500-step environment loop
def test_agent_members_equal_the_agent_trained_alone():
    """The lower tier: a swarm of policy-gradient agents (gymnax CartPole) in one call, two widths, members in
    calls of two and of one; each equals its agent trained alone with the same key and hyperparameters."""
    pytest.importorskip("gymnax")
    example = _load("agent_cartpole")
    engine = js.make_engine(example.agent, example.SPACE, epochs=2, objective=js.Objective("return"), group_size=2)
    positions = np.array([[0.1, 0.2, 0.3], [0.9, 0.5, 0.5], [0.1, 0.8, 0.1]], np.float32)  # widths 16, 64, 16
    keys = jax.random.split(jax.random.key(0), 3)
    result = engine.train(keys, positions)
    for m, position in enumerate(positions):
        static, hp = engine.hyperparameters(position)
        trainable = example.agent(static)

        state, metrics = jax.jit(functools.partial(js.task.run_member, trainable, epochs=2))(keys[m], hp)
        # float32 ulps between a vmapped and a single program; a wrong key or hyperparameter moves far more
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                     result.states[m].params, state.params)
        assert int(result.states[m].iteration) == 2
        np.testing.assert_allclose(result.metrics["return"][m], metrics["return"], rtol=1e-5)


@pytest.mark.slow  # ~1 min: the agent's programs compile for every rung and span
@pytest.mark.parametrize("schedule", ["sha", "pbt"])
def test_agent_example_runs_under_a_schedule(schedule, capsys):
    """The lower tier under `tune`: successive halving and PBT run on the agent, its winner retrained."""
    pytest.importorskip("gymnax")
    out = _load("agent_cartpole").main(["--rounds", "1", "--swarm-size", "4", "--iterations", "4",
                                        "--schedule", schedule])
    assert np.isfinite(out["best_return"]) and np.isfinite(out["retrained_return"])
    assert out["result"].rounds_run == 1 and "after its retrain" in capsys.readouterr().out


@pytest.mark.slow  # ~20 s: a GRU program per (embed, hidden) pair
def test_sequence_example_learns_beyond_the_majority_class():
    out = _load("sequence_gru").main(["--rounds", "1", "--swarm-size", "2", "--epochs", "2"])
    assert set(out["config"]) == {"embed", "hidden", "learning_rate"}
    assert out["test_accuracy"] > out["majority"] + 0.05  # the GRU reads the sequence: better than a constant


@pytest.mark.slow  # ~30 s: a conv program per width
def test_cnn_example_runs_on_fashion_mnist():
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    out = _load("cnn_fashion_mnist").main(["--rounds", "1", "--swarm-size", "2", "--epochs", "1",
                                           "--train-rows", "256"])
    assert set(out["config"]) == {"width", "learning_rate", "weight_decay", "dropout"}
    assert out["test_accuracy"] > 0.2  # ten classes: a trained network, not chance
