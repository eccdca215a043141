"""Sequential baselines: each runs a tiny study end to end on the swarm's objective."""

import json
import math

import jax
import numpy as np
import pytest

from jaxswarm import load_model, results, train, tuners as baselines
from jaxswarm.data import load_dataset
from jaxswarm.models import mlp_space
from jaxswarm.tuners.base import EVAL_FOLD

BUDGET = 3


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def space():
    return mlp_space(max_layers=1, units=(4, 16))


def _needs(name):
    for package in baselines.TUNERS[name].packages:
        pytest.importorskip(package)


def _kwargs(name):
    return {"swarm_size": 2} if name in ("pso", "optunity") else {}


@pytest.mark.parametrize("name", [  # the pruning tuners' budgets and rows: test_pruners_stop_training_early
    pytest.param(n, marks=pytest.mark.slow) if n in ("tpe_sha", "tpe_hyperband", "grid", "optunity", "pso", "gp")
    else n for n in baselines.TUNERS])  # grid, optunity, pso: end to end in tests/test_fingerprint.py too; gp: PyTorch
def test_tiny_study_end_to_end_respects_budget(name, space, digits, tmp_path):
    _needs(name)
    out = tmp_path / name
    res = baselines.run_baseline(name, space, digits, budget=BUDGET, epochs=1, out_dir=out,
                                 progress=False, **_kwargs(name))
    assert res.evaluations == BUDGET == len(res.trials) == len(res.history)
    assert res.stop_reason == "budget"
    # best is the max of the recorded fitnesses, and best-so-far never decreases
    fits = [t.fitness for t in res.trials]
    assert res.best_fitness == max(f for f in fits if math.isfinite(f))
    bests = [h[1] for h in res.history]
    assert all(b2 >= b1 for b1, b2 in zip(bests, bests[1:]))
    assert [h[2] for h in res.history] == [1, 2, 3]
    # configs decode from the recorded positions; all positions in the unit box
    for t in res.trials:
        assert np.all((t.position >= 0) & (t.position <= 1))
        assert t.config == space.to_python(t.position)
    assert 0.0 <= res.test_accuracy <= 1.0
    assert res.wall_time >= res.search_time > 0
    # the same results files as a swarm study
    rows = results.read_jsonl(out / results.EVALUATIONS)
    assert len(rows) == BUDGET and [r["fitness"] for r in rows] == pytest.approx(fits)
    assert all(r["epochs"] == 1 and r["pruned"] is False for r in rows)  # one epoch: nothing to prune
    assert len(results.read_jsonl(out / results.ROUNDS)) == BUDGET
    best = json.loads((out / results.BEST).read_text())
    assert best["best_config"] == res.best_config and best["evaluations"] == BUDGET
    assert (out / results.CSV).read_text().count("\n") == BUDGET + 1
    # and the retrained winner, as a study's: it loads and predicts with the reported test accuracy
    model = load_model(out)
    assert model.metrics["test_accuracy"] == res.test_accuracy
    assert model.score(digits.x_test, digits.y_test) == pytest.approx(res.test_accuracy, abs=1e-6)


# One tuner by default (~9 s each); tests/test_fingerprint.py pins every baseline's trials to recorded values.
@pytest.mark.parametrize("name", ["random", *(pytest.param(n, marks=pytest.mark.slow)
                                              for n in ("grid", "tpe", "optunity", "pso"))])
def test_same_seed_same_result(name, space, digits):
    a = baselines.run_baseline(name, space, digits, budget=2, epochs=1, seed=3, retrain=False,
                               progress=False, **_kwargs(name))
    b = baselines.run_baseline(name, space, digits, budget=2, epochs=1, seed=3, retrain=False,
                               progress=False, **_kwargs(name))
    assert [t.config for t in a.trials] == [t.config for t in b.trials]
    assert [t.fitness for t in a.trials] == [t.fitness for t in b.trials]


def test_time_limit_stops_between_evaluations(space, digits):
    res = baselines.run_baseline("random", space, digits, time_limit=1e-3, epochs=1, retrain=False,
                                 progress=False)
    # Any evaluation (a compile included) outlasts 1 ms, so the check between evaluations lets at most
    # one start: zero when the set-up itself took over 1 ms (a busy machine), else one, run to its end.
    assert res.stop_reason == "time_limit" and res.evaluations <= 1
    assert len(res.trials) == res.evaluations and res.test_accuracy is None
    if res.evaluations == 0:
        assert res.best_position is None
    else:
        assert np.isfinite(res.trials[0].fitness)  # the evaluation that started ran to its end


def test_sequential_pso_follows_the_swarm_study_keys(space, digits):
    """Round 0 of the sequential PSO trains the swarm study's initial design, member by member."""
    from jaxswarm import design as sampling

    res = baselines.run_baseline("pso", space, digits, budget=3, epochs=1, seed=1, retrain=False,
                                 progress=False, swarm_size=2)
    init_key = jax.random.fold_in(jax.random.key(1), -1 % (2**31))
    design = np.asarray(sampling.initial_design(init_key, "lhs", 2, space.num_dims))
    np.testing.assert_allclose(np.stack([t.position for t in res.trials[:2]]), design, rtol=0, atol=1e-7)
    # round 1 moved the particles
    assert not np.allclose(res.trials[2].position, design[0])


