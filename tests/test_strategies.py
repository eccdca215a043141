"""Population strategies: the toy-fitness behaviour of each, and a study under each (budget, record, resume)."""

import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxswarm import data as data_lib
from jaxswarm import design, results, strategies
from jaxswarm import study as tuner
from jaxswarm.models import mlp_space
from jaxswarm.space import Float, SearchSpace
from jaxswarm.strategies import STRATEGIES, make_strategy, suggest

SPACE = mlp_space(max_layers=2, units=(4, 8), activations=("relu", "tanh"))
TINY = dict(swarm_size=4, rounds=2, epochs=1, batch_size=64, retrain=False)
OPTUNA = ("tpe", "gp", "cmaes", "qmc")


def _available(name):
    return all(importlib.util.find_spec(p) is not None for p in STRATEGIES[name].packages)


def _names(*names, slow=()):
    """The strategies as pytest params: those whose packages are missing skipped (gp needs PyTorch), `slow` marked
    (gp always: its PyTorch GP fit takes tens of seconds a test; tpe covers the Optuna path by default)."""
    return [pytest.param(n, marks=[pytest.mark.skipif(not _available(n), reason=f"needs {STRATEGIES[n].packages}"),
                                   *([pytest.mark.slow] if n in slow or n == "gp" else [])]) for n in names]


@pytest.fixture(scope="module")
def digits():
    return data_lib.load_dataset("digits", seed=0)


# -- the strategies alone, on a toy fitness (no training) ---------------------------------------------------------

BOX = SearchSpace({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0), "z": Float(0.0, 1.0)})


def _sphere(x_SxD):
    return -jnp.sum((jnp.asarray(x_SxD) - 0.3) ** 2, axis=-1)


def _drive(strategy, rounds, fitness=_sphere, jit=False, S=8):
    """Runs `rounds` ask/tell rounds; returns the final state and every round's (positions, fitness)."""
    start = design.initial_design(jax.random.key(1), "lhs", S, BOX.num_dims)
    state = strategy.init(jax.random.key(0), start)
    tell = jax.jit(strategy.tell) if jit else strategy.tell
    seen = []
    for r in range(rounds):
        x = np.asarray(strategy.ask(state))
        f = np.asarray(fitness(x), np.float32)
        seen.append((x, f))
        state = tell(jax.random.key(100 + r), state, f)
    return state, seen


@pytest.mark.parametrize("name", _names("random", "sobol", "lhs", "evosax_cma_es", "evosax_de", "evosax_pso"))
def test_the_best_is_the_best_told_and_never_a_diverged_member(name):
    def fitness(x):  # member 0 diverges every round
        return np.where(np.arange(len(x)) == 0, np.nan, np.asarray(_sphere(x)))

    s = make_strategy(name, BOX, 8, rounds=6, seed=0)
    state, seen = _drive(s, 6, fitness, jit=s.jittable)
    xs, fs = np.concatenate([x for x, _ in seen]), np.concatenate([f for _, f in seen])
    position, best = (np.asarray(b) for b in s.best(state))
    assert np.all((xs >= 0) & (xs <= 1)), "ask leaves the unit box"
    i = int(np.nanargmax(fs))
    assert best == fs[i] and np.array_equal(position, xs[i])
    assert np.isfinite(best)


@pytest.mark.parametrize("name", _names("random", "evosax_pso"))
def test_a_jittable_strategy_jitted_equals_itself_eager(name):
    s = make_strategy(name, BOX, 8, rounds=3, seed=0)
    assert s.jittable
    eager, _ = _drive(s, 3)
    jitted, _ = _drive(s, 3, jit=True)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", _names("evosax_cma_es", "evosax_de", "evosax_pso"))
def test_evosax_strategies_approach_the_optimum_of_a_sphere_in_the_box(name):
    s = make_strategy(name, BOX, 16, rounds=40, seed=0)
    state, _ = _drive(s, 40, jit=True, S=16)
    position, best = s.best(state)
    assert float(best) > -1e-2, (name, float(best), np.asarray(position))


