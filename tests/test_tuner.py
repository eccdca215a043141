import json

import numpy as np
import pytest

from jaxswarm import data as data_lib
from jaxswarm import report, tuner
from jaxswarm import space as sp

SPACE = sp.mlp_space(max_layers=2, units=(4, 32), activations=("relu", "tanh"))
TINY = dict(swarm_size=4, rounds=3, epochs=2, batch_size=32, progress=False)


@pytest.fixture(scope="module")
def digits():
    return data_lib.load_dataset("digits", seed=0)


def test_study_in_memory_finds_a_config_and_retrains(digits):
    result = tuner.tune(SPACE, digits, retrain_epochs=3, **TINY)
    assert set(result.best_config) >= {"n_layers", "units_1", "activation", "learning_rate"}
    assert 0.0 <= result.test_accuracy <= 1.0 and result.rounds_run == 3
    assert result.out_dir is None


def test_same_seed_same_study(digits, tmp_path):
    a = tuner.tune(SPACE, digits, out_dir=tmp_path / "a", seed=3, **TINY)
    b = tuner.tune(SPACE, digits, out_dir=tmp_path / "b", seed=3, **TINY)
    assert a.best_config == b.best_config and a.best_fitness == b.best_fitness
    ea = report.read_jsonl(tmp_path / "a" / report.EVALUATIONS)
    eb = report.read_jsonl(tmp_path / "b" / report.EVALUATIONS)
    assert [r["fitness"] for r in ea] == [r["fitness"] for r in eb]


def test_results_directory_is_complete(digits, tmp_path):
    out = tmp_path / "study"
    result = tuner.tune(SPACE, digits, out_dir=out, **TINY)
    evals = report.read_jsonl(out / report.EVALUATIONS)
    assert len(evals) == 4 * 3 and {e["round"] for e in evals} == {0, 1, 2}
    assert len(report.read_jsonl(out / report.ROUNDS)) == 3
    best = json.loads((out / report.BEST).read_text())
    assert best["best_config"] == result.best_config and best["test_accuracy"] == result.test_accuracy
    # the best fitness is the max over evaluations (PSO's global best is a real memory)
    assert best["best_fitness"] == pytest.approx(max(e["fitness"] for e in evals))
    assert (out / report.CSV).read_text().count("\n") == 4 * 3 + 1
    assert (out / report.STUDY).exists() and (out / "checkpoints").is_dir()


def test_resume_in_process_equals_uninterrupted(digits, tmp_path):
    full = tuner.tune(SPACE, digits, out_dir=tmp_path / "full", **{**TINY, "rounds": 4})
    tuner.tune(SPACE, digits, out_dir=tmp_path / "part", **{**TINY, "rounds": 2, "retrain": False})
    resumed = tuner.tune(SPACE, digits, out_dir=tmp_path / "part", resume=True, **{**TINY, "rounds": 4})
    assert resumed.best_config == full.best_config and resumed.best_fitness == full.best_fitness
    assert resumed.test_accuracy == full.test_accuracy
    evals = report.read_jsonl(tmp_path / "part" / report.EVALUATIONS)
    assert [e["fitness"] for e in evals] == [e["fitness"] for e in
                                             report.read_jsonl(tmp_path / "full" / report.EVALUATIONS)]


def test_resuming_a_finished_study_trains_and_compiles_nothing(digits, tmp_path):
    first = tuner.tune(SPACE, digits, out_dir=tmp_path / "s", **{**TINY, "retrain": False})
    settings = {k: v for k, v in TINY.items() if k != "progress"}
    study = tuner.Study(SPACE, digits, tuner.StudyConfig(**settings, retrain=False), out_dir=tmp_path / "s",
                        progress=False)
    again = study.run(resume=True)
    assert again.best_config == first.best_config and again.best_fitness == first.best_fitness
    assert again.rounds_run == TINY["rounds"]
    assert study.runner.compile_seconds == 0.0  # the swarm program was never compiled
    assert len(report.read_jsonl(tmp_path / "s" / report.ROUNDS)) == TINY["rounds"]


