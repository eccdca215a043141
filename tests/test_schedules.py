"""Multi-fidelity schedules (jaxswarm.schedules) and the study's rungs: successive halving and Hyperband
(PBT: tests/test_pbt.py; its resume is here, with Hyperband's)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxswarm.study as tuner
from jaxswarm import data as data_lib
from jaxswarm import results, schedules, train
from jaxswarm.models import mlp_space

SPACE = mlp_space(max_layers=2, units=(4, 32), activations=("relu", "tanh"), dropout=(0.0, 0.3), batch_norm=True)
SHA = dict(swarm_size=9, rounds=2, epochs=9, batch_size=64, schedule="sha", eta=3, min_epochs=1, retrain=False)


@pytest.fixture(scope="module")
def digits():
    return data_lib.load_dataset("digits", seed=0)


def _same(a, b) -> bool:
    return all(bool(jnp.array_equal(u, v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.fixture(scope="module")
def spans():
    """A trainer of 4 epochs on small random data, and 3 members' start states."""
    rng = np.random.default_rng(0)
    x = rng.random((96, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int32)
    data = train.device_data(x[:64], y[:64], x[64:], y[64:])
    trainer = train.make_train(SPACE, train.TrainConfig(epochs=4, batch_size=16), 8, 2)
    keys = jax.random.split(jax.random.key(1), 3)
    positions = jax.random.uniform(jax.random.key(0), (3, SPACE.num_dims))
    start = jax.jit(jax.vmap(lambda k, p: trainer.start_member(k, p, 64)))(keys, positions)
    run = jax.jit(jax.vmap(lambda k, p, s, e, n: trainer.train_member_span(k, p, data, s, e, n),
                           in_axes=(0, 0, 0, None, None)), static_argnums=4)
    return run, keys, positions, start


@pytest.mark.parametrize("k", [pytest.param(1, marks=pytest.mark.slow), 2, pytest.param(3, marks=pytest.mark.slow)])
def test_k_epochs_then_the_rest_equals_training_straight_through(spans, k):
    """Dropout and batch norm on: the same keys, schedule and minibatches, so the same member, bit for bit."""
    run, keys, positions, start = spans
    straight, s_full = run(keys, positions, start, 0, 4)
    first, s_k = run(keys, positions, start, 0, k)
    rest, s_rest = run(keys, positions, s_k, k, 4 - k)
    assert _same(s_full, s_rest)  # weights, batch statistics, optimizer state (its step count included)
    np.testing.assert_array_equal(rest.val_accuracy, straight.val_accuracy)
    np.testing.assert_array_equal(np.concatenate([first.train_loss, rest.train_loss], 1), straight.train_loss)
    # A one-epoch program's evaluation may fuse differently: its loss agrees to float32 rounding.
    np.testing.assert_allclose(rest.val_loss, straight.val_loss, rtol=1e-6)


def test_a_rung_of_survivors_equals_them_in_the_whole_swarm(spans):
    run, keys, positions, start = spans
    _, s1 = run(keys, positions, start, 0, 1)
    whole, s_whole = run(keys, positions, s1, 1, 3)
    keep = np.array([0, 2])
    part, s_part = run(keys[keep], positions[keep], jax.tree.map(lambda x: x[keep], s1), 1, 3)
    np.testing.assert_array_equal(part.val_accuracy, whole.val_accuracy[keep])
    np.testing.assert_allclose(part.train_loss, whole.train_loss[keep], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(s_part), jax.tree.leaves(jax.tree.map(lambda x: x[keep], s_whole))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_rungs_and_brackets():
    assert schedules.rungs(27, 1, 9, 3) == [(1, 27), (3, 9), (9, 3)]
    assert schedules.rungs(16, 1, 10, 3) == [(1, 16), (3, 5), (10, 1)]  # counted down from the top
    assert schedules.rungs(4, 5, 5, 3) == [(5, 4)]
    assert schedules.brackets(1, 9, 3) == [1, 3, 9]
    plans = [schedules.round_rungs("hyperband", r, 9, 1, 9, 3) for r in range(4)]
    assert [p[0].epochs for p in plans] == [1, 3, 9, 1]  # brackets cycle over the rounds
    assert schedules.round_rungs("none", 0, 9, None, 9, 3) == [(9, 9)]
    assert schedules.round_rungs("sha", 0, 9, None, 9, 3)[0].epochs == 1  # epochs // eta**2


def test_survivors_and_scores():
    fitness = np.array([0.5, np.nan, 0.9, -np.inf, 0.9])
    assert schedules.survivors(fitness, 3).tolist() == [2, 4, 0]  # ties: lower index first; NaN last
    score = schedules.scores(np.array([0.99, 0.10, 0.50]), np.array([0, 2, 1]), 2, "accuracy")
    assert np.argsort(-score).tolist() == [1, 2, 0]  # any higher rung ranks above any lower one
    assert score[1] == np.float32(0.10)  # the top rung is told its own fitness
    loss = schedules.scores(np.array([-0.01, -900.0]), np.array([0, 1]), 1, "loss")
    assert loss[1] > loss[0]


@pytest.mark.parametrize("bad, message", [
    (dict(schedule="asha"), "schedule must be one of"),
    (dict(schedule="sha", eta=1), "eta must be an integer >= 2"),
    (dict(schedule="sha", min_epochs=20), "min_epochs must be an integer from 1 to epochs"),
    (dict(schedule="sha", mode="warm"), "trains fresh members on one hold-out split"),
    (dict(schedule="hyperband", folds=3), "trains fresh members on one hold-out split"),
])
def test_bad_schedule_settings_are_one_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        tuner.StudyConfig(**{**SHA, **bad}).validate()


@pytest.mark.slow  # ~35 s (two packed programs); the masked spans' bitwise tests above run by default
def test_packed_spans_equal_its_straight_run_and_its_survivors_the_whole_swarm():
    """The packed layout's rungs: from the members' (max-size) states, packed and unpacked with theirs."""
    from jaxswarm.layouts import packed

    space = mlp_space(max_layers=3, units=(4, 16), dropout=(0.0, 0.3), batch_norm=True,
                      optimizers=("sgd", "adam", "adagrad", "rmsprop"))
    rng = np.random.default_rng(0)
    x = rng.random((96, 8)).astype(np.float32)
    y = (x[:, 0] > .5).astype(np.int32)
    data = train.device_data(x[:64], y[:64], x[64:], y[64:])
    trainer = packed.make_packed_train(space, train.TrainConfig(epochs=4, batch_size=16), 8, 2)
    keys = jax.random.split(jax.random.key(1), 5)
    positions = jax.random.uniform(jax.random.key(0), (5, space.num_dims))
    shuffle = jax.random.key(7)
    start = trainer.start_states(keys, positions, 64)
    traced = trainer.stats["traces"]
    straight, s_full = trainer.train_span(keys, positions, data, shuffle, start, 0, 4)
    fresh = trainer.train_swarm(keys, positions, data, shuffle)
    np.testing.assert_array_equal(straight.val_loss, fresh.val_loss)  # a span of every epoch is the plain run
    first, s1 = trainer.train_span(keys, positions, data, shuffle, start, 0, 1)
    rest, s_rest = trainer.train_span(keys, positions, data, shuffle, s1, 1, 3)
    assert _same(s_full, s_rest)
    np.testing.assert_array_equal(rest.val_loss, straight.val_loss)
    keep = np.array([0, 3])
    part, _ = trainer.train_span(keys[keep], positions[keep], data, shuffle, jax.tree.map(lambda a: a[keep], s1), 1, 3)
    np.testing.assert_array_equal(part.val_loss, rest.val_loss[keep])  # its own plan, the same members
    # The spans of 5 members x 4 epochs, 5 x 1, 5 x 3 and 2 x 3 are one program (start and length are
    # traced, the members padded to the shape's slots); the plain run is the other trace.
    assert trainer.stats["traces"] - traced == 2 and len(trainer.stats["compile_s"]) == 1


@pytest.mark.parametrize("layout", ["masked", pytest.param("packed", marks=pytest.mark.slow)])  # ~20 s; packed
# rungs' exactness and compaction: test_packed_spans_equal_its_straight_run_and_its_survivors_the_whole_swarm
def test_successive_halving_trains_only_the_survivors(digits, tmp_path, layout):
    study = tuner.Study(SPACE, digits, tuner.StudyConfig(**SHA, layout=layout), tmp_path, progress=False)
    trained = []  # (members, epochs, fitness) of every rung the program ran
    span = study.program.span

    def counted(k, p, d, s, e, n, shuffle_key=None):
        metrics, states = span(k, p, d, s, e, n, shuffle_key=shuffle_key)
        trained.append((len(k), n, np.asarray(metrics.fitness)))
        return metrics, states

    study.program = study.program._replace(span=counted)
    result = study.run()
    assert [t[:2] for t in trained] == [(9, 1), (3, 2), (1, 6)] * 2  # 9 members 1 epoch, the best 3 two more, ...
    assert sum(m * n for m, n, _ in trained) == 2 * (9 + 6 + 6) < 2 * 9 * 9  # member-epochs: 42, not 162
    # The last round's survivors were each rung's best.
    rung0, rung1 = trained[3][2], trained[4][2]
    first, second = study.last_rungs["survivors"]
    assert sorted(first) == sorted(np.argsort(-rung0, kind="stable")[:3].tolist())
    assert second == [first[int(np.argmax(rung1))]]
    rows = results.read_jsonl(tmp_path / results.EVALUATIONS)
    for r in range(2):
        here = [e for e in rows if e["round"] == r]
        assert sorted(e["epochs"] for e in here) == [1] * 6 + [3] * 2 + [9]
        assert {e["epochs"]: e["rung"] for e in here} == {1: 0, 3: 1, 9: 2}
    last = [e for e in rows if e["round"] == 1]
    assert [e["fitness"] for e in last if e["epochs"] == 1] == [float(f) for i, f in enumerate(rung0) if i not in first]
    summary = results.read_jsonl(tmp_path / results.ROUNDS)[0]
    assert summary["rungs"] == [[1, 9], [3, 3], [9, 1]] and len(summary["survivors"]) == 2
    # The best is a fully trained member's own fitness (the top rung is told it unchanged).
    assert result.best_fitness in [e["fitness"] for e in rows if e["epochs"] == 9]


@pytest.mark.parametrize("schedule", [
    pytest.param(dict(schedule="hyperband", eta=2), marks=pytest.mark.slow),  # ~35 s
    dict(schedule="pbt", mode="warm", pbt_interval=1, min_epochs=None, layout="masked"),  # the PBT round's exploits and warm weights
])
def test_a_study_killed_mid_bracket_resumes_as_the_uninterrupted_one(digits, tmp_path, schedule):
    config = tuner.StudyConfig(**{**SHA, "swarm_size": 4, "rounds": 2, "epochs": 2, **schedule})
    full = tuner.Study(SPACE, digits, config, tmp_path / "full", progress=False).run()

    def kill(summary):
        if summary["round"] == 0:  # after the first bracket, before the second
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        tuner.Study(SPACE, digits, config, tmp_path / "part", progress=False).run(on_round=kill)
    resumed = tuner.Study(SPACE, digits, config, tmp_path / "part", progress=False).run(resume=True)
    assert (resumed.best_config, resumed.best_fitness) == (full.best_config, full.best_fitness)
    strip = lambda rows: [{k: v for k, v in e.items() if k != "seconds"} for e in rows]
    assert strip(results.read_jsonl(tmp_path / "part" / results.EVALUATIONS)) == \
        strip(results.read_jsonl(tmp_path / "full" / results.EVALUATIONS))


def test_the_schedule_flags_reach_the_study_config():
    from jaxswarm import cli

    args = cli.build_parser().parse_args(["run", "--schedule", "hyperband", "--eta", "2", "--min-epochs", "2",
                                          "--max-epochs", "6"])
    cfg = cli.settings_from_args(args)
    assert (cfg["schedule"], cfg["eta"], cfg["min_epochs"], cfg["epochs"]) == ("hyperband", 2, 2, 6)
    config = tuner.StudyConfig(**{k: cfg[k] for k in ("schedule", "eta", "min_epochs")})
    config.validate()


def test_the_top_rung_member_equals_that_member_trained_straight_through(digits):
    """Successive halving continues each survivor from exactly its own state: the member that reaches the top
    rung (1, then 3, then 9 epochs, gathered into smaller swarms on the way) ends as it would trained 9 epochs
    in one go. Handing rung i+1 another member's state (`take_members(states, alive)` for the searchsorted
    index) passed the survivors' count and identity tests before this one."""
    # Without batch norm: a dense bias before batch norm has a zero gradient up to float noise, which Adam
    # scales up to steps of its learning rate, so there a member drifts apart from itself run in another
    # swarm size (its training loss stays the same; its evaluation, through the lagging running mean, not).
    space = mlp_space(max_layers=2, units=(4, 32), activations=("relu", "tanh"), dropout=(0.0, 0.3),
                      optimizers=("adam", "momentum"))
    study = tuner.Study(space, digits, tuner.StudyConfig(**SHA, layout="masked"), progress=False)
    keys, _ = tuner.round_keys(study.key, 0, SHA["swarm_size"])
    positions = np.asarray(jax.random.uniform(jax.random.key(4), (SHA["swarm_size"], space.num_dims)))
    metrics, _ = study._train_rungs(0, keys, positions)
    (top,) = study.last_rungs["survivors"][-1]
    one = np.array([top])
    start = study.program.start_span(keys[one], positions[one], study.data)
    straight, _ = study.program.span(keys[one], positions[one], study.data, start, 0, SHA["epochs"],
                                     shuffle_key=jax.random.fold_in(keys[0], 1))
    np.testing.assert_allclose(metrics.train_loss[top], np.asarray(straight.train_loss)[0], rtol=1e-5)
    np.testing.assert_allclose(metrics.val_accuracy_curve[top], np.asarray(straight.val_accuracy_curve)[0], rtol=1e-6)
    assert metrics.fitness[top] == pytest.approx(float(straight.fitness[0]), rel=1e-6)