def test_sobol_rounds_are_consecutive_parts_of_one_sequence_and_lhs_rounds_are_latin():
    s = make_strategy("sobol", BOX, 8, rounds=3, seed=0)
    _, seen = _drive(s, 3)
    one = np.asarray(design.sobol(jax.random.key(0), 24, BOX.num_dims))
    np.testing.assert_array_equal(np.concatenate([x for x, _ in seen]), one)
    _, seen = _drive(make_strategy("lhs", BOX, 8, rounds=3, seed=0), 3)
    for x, _ in seen:  # each column: one point in each of the 8 strata
        assert all(sorted((x[:, d] * 8).astype(int).tolist()) == list(range(8)) for d in range(BOX.num_dims))
    assert not np.array_equal(seen[0][0], seen[1][0])


@pytest.mark.parametrize("name", _names("random", "sobol", "lhs", "evosax_cma_es"))
def test_a_state_through_its_checkpoint_tree_continues_as_before(name):
    s = make_strategy(name, BOX, 8, rounds=4, seed=0)
    state, _ = _drive(s, 2)
    tree = jax.tree.map(np.asarray, strategies.to_checkpoint(state))  # what orbax gets and gives back
    template = s.init(jax.random.key(9), design.initial_design(jax.random.key(1), "lhs", 8, BOX.num_dims))
    back = strategies.from_checkpoint(template, tree)
    f = np.asarray(_sphere(s.ask(state)))
    for a, b in zip(jax.tree.leaves(s.tell(jax.random.key(5), state, f)),
                    jax.tree.leaves(s.tell(jax.random.key(5), back, f))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name, options, match", [
    ("tpe", {"n_startup_trial": 3}, "strategy_options for 'tpe'"),
    ("cmaes", {"seed": 3}, "seed comes from the study's seed"),
    ("random", {"scramble": True}, "strategy 'random' takes no strategy_options"),
    ("evosax_cma_es", {"std_initial": 0.1}, "evosax CMA_ES has no parameter(s) ['std_initial']"),
    ("evosax_de", {}, "needs swarm_size >= 4"),
    ("annealing", {}, "strategy must be one of"),
])
def test_bad_strategy_settings_are_one_clear_error(name, options, match):
    if name in STRATEGIES and not _available(name):
        pytest.skip(f"needs {STRATEGIES[name].packages}")
    with pytest.raises(ValueError) as e:
        make_strategy(name, BOX, 3 if name == "evosax_de" else 8, rounds=2, options=options)
    assert match in str(e.value)


def test_a_strategy_without_its_package_says_how_to_get_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real(n, *a))
    with pytest.raises(ValueError, match=r"strategy 'gp' needs the package 'torch': pip install torch"):
        make_strategy("gp", BOX, 4, rounds=2)
    with pytest.raises(ValueError, match="strategy 'gp' needs the package 'torch'"):
        tuner.StudyConfig(strategy="gp").validate()  # before any data


# -- Optuna's define-by-run translation ------------------------------------------------------------------------------


def test_optuna_suggestions_respect_conditions():
    optuna = pytest.importorskip("optuna")
    sp = mlp_space(max_layers=3, units=(4, 64))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        u = suggest(trial, sp)
        cfg = sp.to_python(u)
        n = trial.params["n_layers"]
        assert cfg["n_layers"] == n
        assert sorted(k for k in trial.params if k.startswith("units_")) == [f"units_{k}" for k in range(1, n + 1)]
        for k in range(1, n + 1):
            assert cfg[f"units_{k}"] == trial.params[f"units_{k}"]
        assert cfg["activation"] == trial.params["activation"]
        assert cfg["learning_rate"] == pytest.approx(trial.params["learning_rate"], rel=1e-5)
        study.tell(trial, 0.0)


def _same_config(config, params, space):
    """A jaxswarm config (decoded from the position) is the Optuna trial's params (+ the space's Fixed values)."""
    assert set(config) - set(params) <= {n for n, p in space.params.items() if not p.has_dim}, (config, params)
    assert set(params) <= set(config), (config, params)
    for k, v in params.items():
        if isinstance(v, float):
            assert config[k] == pytest.approx(v, rel=1e-5), k
        else:
            assert config[k] == v, k