def test_warm_mode_runs_and_keeps_unchanged_architectures(digits, tmp_path):
    result = tuner.tune(SPACE, digits, mode="warm", out_dir=tmp_path / "w", **TINY)
    assert np.isfinite(result.best_fitness)
    resumed = tuner.tune(SPACE, digits, mode="warm", out_dir=tmp_path / "w2",
                         **{**TINY, "rounds": 1, "retrain": False})
    again = tuner.tune(SPACE, digits, mode="warm", out_dir=tmp_path / "w2", resume=True, **TINY)
    assert again.best_fitness == result.best_fitness and again.best_config == result.best_config
    del resumed


def test_early_stopping(digits):
    # With c1 = c2 = 0 and zero initial progress, patience 1 stops as soon as a round fails to improve.
    result = tuner.tune(SPACE, digits, patience=1, **{**TINY, "rounds": 20})
    assert result.rounds_run < 20


@pytest.mark.parametrize("bad, match", [
    (dict(swarm_size=1), "swarm_size"),
    (dict(rounds=0), "rounds"),
    (dict(mode="lukewarm"), "mode"),
    (dict(init="halton"), "init"),
    (dict(fitness="f1"), "fitness"),
    (dict(patience=0), "patience"),
    (dict(retrain_epochs=0), "retrain_epochs"),
    (dict(layout="ragged"), "layout"),
])
def test_bad_study_config(digits, bad, match):
    with pytest.raises(ValueError, match=match):
        tuner.tune(SPACE, digits, **{**TINY, **bad})


def test_existing_results_are_not_overwritten(digits, tmp_path):
    tuner.tune(SPACE, digits, out_dir=tmp_path, **{**TINY, "rounds": 1, "retrain": False})
    with pytest.raises(tuner.StudyError, match="already holds a study"):
        tuner.tune(SPACE, digits, out_dir=tmp_path, **TINY)


def test_architecture_limits():
    assert tuner.architecture_limits(sp.mlp_space(max_layers=3, units=(8, 100))) == (3, 100)


def test_packed_layout_study(digits):
    result = tuner.tune(SPACE, digits, layout="packed", **TINY)
    assert np.isfinite(result.best_fitness) and 0 < result.test_accuracy <= 1
    with pytest.raises(ValueError, match="packed"):
        tuner.tune(SPACE, digits, layout="packed", folds=2, **TINY)


def test_cnn_space_study(digits):
    from jaxswarm.cnn import cnn_space

    space = cnn_space(max_blocks=2, filters=(2, 4), dense_units=(4, 8), activations=("relu",))
    result = tuner.tune(space, digits, **{**TINY, "rounds": 2, "epochs": 1})
    assert set(result.best_config) >= {"n_blocks", "filters_1", "kernel_1", "dense_units"}
    assert 0 < result.test_accuracy <= 1
    # The serial layout searches the same swarm (members one at a time, own blocks only).
    serial = tuner.tune(space, digits, layout="serial", **{**TINY, "rounds": 2, "epochs": 1})
    assert serial.best_config == result.best_config
    np.testing.assert_allclose(serial.best_fitness, result.best_fitness, atol=1e-6)
    with pytest.raises(ValueError, match="serial"):
        tuner.StudyConfig(layout="serial", chunk_size=4).validate()


def test_retrain_reports_every_epoch(digits, capsys):
    config = tuner.StudyConfig(swarm_size=2, rounds=1, epochs=1, batch_size=32, retrain_epochs=3)
    result = tuner.Study(SPACE, digits, config, progress=True).run()
    captured = capsys.readouterr()
    lines = [ln for ln in (captured.out + captured.err).splitlines() if ln.startswith("retrain epoch")]
    assert [ln.split(":")[0] for ln in lines] == [f"retrain epoch {e}/3" for e in (1, 2, 3)]
    assert lines[-1].endswith(f"test accuracy {result.test_accuracy:.4f}")  # the last epoch is the reported one
