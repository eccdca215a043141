import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxswarm import cli, load_dataset, load_model, results
from jaxswarm.study import StudyResult

TINY = ["--swarm-size", "4", "--rounds", "3", "--epochs", "2", "--max-layers", "2",
        "--units", "4", "32", "--quiet"]


def _run(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "jaxswarm.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300, **kw)


def test_help_lists_every_flag():
    out = subprocess.run([sys.executable, "-m", "jaxswarm.cli", "run", "--help"], capture_output=True,
                         text=True).stdout
    for flag in ("--dataset", "--data-dir", "--config", "--resume", "--swarm-size", "--rounds", "--epochs",
                 "--folds", "--mode", "--init", "--seed", "--out", "--topology", "--inertia", "--c1",
                 "--c2", "--vmax", "--boundary", "--optimizers", "--patience", "--strategy"):
        assert flag in out


def test_run_on_digits_writes_every_result_file(tmp_path):
    out = tmp_path / "run"
    p = _run(["run", "--out", str(out), *TINY])
    assert p.returncode == 0, p.stderr
    for name in (results.STUDY, results.EVALUATIONS, results.ROUNDS, results.BEST, results.CSV):
        assert (out / name).exists(), name
    best = json.loads((out / results.BEST).read_text())
    assert 0 < best["test_accuracy"] <= 1
    assert len(results.read_jsonl(out / results.EVALUATIONS)) == 12


def test_study_file_and_flags_merge(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text('dataset = "digits"\nswarm_size = 3\nrounds = 2\nepochs = 1\n'
                   '[space]\nmax_layers = 1\nunits = [4, 8]\n[pso]\ntopology = "ring"\n')
    out = tmp_path / "run"
    assert cli.main(["run", "--config", str(cfg), "--out", str(out), "--rounds", "1", "--quiet",
                     "--no-retrain"]) == 0
    rows = results.read_jsonl(out / results.EVALUATIONS)
    assert len(rows) == 3 and all(r["config"]["units_1"] <= 8 for r in rows)
    settings = json.loads((out / results.STUDY).read_text())["settings"]
    assert settings["pso"] == {"topology": "ring"} and settings["rounds"] == 1


def test_the_strategy_comes_from_a_study_file_and_survives_resume(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    cfg = tmp_path / "study.toml"
    cfg.write_text('strategy = "tpe"\nswarm_size = 2\nrounds = 1\nepochs = 1\nretrain = false\n'
                   '[space]\nmax_layers = 1\nunits = [4, 8]\n[strategy_options]\nn_startup_trials = 3\n')
    out = tmp_path / "run"
    assert cli.main(["run", "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert (out / "optuna.db").exists() and len(results.read_jsonl(out / results.EVALUATIONS)) == 2
    built = []
    real = cli.Study

    def study(space, dataset, config, *args, **kwargs):
        built.append(config)
        return real(space, dataset, config, *args, **kwargs)

    monkeypatch.setattr(cli, "Study", study)
    assert cli.main(["run", "--resume", str(out), "--quiet"]) == 0
    assert (built[0].strategy, built[0].strategy_options) == ("tpe", {"n_startup_trials": 3})


@pytest.mark.slow  # ~43 s; a SIGKILLed study process resuming: tests/test_results.py, equality: tests/test_study.py
def test_killed_study_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["--swarm-size", "4", "--rounds", "8", "--epochs", "3", "--max-layers", "2", "--units", "4", "32",
            "--quiet", "--seed", "5"]
    full = tmp_path / "full"
    assert _run(["run", "--out", str(full), *args]).returncode == 0

    part = tmp_path / "part"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jaxswarm.cli", "run", "--out", str(part), *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if len(results.read_jsonl(part / results.ROUNDS)) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the study finished before it could be killed"
    assert not (part / results.BEST).exists()

    p = _run(["run", "--resume", str(part), "--quiet"])
    assert p.returncode == 0, p.stderr
    a = json.loads((full / results.BEST).read_text())
    b = json.loads((part / results.BEST).read_text())
    assert b["best_config"] == a["best_config"] and b["best_fitness"] == a["best_fitness"]
    assert b["test_accuracy"] == a["test_accuracy"]
    fa = [r["fitness"] for r in results.read_jsonl(full / results.EVALUATIONS)]
    fb = [r["fitness"] for r in results.read_jsonl(part / results.EVALUATIONS)]
    assert fa == fb


def _assert_clean_error(p, match, out: Path):
    assert p.returncode != 0
    lines = [l for l in p.stderr.strip().splitlines() if l.strip()]
    assert lines and "Traceback" not in p.stderr, p.stderr
    assert match in lines[-1], p.stderr
    assert not (out / results.EVALUATIONS).exists() and not (out / results.BEST).exists()


def test_unknown_dataset_is_one_clear_error(tmp_path):
    p = _run(["run", "--dataset", "cifar99", "--out", str(tmp_path / "o"), *TINY])
    _assert_clean_error(p, "cifar99", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_corrupt_idx_is_one_clear_error(tmp_path):
    d = tmp_path / "fm"
    d.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        with gzip.open(d / f"{name}.gz", "wb") as f:
            f.write(b"\x00\x00\x08\x03" + b"\x00" * 7)  # truncated header
    p = _run(["run", "--dataset", "fashion_mnist", "--data-dir", str(d), "--out", str(tmp_path / "o"), *TINY])
    _assert_clean_error(p, "ubyte", tmp_path / "o")


def test_batch_size_beside_batch_sizes_is_one_clear_error(tmp_path, capsys):
    assert cli.main(["run", "--batch-size", "32", "--batch-sizes", "16", "32", "--out", str(tmp_path / "o"),
                     "--quiet"]) == 2
    assert "drop --batch-size" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_invalid_space_is_one_clear_error(tmp_path):
    p = _run(["run", "--units", "64", "8", "--out", str(tmp_path / "o"), "--quiet"])
    _assert_clean_error(p, "units", tmp_path / "o")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir_is_one_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    p = _run(["run", "--out", str(ro / "o"), *TINY])
    _assert_clean_error(p, "cannot write", ro / "o")


def test_output_path_that_is_a_file_is_one_clear_error(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    p = _run(["run", "--out", str(f / "sub"), *TINY])
    _assert_clean_error(p, "cannot write", f / "sub")


def test_resume_without_study_is_one_clear_error(tmp_path):
    p = _run(["run", "--resume", str(tmp_path)])
    assert p.returncode != 0 and "nothing to resume" in p.stderr


@pytest.mark.slow  # ~25 s (the conv program's compile); the same flags on the MLP: test_every_hyperparameter_flag
def test_cnn_space_from_the_command_line(tmp_path):
    out = tmp_path / "cnn"
    assert cli.main(["run", "--space", "cnn", "--swarm-size", "2", "--rounds", "1", "--epochs", "1",
                     "--activations", "relu", "tanh", "--per-layer-activation",
                     "--init-schemes", "he_uniform", "glorot_normal",
                     "--out", str(out), "--quiet", "--no-retrain"]) == 0
    rows = results.read_jsonl(out / results.EVALUATIONS)
    assert len(rows) == 2 and all("n_blocks" in r["config"] for r in rows)
    assert all(r["config"]["init"] in ("he_uniform", "glorot_normal") for r in rows)
    assert all("activation_1" in r["config"] and "activation_dense" in r["config"] for r in rows)


def test_an_unknown_space_or_an_mlp_flag_on_the_cnn_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["run", "--space", "rnn"])
    assert cli.main(["run", "--space", "cnn", "--units", "4", "8", "--out", str(tmp_path / "x"), "--quiet"]) == 2


def test_every_hyperparameter_flag_reaches_the_study(tmp_path):
    """beta2, eps, nadam/adadelta, init schemes, per-layer activations and batch sizes: tuned, recorded,
    retrained."""
    out = tmp_path / "all"
    assert cli.main(["run", "--swarm-size", "4", "--rounds", "1", "--epochs", "1", "--max-layers", "2",
                     "--units", "4", "8", "--optimizers", "nadam", "adadelta", "--beta2", "0.9", "0.99",
                     "--eps", "1e-8", "1e-4", "--init-schemes", "he_uniform", "glorot_normal",
                     "--per-layer-activation", "--batch-sizes", "16", "32", "--out", str(out), "--quiet"]) == 0
    rows = results.read_jsonl(out / results.EVALUATIONS)
    assert len(rows) == 4
    for row in rows:
        assert {"activation_1", "beta2", "eps", "init", "optimizer", "batch_size"} <= set(row["config"])
        assert row["config"]["batch_size"] in (16, 32)
        assert row["config"]["optimizer"] in ("nadam", "adadelta") and 0.9 <= row["config"]["beta2"] <= 0.99
    best = json.loads((out / results.BEST).read_text())
    assert best["hyperparameters"]["init"] in ("he_uniform", "glorot_normal")
    assert load_model(out).predict(load_dataset("digits").x_test[:3]).shape == (3,)


def test_baseline_subcommand_writes_results(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["baseline", "--tuner", "random", "--budget", "2", "--epochs", "1", "--max-layers", "1",
                     "--units", "4", "8", "--no-retrain", "--quiet", "--out", str(out)]) == 0
    best = json.loads((out / results.BEST).read_text())
    assert best["evaluations"] == 2 and best["test_accuracy"] is None
    assert cli.main(["baseline", "--tuner", "grid", "--swarm-size", "4", "--budget", "1"]) == 2
    assert "--swarm-size" in capsys.readouterr().err


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    return capsys.readouterr().out


def test_baseline_takes_every_space_flag_of_run(capsys):
    run_help, baseline_help = _help("run", capsys), _help("baseline", capsys)
    for flag in ("--space", "--max-layers", "--units", "--activations", "--learning-rate", "--optimizers",
                 "--momentum", "--weight-decay", "--dropout", "--batch-norm", "--lr-decay", "--beta2", "--eps",
                 "--init-schemes", "--per-layer-activation", "--batch-sizes"):
        assert flag in run_help and flag in baseline_help, flag


def test_help_prints_each_default_once_and_reads_it_from_the_config(capsys):
    text = " ".join(_help("run", capsys).split())  # argparse wraps lines
    assert "(default:" not in text
    assert "(networks trained at once) [16]" in text and text.count("[16]") == 1
    assert "rounds (PSO iterations) [8]" in text and "minibatch size [64]" in text
    assert "units per layer, log scale [16 256]" in text and "log scale [0.0001 0.1]" in text
    for name in ("masked", "packed", "serial", "mlp", "cnn", "lhs", "sobol", "tpe", "evosax_de"):
        assert name in text  # the choices come from the registries


# --- bad input: one line naming the setting, exit code 2, nothing written, no data loaded ------------


def _no_data(monkeypatch):
    """Makes loading a dataset fail loudly: bad input must be refused before it."""
    def load(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the bad input was refused")
    monkeypatch.setattr(cli, "load_dataset", load)


def _refused(argv, match, capsys, out=None) -> str:
    """Runs `jaxswarm argv` in-process; asserts exit code 2 and one stderr line holding `match`."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("jaxswarm: error: ") and match in lines[0], err
    if out is not None:
        assert not out.exists(), "bad input left a results folder"
    return lines[0]


@pytest.mark.parametrize("flags, match", [
    (["--rounds", "0"], "rounds must be an integer >= 1, got 0"),
    (["--swarm-size", "1"], "swarm_size must be an integer >= 2, got 1"),
    (["--epochs", "0"], "epochs must be an integer >= 1"),
    (["--patience", "0"], "patience must be an integer >= 1 or None"),
    (["--chunk-size", "0"], "chunk_size must be an integer >= 1 or None"),
    (["--memory-cap-gb", "0"], "memory_cap_gb must be a number > 0"),
    (["--c1", "-1"], "c1 must be a finite number >= 0, got -1.0"),
    (["--c2", "inf"], "c2 must be a finite number >= 0, got inf"),
    (["--inertia", "nan"], "inertia must be a finite number"),
    (["--inertia", "0.9", "inf"], "inertia (start, end) must be finite numbers"),
    (["--inertia", "1", "2", "3"], "--inertia takes one value or START END"),
    (["--topology", "ring", "--neighbors", "3"], "neighbors=3"),
    (["--dropout", "0", "1"], "dropout must lie in [0, 1), got (0, 1)"),
    (["--momentum", "0.5", "1"], "momentum must lie in [0, 1), got (0.5, 1)"),
    (["--weight-decay", "-1", "1"], "weight_decay must be >= 0"),
    (["--weight-decay", "0", "1"], "weight_decay is tuned on a log scale"),
    (["--lr-decay", "0.5", "2"], "lr_decay must lie in (0, 1], got (0.5, 2)"),
    (["--beta2", "0.9", "1"], "beta2 must lie in [0, 1), got (0.9, 1)"),
    (["--eps", "0", "1e-3"], "eps is tuned on a log scale"),
    (["--space", "cnn", "--max-layers", "2"], "['max_layers'] do not apply to space 'cnn'"),
    (["--units", "0", "8"], "units: "),
    (["--learning-rate", "0", "0.1"], "learning_rate: "),
    (["--activations", "mish"], "activations ['mish']"),
    (["--optimizers", "adamx"], "optimizers ['adamx']"),
    (["--strategy", "tpe", "--topology", "ring"], "pso settings ['topology'] apply only to strategy 'pso', not 'tpe'"),
])
def test_bad_flag_is_refused_before_the_data_in_one_line(flags, match, tmp_path, capsys, monkeypatch):
    _no_data(monkeypatch)
    _refused(["run", "--out", str(tmp_path / "o"), "--quiet", *flags], match, capsys, tmp_path / "o")


@pytest.mark.parametrize("name", ["swarm_size", "rounds", "epochs", "batch_size", "folds", "patience", "seed",
                                  "retrain_epochs", "chunk_size"])
@pytest.mark.parametrize("value", ["2.5", '"four"', "true"])
def test_integer_settings_refuse_floats_strings_and_bools(name, value, tmp_path, capsys, monkeypatch):
    _no_data(monkeypatch)
    (tmp_path / "s.toml").write_text(f"{name} = {value}\n")
    shown = {"2.5": "2.5", '"four"': "'four'", "true": "True"}[value]
    line = _refused(["run", "--config", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o")],
                    f"{name} must be an integer", capsys, tmp_path / "o")
    assert line.endswith(f"got {shown}")


@pytest.mark.parametrize("name, text, match", [
    ("s.toml", 'retrain = "no"\n', "retrain must be True or False, got 'no'"),
    ("s.toml", "memory_cap_gb = -1\n", "memory_cap_gb must be a number > 0 or None, got -1"),
    ("s.toml", 'space = "cnn"\n', "[space] must be a table of settings, got 'cnn'"),
    ("s.toml", 'pso = "ring"\n', "[pso] must be a table of settings, got 'ring'"),
    ("s.toml", "[space]\nlearnin_rate = [0.001, 0.1]\n", "['learnin_rate'] do not apply to space 'mlp'"),
    ("s.toml", "[space]\nmax_layer = 2\n", "['max_layer'] do not apply to space 'mlp'"),
    ("s.toml", '[space]\nspace = ["cnn"]\n', "space must be one of ['mlp', 'cnn'], got ['cnn']"),
    ("s.toml", '[pso]\ntopolgy = "ring"\n', "pso has unknown setting(s) ['topolgy']"),
    ("s.toml", "[pso]\nc1 = -0.5\n", "pso: c1 must be a finite number >= 0, got -0.5"),
    ("s.toml", 'strategy = "anneal"\n', "strategy must be one of ['pso', 'random'"),
    ("s.toml", 'strategy = "sobol"\n[strategy_options]\nscramble = false\n',
     "strategy 'sobol' takes no strategy_options, got ['scramble']"),
    ("s.toml", "[strategy_options]\nseed = 1\n", "strategy_options ['seed'] do not apply to strategy 'pso'"),
    ("s.toml", 'strategy_options = "x"\n', "[strategy_options] must be a table of settings, got 'x'"),
    ("s.toml", "roundz = 3\n", "unknown setting(s) ['roundz']"),
    ("s.toml", "dataset = 5\n", "dataset must be a string, got 5"),
    ("s.toml", 'val_fraction = "a tenth"\n', "val_fraction must be a number"),
    ("s.toml", "", "is empty"),
    ("s.toml", "# nothing but a comment\n", "holds no settings"),
    ("s.toml", "rounds = = 2\n", "cannot parse study file"),
    ("s.yaml", "rounds: [1, 2\nepochs: 3\n", "cannot parse study file"),  # YAML's message spans lines
    ("s.yaml", "- rounds\n", "must hold a table of settings, got list"),
    ("s.json", '{"rounds": ', "cannot parse study file"),
    ("s.json", '{"rounds": 0}', "rounds must be an integer >= 1, got 0"),  # read as JSON, not TOML
    ("s.ini", "rounds = 2\n", "unknown suffix '.ini'; use one of .toml, .yaml, .yml, .json"),
])
def test_bad_study_file_is_refused_in_one_line(name, text, match, tmp_path, capsys, monkeypatch):
    _no_data(monkeypatch)
    (tmp_path / name).write_text(text)
    _refused(["run", "--config", str(tmp_path / name), "--out", str(tmp_path / "o")], match, capsys, tmp_path / "o")


def test_missing_study_file_is_refused(tmp_path, capsys):
    _refused(["run", "--config", str(tmp_path / "none.toml")], "none.toml does not exist", capsys)


def test_json_study_file_merges_like_toml(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"rounds": 2, "space": {"max_layers": 1, "units": [4, 8]}, "pso": {"c1": 1.0}}))
    cfg = cli.settings_from_args(cli.build_parser().parse_args(["run", "--config", str(f), "--c2", "0.5"]))
    assert cfg["rounds"] == 2 and cfg["space"] == {"max_layers": 1, "units": (4, 8)}
    assert cfg["pso"] == {"c1": 1.0, "c2": 0.5}


@pytest.mark.parametrize("flags, match", [
    (["--rounds", "3", "--units", "4", "8"], "cannot take --rounds --units"),
    (["--dataset", "mnist"], "cannot take --dataset"),
    (["--data-dir", "x", "--val-fraction", "0.2"], "cannot take --data-dir --val-fraction"),
    (["--config", "s.toml"], "cannot take --config"),
    (["--c1", "1.0", "--topology", "ring"], "cannot take --topology --c1"),
    (["--no-retrain", "--layout", "packed"], "cannot take --no-retrain --layout"),
    (["--out", "elsewhere"], "cannot take --out"),
    (["--strategy", "tpe"], "cannot take --strategy"),
])
def test_resume_refuses_flags_that_would_change_the_study(flags, match, tmp_path, capsys, monkeypatch):
    _no_data(monkeypatch)
    _refused(["run", "--resume", str(tmp_path), "--quiet", *flags], match, capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, match", [
    ('{"config": {"swarm_size": 4, "rou', "cannot read"),  # cut in half by a killed writer
    ("not json at all", "cannot read"),
    ('{"tuner": "random", "settings": {}}', "written by `jaxswarm baseline`"),
    ('{"config": {}}', "was not written by `jaxswarm run`"),
])
def test_resume_with_a_broken_study_json_is_one_line(text, match, tmp_path, capsys, monkeypatch):
    _no_data(monkeypatch)
    (tmp_path / results.STUDY).write_text(text)
    line = _refused(["run", "--resume", str(tmp_path), "--quiet"], match, capsys)  # --quiet goes with --resume
    assert str(tmp_path / results.STUDY) in line


def test_resume_says_which_directory_it_continues(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--swarm-size", "2", "--rounds", "1", "--epochs", "1", "--max-layers", "1", "--units", "4", "8",
            "--no-retrain", "--quiet"]
    assert cli.main(["run", "--out", str(out), *args]) == 0
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(out), "--quiet"]) == 0
    assert f"resuming {out}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, match", [
    (["--tuner", "grid"], "give --budget N"),
    (["--tuner", "grid", "--budget", "0"], "--budget must be an integer >= 1, got 0"),
    (["--tuner", "grid", "--time-limit", "-1"], "--time-limit must be > 0 seconds"),
    (["--tuner", "pso", "--budget", "2", "--epochs", "0"], "epochs must be an integer >= 1, got 0"),
    (["--tuner", "grid", "--budget", "2", "--swarm-size", "4"], "--swarm-size applies to optunity and pso, not grid"),
    (["--tuner", "random", "--budget", "2", "--eta", "2"], "the command line sets eta, which"),
    (["--tuner", "tpe_sha", "--budget", "2", "--eta", "1"], "eta must be an integer >= 2"),
])
def test_bad_baseline_flag_is_refused_before_the_data(argv, match, tmp_path, capsys, monkeypatch):
    _no_data(monkeypatch)
    _refused(["baseline", "--out", str(tmp_path / "o"), "--quiet", *argv], match, capsys, tmp_path / "o")


@pytest.mark.parametrize("tuner, text, match", [
    ("grid", "rounds = 3\nfolds = 2\n", "sets rounds, folds, which `jaxswarm baseline --tuner grid` does not use"),
    ("random", "init = \"sobol\"\n", "sets init"),
    ("random", "[pso]\nc1 = 1.0\n", "[pso] in"),
    ("grid", "swarm_size = 4\n", "swarm_size in"),
    ("pso", "[pso]\nvmax = -1\n", "pso: vmax must be a number > 0"),
])
def test_baseline_refuses_study_file_settings_it_would_ignore(tuner, text, match, tmp_path, capsys, monkeypatch):
    _no_data(monkeypatch)
    (tmp_path / "s.toml").write_text(text)
    _refused(["baseline", "--tuner", tuner, "--budget", "2", "--config", str(tmp_path / "s.toml"),
              "--out", str(tmp_path / "o")], match, capsys, tmp_path / "o")


def test_a_study_that_fails_after_it_started_exits_1_in_one_line(tmp_path, capsys, monkeypatch):
    def boom(self, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: out of memory\nwhile allocating")
    monkeypatch.setattr(cli.Study, "run", boom)
    assert cli.main(["run", "--out", str(tmp_path / "o"), *TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"jaxswarm: error: the study in {tmp_path / 'o'} failed: RuntimeError: "
                   "RESOURCE_EXHAUSTED: out of memory while allocating")


def test_a_study_that_found_nothing_exits_1(tmp_path, capsys, monkeypatch):
    if "status" not in StudyResult._fields:
        pytest.skip("StudyResult has no status")
    monkeypatch.setattr(cli.Study, "run", lambda self, **kw: StudyResult({}, float("-inf"), None, 3, 1.0,
                                                                        tmp_path / "o", "all_diverged"))
    assert cli.main(["run", "--out", str(tmp_path / "o"), *TINY]) == 1
    captured = capsys.readouterr()
    assert "results in" in captured.out and "all_diverged" in captured.err


def test_a_baseline_that_fails_after_it_started_exits_1(tmp_path, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr(cli, "run_baseline", boom)
    assert cli.main(["baseline", "--tuner", "random", "--budget", "1", "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.strip().endswith("failed: RuntimeError: boom")


def test_baseline_prints_its_summary_on_stdout(tmp_path, capsys):
    assert cli.main(["baseline", "--tuner", "random", "--budget", "1", "--epochs", "1", "--max-layers", "1",
                     "--units", "4", "8", "--no-retrain", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "random: 1 evaluations in" in out and "results in" in out


@pytest.mark.parametrize("case, match", [
    ("missing", "is not a directory"),
    ("no rounds file", "holds no rounds.jsonl"),
    ("empty rounds file", "holds no finished round"),
])
def test_plot_with_nothing_to_plot_says_why(case, match, tmp_path, capsys):
    target = tmp_path / "none" if case == "missing" else tmp_path
    if case == "empty rounds file":
        pytest.importorskip("matplotlib")
        (tmp_path / results.ROUNDS).write_text("")
    assert cli.main(["plot", str(target)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxswarm: nothing to plot: ") and match in err and "\n" not in err


def test_a_locked_results_folder_is_bad_input_with_the_holders_pid(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    lock = results.lock_folder(out)
    try:
        code = cli.main(["run", "--out", str(out), "--swarm-size", "2", "--rounds", "1", "--epochs", "1", "--quiet"])
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert code == 2 and f"process {os.getpid()}" in err and len(err.strip().splitlines()) == 1
    assert not (out / results.STUDY).exists()


def test_an_absurd_swarm_is_refused_as_bad_input(tmp_path, capsys):
    code = cli.main(["run", "--out", str(tmp_path / "huge"), "--swarm-size", "10000000", "--init", "uniform",
                     "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "needs an estimated" in err and "--allow-huge" in err


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("done") / "s"
    assert cli.main(["run", "--out", str(out), "--swarm-size", "2", "--rounds", "1", "--epochs", "1",
                     "--max-layers", "1", "--units", "4", "8", "--quiet"]) == 0
    return out


def test_predict_writes_the_saved_winners_predictions(finished_study, tmp_path, capsys):
    ds = load_dataset("digits", seed=0)
    x = ds.flat(ds.x_test[:7])
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header=",".join(f"f{i}" for i in range(64)), comments="")
    want = load_model(finished_study).predict(x)
    capsys.readouterr()
    assert cli.main(["predict", str(finished_study), "--input", str(tmp_path / "x.npy")]) == 0
    assert [int(v) for v in capsys.readouterr().out.split()] == want.tolist()
    assert cli.main(["predict", str(finished_study), "--input", str(tmp_path / "x.csv"),
                     "--output", str(tmp_path / "p.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), want)
    assert cli.main(["predict", str(finished_study), "--input", str(tmp_path / "x.npy"), "--proba",
                     "--output", str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == ",".join(str(c) for c in range(10))
    np.save(tmp_path / "bad.npy", x[:, :5])
    capsys.readouterr()
    assert cli.main(["predict", str(finished_study), "--input", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "64" in err


@pytest.mark.parametrize("where, message", [
    ("missing/p.npy", "the folder .*missing does not exist"),
    (".", "is a directory; name a .npy or .csv file in it"),
    ("p.txt", "use a .npy or .csv file"),
])
def test_predict_refuses_an_output_it_cannot_write_in_one_line(finished_study, tmp_path, capsys, where, message):
    """A missing folder or a directory as --output was a traceback with exit 1, after the predictions."""
    ds = load_dataset("digits", seed=0)
    np.save(tmp_path / "x.npy", ds.flat(ds.x_test[:3]))
    capsys.readouterr()
    output = tmp_path / where
    assert cli.main(["predict", str(finished_study), "--input", str(tmp_path / "x.npy"), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err


def test_predict_names_a_directory_given_as_input(finished_study, tmp_path, capsys):
    capsys.readouterr()
    assert cli.main(["predict", str(finished_study), "--input", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_show_prints_the_studys_summary(finished_study, capsys):
    capsys.readouterr()
    assert cli.main(["show", str(finished_study)]) == 0
    out = capsys.readouterr().out
    best = json.loads((finished_study / results.BEST).read_text())
    assert f"{best['test_accuracy']:.4f}" in out and "best accuracy" in out and "optimizer" in out
    assert cli.main(["show", str(finished_study.parent / "nothing")]) == 2


@pytest.mark.slow  # ~20 s: a study process interrupted mid-round (the checkpoint's held SIGINT included)
def test_ctrl_c_during_a_study_is_one_line_saying_how_to_resume(tmp_path):
    """SIGINT in the middle of the rounds: exit 130, no traceback, one line naming the --resume command."""
    out = tmp_path / "s"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jaxswarm.cli", "run", "--out", str(out), "--swarm-size", "4",
                             "--rounds", "200", "--epochs", "1", "--max-layers", "1", "--units", "4", "8", "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and len(results.read_jsonl(out / results.ROUNDS)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1] == f"jaxswarm: interrupted; the rounds done are saved: continue with `jaxswarm run --resume {out}`"