@pytest.mark.parametrize("name", _names(*OPTUNA))
def test_an_optuna_strategy_proposes_only_valid_configurations(name):
    """Batches of a 3-layer space: units of absent layers never suggested, positions decode to the params."""
    space = mlp_space(max_layers=3, units=(4, 64), optimizers=("sgd", "adam"), dropout=(0.0, 0.5))
    s = make_strategy(name, space, 6, rounds=3, seed=0)
    state = s.init(jax.random.key(0), None)
    rng = np.random.default_rng(0)
    for r in range(3):
        x = s.ask(state)
        np.testing.assert_array_equal(s.ask(state), x)  # idempotent: asking again asks nothing
        state = s.tell(jax.random.key(r), state, rng.random(6).astype(np.float32))
    trials = s.record.open().get_trials()
    assert len(trials) == 18 and all(t.state.name == "COMPLETE" for t in trials)
    for t, config in zip(trials, space.to_python_batch(np.stack([space.encode(t.params) for t in trials]))):
        n = t.params["n_layers"]
        assert sorted(k for k in t.params if k.startswith("units_")) == [f"units_{k}" for k in range(1, n + 1)]
        _same_config(config, t.params, space)


def _optuna_rounds(strategy, state, first, last, space):
    """Rounds first..last-1 of an Optuna strategy on a toy fitness of the positions; returns (state, positions)."""
    seen = []
    for r in range(first, last):
        x = np.asarray(strategy.ask(state))
        seen.append(x)
        state = strategy.tell(jax.random.key(r), state, -np.sum((x - 0.3) ** 2, axis=1) + (x[:, 0] > 0.9) * np.nan)
    return state, seen


@pytest.mark.parametrize("died", ["after its checkpoint", "after asking the next round", "after telling it"])
@pytest.mark.parametrize("name", _names(*OPTUNA))
def test_an_optuna_strategy_resumed_from_a_checkpoint_proposes_what_the_uninterrupted_one_did(name, died, tmp_path):
    """A new process on the killed run's record, from the state of round 2's checkpoint, whatever the dead one did
    after it: the same trials as the uninterrupted strategy, told the same values, none twice, no stray trial."""
    def build(path):
        path.mkdir(exist_ok=True)
        return make_strategy(name, SPACE, 4, rounds=4, seed=3, out_dir=path)

    full = build(tmp_path / "full")
    _, want = _optuna_rounds(full, full.init(jax.random.key(0), None), 0, 4, SPACE)
    dead = build(tmp_path / "part")
    state, _ = _optuna_rounds(dead, dead.init(jax.random.key(0), None), 0, 2, SPACE)
    saved = jax.tree.map(np.asarray, strategies.to_checkpoint(state))
    if died != "after its checkpoint":
        x = np.asarray(dead.ask(state))
        if died == "after telling it":
            dead.tell(jax.random.key(2), state, -np.sum((x - 0.3) ** 2, axis=1) + (x[:, 0] > 0.9) * np.nan)
    again = build(tmp_path / "part")
    state = strategies.from_checkpoint(again.init(jax.random.key(0), None), saved)
    _, got = _optuna_rounds(again, state, 2, 4, SPACE)
    np.testing.assert_array_equal(np.stack(got), np.stack(want[2:]))

    def record(s):
        return [(t.number, t.params, t.value, t.state, t.user_attrs) for t in s.record.open().get_trials()]
    assert record(again) == record(full) and len(record(full)) == 16


# -- a study under each strategy ----------------------------------------------------------------------------------

# pso's: tests/test_study.py. One of each kind in the default run (a jitted sampler, a host sampler, an
# Optuna sampler, an evosax strategy); the others, ~6 s each, are slow.
@pytest.mark.parametrize("name", _names(*(n for n in STRATEGIES if n != "pso"),
                                        slow={"lhs", "cmaes", "qmc", "evosax_de", "evosax_pso"}))
