"""The Optuna record: every evaluation of a study or a baseline one Optuna trial, kept in step, rebuilt from files."""

import math
import sys
import warnings

import pytest

from jaxswarm import cli, optuna_record, results
from jaxswarm import study as tuner
from jaxswarm.data import load_dataset
from jaxswarm.models import cnn_space, mlp_space
from jaxswarm.space import Choice, Fixed, Float, Int, SearchSpace

optuna = pytest.importorskip("optuna")

SPACE = mlp_space(max_layers=1, units=(4, 16))  # tests/test_tuners.py's: small programs, quick compiles
TINY = dict(swarm_size=4, rounds=2, epochs=1, batch_size=32, retrain=False)  # tests/test_study.py's, smaller
CLI_SPACE = ["--max-layers", "1", "--units", "4", "16", "--no-retrain", "--quiet"]  # SPACE, on the command line
SHA_EPOCHS = 2
STATES = optuna.trial.TrialState


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


class Killed(Exception):
    """Raised from on_round: the study dies right after round 0's results, checkpoint and record."""


def _kill_after_round_0(summary):
    raise Killed


@pytest.fixture(scope="module")
def pso_study(digits, tmp_path_factory):
    """A PSO study killed after round 0 and resumed: (folder, the record's trials at the kill)."""
    out = tmp_path_factory.mktemp("pso") / "study"
    config = tuner.StudyConfig(**TINY)
    with pytest.raises(Killed):
        tuner.Study(SPACE, digits, config, out, progress=False).run(on_round=_kill_after_round_0)
    at_kill = _record(out).get_trials()
    tuner.Study(SPACE, digits, config, out, progress=False).run(resume=True)
    return out, None, at_kill