def test_grid_covers_every_value_when_budget_allows():
    from jaxswarm.space import Choice, Int, SearchSpace

    sp = SearchSpace({"n": Int(1, 3), "act": Choice(["relu", "tanh"])})
    pos = baselines.grid_positions(sp, target=100, seed=0)
    configs = {(c["n"], c["act"]) for c in sp.to_python_batch(pos)}
    assert len(pos) == 6 and configs == {(n, a) for n in (1, 2, 3) for a in ("relu", "tanh")}
    # truncation keeps distinct configurations, in a seeded order
    assert np.array_equal(baselines.grid_positions(sp, 4, seed=1), baselines.grid_positions(sp, 4, seed=1))


def test_grid_collapses_inactive_dims():
    sp = mlp_space(max_layers=2, units=(4, 16), activations=("relu",))
    pos = baselines.grid_positions(sp, target=10, seed=0)
    configs = [json.dumps(c, sort_keys=True) for c in sp.to_python_batch(pos)]
    assert len(configs) == len(set(configs)) >= 10


@pytest.mark.parametrize("bad, match", [
    (dict(name="nope", budget=1), "unknown tuner"),
    (dict(name="random"), "budget"),
    (dict(name="random", budget=0), "budget"),
    (dict(name="random", budget=1, time_limit=-1.0), "time_limit"),
    (dict(name="random", budget=1, swarm_size=4), "swarm_size"),
])
def test_bad_settings_raise(bad, match, space, digits):
    name = bad.pop("name")
    with pytest.raises(baselines.BaselineError, match=match):
        baselines.run_baseline(name, space, digits, progress=False, **bad)


PRUNE_EPOCHS, PRUNE_BUDGET = 4, 8


def _pruned_study(name, space, digits, out):
    """(result, evaluation rows) of a pruning tuner's study: budget 8, 4 epochs."""
    pytest.importorskip("optuna")
    res = baselines.run_baseline(name, space, digits, budget=PRUNE_BUDGET, epochs=PRUNE_EPOCHS,
                                 out_dir=out, retrain=False, progress=False)
    return res, results.read_jsonl(out / results.EVALUATIONS)


@pytest.fixture(scope="module")
def sha_study(space, digits, tmp_path_factory):
    return _pruned_study("tpe_sha", space, digits, tmp_path_factory.mktemp("tpe_sha"))


@pytest.fixture(scope="module")
def hyperband_study(space, digits, tmp_path_factory):
    return _pruned_study("tpe_hyperband", space, digits, tmp_path_factory.mktemp("tpe_hyperband"))


@pytest.mark.parametrize("study", ["sha_study", pytest.param("hyperband_study", marks=pytest.mark.slow)])  # ~20 s each
def test_pruners_stop_training_early(study, request):
    res, rows = request.getfixturevalue(study)
    assert res.evaluations == len(rows) == PRUNE_BUDGET  # a pruned trial counts as one evaluation
    pruned = [r for r in rows if r["pruned"]]
    assert pruned and all(r["epochs"] < PRUNE_EPOCHS for r in pruned)
    assert all(r["epochs"] == PRUNE_EPOCHS for r in rows if not r["pruned"])
    assert sum(r["epochs"] for r in rows) < PRUNE_BUDGET * PRUNE_EPOCHS  # training really stopped
    assert [(t.epochs, t.pruned) for t in res.trials] == [(r["epochs"], r["pruned"]) for r in rows]
    # the best is a configuration trained for all its epochs
    best = max((t for t in res.trials if not t.pruned), key=lambda t: t.fitness)
    assert res.best_fitness == best.fitness and res.best_config == best.config


def test_unpruned_trial_equals_one_shot_dense_training(sha_study, space, digits):
    """The epoch-at-a-time training of a trial that is never pruned gives the one-shot run's fitness."""
    res, rows = sha_study
    trial = res.trials[0]  # successive halving promotes the first trial at every rung
    assert not trial.pruned and trial.epochs == PRUNE_EPOCHS
    cfg = train.TrainConfig(epochs=PRUNE_EPOCHS, batch_size=64)
    dense = train.make_dense_train(space, cfg, int(np.prod(digits.x_train.shape[1:])), digits.num_classes,
                                   input_shape=digits.input_shape)
    data = train.device_data(digits.x_train, digits.y_train, digits.x_val, digits.y_val)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), EVAL_FOLD), trial.index)
    m = dense.train_position(key, trial.position, data)
    assert trial.fitness == pytest.approx(float(m.fitness), abs=1e-6)
    assert trial.val_accuracy == pytest.approx(float(m.val_accuracy), abs=1e-6)
    assert rows[0]["val_loss"] == pytest.approx(float(m.val_loss), abs=1e-6)


@pytest.mark.parametrize("name", ["tpe_sha", "tpe_hyperband"])
@pytest.mark.parametrize("bad, match", [
    (dict(eta=1), "eta"), (dict(eta=2.5), "eta"), (dict(min_epochs=0), "min_epochs"),
    (dict(min_epochs=3), "min_epochs"), (dict(max_epochs=2), "max_epochs"),
])
def test_pruner_bad_options_raise(name, bad, match, space, digits):
    pytest.importorskip("optuna")
    with pytest.raises(baselines.BaselineError, match=match):
        baselines.run_baseline(name, space, digits, budget=1, epochs=2, retrain=False, progress=False, **bad)


def test_epoch_at_a_time_compiles_two_programs_per_configuration(space, digits, compiles):
    """Start is traced: the first epoch's program (it initialises the state) and one for every later epoch."""
    pytest.importorskip("optuna")
    with compiles() as c:
        res = baselines.run_baseline("tpe_sha", space, digits, budget=1, epochs=3, retrain=False, progress=False)
    assert res.trials[0].epochs == 3 and not res.trials[0].pruned  # the first trial is always promoted
    assert c.names.count("jit(run)") == 2, c.names