def test_a_study_under_each_strategy_trains_exactly_its_budget(digits, tmp_path, name):
    """S x rounds evaluations, one row per round, best = the best evaluation; Optuna's record is the same trials."""
    out = tmp_path / name
    result = tuner.tune(SPACE, digits, out_dir=out, progress=False, strategy=name, **TINY)
    rows = results.read_jsonl(out / results.EVALUATIONS)
    assert len(rows) == 4 * 2 and [(e["round"], e["particle"]) for e in rows] == [(r, i) for r in (0, 1)
                                                                                   for i in range(4)]
    assert len(results.read_jsonl(out / results.ROUNDS)) == 2 and result.rounds_run == 2
    finite = [e["fitness"] for e in rows if e["fitness"] is not None]
    assert result.best_fitness == max(finite)
    assert json.loads((out / results.STUDY).read_text())["config"]["strategy"] == name
    if importlib.util.find_spec("optuna") is not None:  # optuna.db holds every study's Optuna record (optuna_record)
        import optuna

        studies = optuna.get_all_study_names(f"sqlite:///{out / strategies.OPTUNA_DB}")
        assert (strategies.OPTUNA_STUDY in studies) == (name in OPTUNA)  # and an Optuna strategy's own study
    if name in OPTUNA:  # the Optuna study holds these evaluations, no more: same configs, same fitness
        optuna = pytest.importorskip("optuna")
        trials = optuna.load_study(study_name=strategies.OPTUNA_STUDY,
                                   storage=f"sqlite:///{out / strategies.OPTUNA_DB}").get_trials()
        assert len(trials) == len(rows)
        for t, e in zip(trials, rows):
            assert (t.user_attrs["round"], t.user_attrs["member"]) == (e["round"], e["particle"])
            assert t.state.name == "COMPLETE"
            assert t.value == (-np.inf if e["fitness"] is None else e["fitness"])
            _same_config(e["config"], t.params, SPACE)
            assert [e["position"][d] for d in SPACE.dim_names] == SPACE.encode(t.params).tolist()


class Killed(Exception):
    """Raised from on_round: the study dies right after round 0's results and checkpoint are written."""


def _kill_after_round_0(summary):
    raise Killed


def _killed_and_resumed(digits, path, config):
    with pytest.raises(Killed):
        tuner.Study(SPACE, digits, config, path, progress=False).run(on_round=_kill_after_round_0)
    return tuner.Study(SPACE, digits, config, path, progress=False).run(resume=True)


def _fitness(path):
    return [e["fitness"] for e in results.read_jsonl(path / results.EVALUATIONS)]


# Every strategy resumes through a study; each case costs three tiny studies (11-19 s), so the default run keeps
# tpe, the one whose record lives outside the checkpoint. The others' states pass through their checkpoint tree
# above, Optuna's records resume above for every kill point, and PSO's studies resume in tests/test_study.py.
@pytest.mark.parametrize("name", _names(*STRATEGIES, slow=set(STRATEGIES) - {"tpe"}))
def test_a_killed_study_resumes_as_the_uninterrupted_one(digits, tmp_path, name):
    config = tuner.StudyConfig(**TINY, strategy=name)
    full = tuner.Study(SPACE, digits, config, tmp_path / "full", progress=False).run()
    resumed = _killed_and_resumed(digits, tmp_path / "part", config)
    assert (resumed.best_config, resumed.best_fitness) == (full.best_config, full.best_fitness)
    assert _fitness(tmp_path / "part") == _fitness(tmp_path / "full")
    if name in OPTUNA:
        import optuna

        def record(path):
            return [(t.params, t.value, t.state) for t in optuna.load_study(
                study_name=strategies.OPTUNA_STUDY, storage=f"sqlite:///{path / strategies.OPTUNA_DB}").trials]
        assert record(tmp_path / "part") == record(tmp_path / "full")