@pytest.fixture(scope="module")
def sha_study(tmp_path_factory):
    """A successive-halving study, its record in another storage: (folder, storage)."""
    out, storage = _elsewhere(tmp_path_factory, "sha")
    assert cli.main(["run", "--schedule", "sha", "--swarm-size", "4", "--rounds", "1", "--epochs", str(SHA_EPOCHS),
                     "--eta", "2", "--min-epochs", "1", "--batch-size", "64", *CLI_SPACE, "--out", str(out),
                     "--storage", storage]) == 0
    return out, storage


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A random-search baseline, its record in another storage: (folder, storage)."""
    out, storage = _elsewhere(tmp_path_factory, "baseline")
    assert cli.main(["baseline", "--tuner", "random", "--budget", "2", "--epochs", "1", *CLI_SPACE, "--out", str(out),
                     "--storage", storage]) == 0
    return out, storage


def _elsewhere(tmp_path_factory, name):
    """A results folder and an Optuna storage outside it."""
    where = tmp_path_factory.mktemp(name)
    return where / "study", f"sqlite:///{where / 'record.db'}"


def _record(out, storage=None):
    return optuna.load_study(study_name=optuna_record.study_name(out),
                             storage=storage or optuna_record.default_storage(out))


def _assert_is_the_file(study, out, space=SPACE):
    """One trial per row of evaluations.jsonl, in order, with its value, params and distributions."""
    rows = results.read_jsonl(out / results.EVALUATIONS)
    trials = study.get_trials()
    assert len(trials) == len(rows) > 0
    tuned = {name for name, p in space.params.items() if p.has_dim}
    for i, (t, row) in enumerate(zip(trials, rows)):
        assert t.user_attrs["row"] == i
        assert (t.user_attrs["round"], t.user_attrs["particle"]) == (row["round"], row["particle"])
        assert t.params == {k: v for k, v in row["config"].items() if k in tuned}
        if row["diverged"] or row["fitness"] is None:
            assert t.state == STATES.FAIL and t.value is None
        else:
            assert t.value == row["fitness"] and t.state in (STATES.COMPLETE, STATES.PRUNED)
        for name in t.params:
            assert t.distributions[name] == _distribution(space[name])


def _distribution(p):
    if isinstance(p, Float):
        return optuna.distributions.FloatDistribution(p.lo, p.hi, log=p.log)
    if isinstance(p, Int):
        return optuna.distributions.IntDistribution(p.lo, p.hi, log=p.log)
    return optuna.distributions.CategoricalDistribution(p.options)


def _importances(study):
    with warnings.catch_warnings():  # tiny studies: "some regimes have less than 2 trials"
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(study)


def _fields(trials):
    return [(t.number, t.state, t.values, t.params, t.distributions, t.user_attrs, t.intermediate_values)
            for t in trials]


# -- recorded as they run ------------------------------------------------------------------------------


def test_a_pso_study_is_recorded_one_trial_per_evaluation(pso_study):
    out, _, _ = pso_study
    study = _record(out)
    _assert_is_the_file(study, out)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and study.metric_names == ["val_accuracy"]
    assert set(_importances(study)) <= set(SPACE.dim_names)


def test_a_resumed_study_adds_only_its_new_rounds(pso_study):
    out, _, at_kill = pso_study
    assert len(at_kill) == TINY["swarm_size"]  # round 0, recorded before the kill
    trials = _record(out).get_trials()
    assert [t.user_attrs["row"] for t in trials] == list(range(TINY["swarm_size"] * TINY["rounds"]))
    assert _fields(trials[:len(at_kill)]) == _fields(at_kill)  # round 0's trials kept as they were


def test_a_schedules_rungs_are_pruned_trials(sha_study):
    out, storage = sha_study
    study = _record(out, storage)
    _assert_is_the_file(study, out)
    assert not (out / "optuna.db").exists()  # --storage: the record is there alone
    rows = results.read_jsonl(out / results.EVALUATIONS)
    for t, row in zip(study.get_trials(), rows):
        assert (t.user_attrs["rung"], t.user_attrs["epochs"]) == (row["rung"], row["epochs"])
        assert t.user_attrs["pruned"] == (row["epochs"] < SHA_EPOCHS)
        if t.state != STATES.FAIL:
            assert t.state == (STATES.PRUNED if row["epochs"] < SHA_EPOCHS else STATES.COMPLETE)
            assert t.intermediate_values == {row["epochs"]: row["fitness"]}
    assert sum(t.state == STATES.PRUNED for t in study.get_trials()) >= 2 - sum(r["diverged"] for r in rows)
    assert set(_importances(study)) <= set(SPACE.dim_names)


def test_a_baseline_is_recorded_one_trial_per_evaluation(baseline):
    out, storage = baseline
    study = _record(out, storage)
    _assert_is_the_file(study, out)
    assert [t.user_attrs["evaluation"] for t in study.get_trials()] == [0, 1]
    assert set(_importances(study)) <= set(SPACE.dim_names)


# -- rebuilt from the files ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["pso_study", "sha_study", "baseline"])
def test_export_optuna_rebuilds_the_same_trials(which, request, tmp_path, capsys):
    out, storage, *_ = request.getfixturevalue(which)
    live = _fields(_record(out, storage).get_trials())
    elsewhere = f"sqlite:///{tmp_path / 'other.db'}"
    assert cli.main(["export-optuna", str(out), "--storage", elsewhere]) == 0
    assert _fields(_record(out, elsewhere).get_trials()) == live
    again = [] if storage is None else ["--storage", storage]
    assert cli.main(["export-optuna", str(out), *again]) == 0  # in place: replaced by the same trials
    assert _fields(_record(out, storage).get_trials()) == live
    assert f"{len(live)} trials in the Optuna study" in capsys.readouterr().out


def test_export_optuna_refuses_a_folder_without_a_study_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _hand_made(tmp_path / "no_rows", SearchSpace({"x": Float(0.0, 1.0)}), [])
    for folder, match in ((tmp_path / "missing", "is not a directory"),
                          (tmp_path / "empty", "holds no study.json"),
                          (tmp_path / "no_rows", "holds no evaluations yet")):
        assert cli.main(["export-optuna", str(folder)]) == 2
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1 and err.startswith("jaxswarm: error: ")


# -- the rows' meaning, on hand-made folders (no training) --------------------------------------------

HAND = SearchSpace({"n": Int(1, 2), "units": Int(4, 32, log=True, when=lambda v: v["n"] >= 2),
                    "act": Choice(["relu", "tanh"]), "lr": Float(1e-4, 1e-1, log=True), "batch": Fixed(32)})


def _row(i, **kw):
    return {"round": 0, "particle": i, "config": {"n": 1, "act": "relu", "lr": 0.01, "batch": 32},
            "fitness": 0.5, "diverged": False, "seconds": 0.5, **kw}


def _hand_made(out, space, rows, **study):
    out.mkdir(parents=True)
    results.write_json(out / results.STUDY, {"config": {"fitness": "accuracy", "epochs": 4}, "space": repr(space),
                                             **study})
    results.append_jsonl(out / results.EVALUATIONS, rows)
    return out


def test_diverged_pruned_fixed_and_inactive_values(tmp_path):
    rows = [_row(0, fitness=0.75), _row(1, fitness=-math.inf, diverged=True),
            _row(2, fitness=0.25, epochs=2, pruned=True), _row(3, fitness=0.5, epochs=1, rung=0),
            _row(4, fitness=0.5, config={"n": 2, "units": 8, "act": "tanh", "lr": 1e-4, "batch": 32})]
    out = _hand_made(tmp_path / "s", HAND, rows)
    assert optuna_record.Recorder(out, space=HAND).sync(rows) == 5
    study = _record(out)
    t = study.get_trials()
    assert [x.state for x in t] == [STATES.COMPLETE, STATES.FAIL, STATES.PRUNED, STATES.PRUNED, STATES.COMPLETE]
    assert [x.value for x in t] == [0.75, None, 0.25, 0.5, 0.5]
    assert t[1].user_attrs["diverged"] and t[1].user_attrs["fitness"] is None  # -inf, as the file holds it
    assert [x.user_attrs["pruned"] for x in t] == [False, False, True, True, False]
    assert t[2].intermediate_values == {2: 0.25} and t[0].intermediate_values == {}
    assert t[0].params == {"n": 1, "act": "relu", "lr": 0.01}  # units inactive, batch fixed
    assert t[4].params == {"n": 2, "units": 8, "act": "tanh", "lr": 1e-4}
    assert study.user_attrs["fixed"] == {"batch": 32} and t[0].duration.total_seconds() == 0.5
    assert all(x.distributions[name] == _distribution(HAND[name]) for x in t for name in x.params)


def test_a_tasks_record_is_its_objectives_metric_in_its_direction(tmp_path):
    rows = [_row(0, fitness=-0.2, metrics={"mse": 0.2}), _row(1, fitness=-math.inf, metrics={"mse": math.nan})]
    out = _hand_made(tmp_path / "task", HAND, rows, objective={"metric": "mse", "direction": "min"})
    optuna_record.Recorder(out, space=HAND).sync(rows)
    study = _record(out)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and study.metric_names == ["mse"]
    assert [(t.state, t.value) for t in study.get_trials()] == [(STATES.COMPLETE, 0.2), (STATES.FAIL, None)]


def test_syncing_again_adds_nothing_and_a_record_ahead_of_the_file_is_rebuilt(tmp_path):
    rows = [_row(i, fitness=i / 10) for i in range(6)]
    out = _hand_made(tmp_path / "s", HAND, rows)
    notes = []
    first = optuna_record.Recorder(out, space=HAND, log=notes.append)
    assert (first.sync(rows[:4]), first.sync(rows[:4]), first.sync(rows)) == (4, 0, 2)
    assert optuna_record.Recorder(out, space=HAND).sync(rows) == 0  # a new process: checked, nothing to add
    # Resumed from an older checkpoint: the file holds 3 rows, and round 0 trained again gave another fitness.
    again = [*rows[:2], _row(2, fitness=0.99)]
    assert optuna_record.Recorder(out, space=HAND, log=notes.append).sync(again) == 3
    assert [t.value for t in _record(out).get_trials()] == [0.0, 0.1, 0.99]
    assert len(notes) == 1 and "built again from the rows" in notes[0]


def test_a_record_never_stops_a_study(tmp_path, monkeypatch):
    rows = [_row(0)]
    out = _hand_made(tmp_path / "s", HAND, rows)
    notes = []
    broken = optuna_record.Recorder(out, storage=f"sqlite:///{tmp_path}/no/such/folder/x.db", log=notes.append)
    assert broken.sync(rows) == 0 and broken.sync(rows) == 0
    assert len(notes) == 1 and "is behind" in notes[0]  # said once
    monkeypatch.setitem(sys.modules, "optuna", None)  # not installed
    monkeypatch.setattr(optuna_record, "_NOT_INSTALLED", [])
    for _ in range(2):
        assert optuna_record.Recorder(out, log=notes.append).sync(rows) == 0
    assert len(notes) == 2 and "optuna is not installed" in notes[1]  # once per process


def test_another_folders_record_in_the_storage_is_refused_not_replaced(tmp_path, capsys):
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    a = _hand_made(tmp_path / "a" / "study", HAND, [_row(0)])
    b = _hand_made(tmp_path / "b" / "study", HAND, [_row(0), _row(1)], seed=1)  # the same folder name
    assert cli.main(["export-optuna", str(a), "--storage", shared]) == 0
    assert cli.main(["export-optuna", str(b), "--storage", shared]) == 2
    assert "holds another Optuna study named 'evaluations/study'" in capsys.readouterr().err
    assert len(_record(a, shared).get_trials()) == 1


@pytest.mark.parametrize("space", [HAND, mlp_space(learning_rate=(1e-3, 1e-3), batch_sizes=(32, 64)), cnn_space(),
                                   SearchSpace({"k": Choice([3, 5.5, True, "x]y"]), "f": Fixed("s")})])
def test_the_space_read_back_from_study_json_is_the_space(space):
    assert optuna_record.parse_space(repr(space)) == optuna_record.space_spec(space)


def test_a_float_bound_rounded_in_study_json_still_holds_every_value(tmp_path):
    space = SearchSpace({"x": Float(0.1234567, 0.9876543)})  # study.json: Float[0.123457, 0.987654]
    rows = [_row(0, config={"x": 0.1234567}), _row(1, config={"x": 0.9876543})]
    out = _hand_made(tmp_path / "s", space, rows)
    optuna_record.export(out)
    assert [t.params["x"] for t in _record(out).get_trials()] == [0.1234567, 0.9876543]


def test_the_record_is_another_study_than_an_optuna_strategys():
    assert optuna_record.study_name("runs/jaxswarm") != "jaxswarm" == tuner.strategies.OPTUNA_STUDY
    assert optuna_record.study_name("runs/x/") == "evaluations/x"