@pytest.mark.slow  # ~16 s; the same kill points without training: test_an_optuna_strategy_resumed_from_a_checkpoint
def test_an_optuna_study_killed_after_telling_a_round_resumes_on_its_record(digits, tmp_path):
    """Killed after round 1's trials were asked and told but before its checkpoint: the resumed run retrains
    round 1, tells nothing twice, asks nothing new, and ends as the uninterrupted study, record and all."""
    pytest.importorskip("optuna")
    config = tuner.StudyConfig(**{**TINY, "rounds": 3}, strategy="tpe")
    full = tuner.Study(SPACE, digits, config, tmp_path / "full", progress=False).run()
    part = tmp_path / "part"
    with pytest.raises(Killed):
        tuner.Study(SPACE, digits, config, part, progress=False).run(on_round=_kill_after_round_0)
    # What the killed process did next, before it died: asked round 1 and told it (its training is deterministic).
    s = make_strategy("tpe", SPACE, 4, rounds=3, seed=0, out_dir=part)
    state = s.init(jax.random.key(0), None)._replace(iteration=jnp.asarray(1, jnp.int32))
    s.ask(state)
    s.tell(jax.random.key(0), state, np.asarray([np.nan if f is None else f for f in _fitness(tmp_path / "full")[4:8]]))
    resumed = tuner.Study(SPACE, digits, config, part, progress=False).run(resume=True)
    assert (resumed.best_config, resumed.best_fitness) == (full.best_config, full.best_fitness)
    assert _fitness(part) == _fitness(tmp_path / "full")
    trials = s.record.open().get_trials()
    assert len(trials) == 12 and all(t.state.name == "COMPLETE" for t in trials)


def test_a_stale_optuna_record_of_other_settings_is_refused(digits, tmp_path):
    pytest.importorskip("optuna")
    s = make_strategy("tpe", SPACE, 4, rounds=2, seed=1, out_dir=tmp_path)  # another seed's record
    s.ask(s.init(jax.random.key(0), None))
    with pytest.raises(ValueError, match="belongs to another study"):
        tuner.tune(SPACE, digits, out_dir=tmp_path, progress=False, strategy="tpe", **TINY)


@pytest.mark.parametrize("bad, match", [
    (dict(strategy="annealing"), "strategy must be one of"),
    (dict(strategy="tpe", pso=dict(c1=1.0)), r"pso settings \['c1'\] apply only to strategy 'pso', not 'tpe'"),
    (dict(strategy_options=dict(seed=1)), r"strategy_options \['seed'\] do not apply to strategy 'pso'"),
    (dict(strategy="random", strategy_options=[1]), "strategy_options must be a dict"),
])
def test_bad_strategy_config(bad, match):
    with pytest.raises(ValueError, match=match):
        tuner.StudyConfig(**bad).validate()


# -- the other direction: Optuna's loop, jaxswarm's engine ---------------------------------------------------------


def test_optimize_batches_trains_each_batch_of_trials_as_one_swarm(digits):
    optuna = pytest.importorskip("optuna")
    swarm = tuner.Study(SPACE, digits, tuner.StudyConfig(**TINY), progress=False)
    seen = []

    def objective(trials):
        positions = np.stack([suggest(t, SPACE) for t in trials])
        fitness = swarm.evaluate(positions, r=trials[0].number).fitness
        seen.append((positions, fitness))
        return fitness

    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0, constant_liar=True))
    strategies.optimize_batches(study, objective, n_batches=2, batch_size=4)
    assert len(study.trials) == 8 and [t.value for t in study.trials] == [
        float(f) if np.isfinite(f) else -np.inf for _, fs in seen for f in fs]
    again = swarm.evaluate(seen[1][0], r=4).fitness  # the engine alone is a pure function of positions and r
    np.testing.assert_array_equal(again, seen[1][1])
    with pytest.raises(ValueError, match="returned 3 values for a batch of 4"):
        strategies.optimize_batches(study, lambda trials: [0.0] * 3, n_batches=1, batch_size=4)
    assert [t.state.name for t in study.trials[8:]] == ["FAIL"] * 4
    with pytest.raises(ValueError, match=r"positions of shape \(4, 5\)"):
        swarm.evaluate(np.zeros((3, 5)))
