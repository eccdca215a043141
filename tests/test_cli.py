import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxswarm import cli, results

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
                 "--c2", "--vmax", "--boundary", "--optimizers", "--patience"):
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


def test_cnn_space_from_the_command_line(tmp_path):
    out = tmp_path / "cnn"
    assert cli.main(["run", "--space", "cnn", "--swarm-size", "2", "--rounds", "1", "--epochs", "1",
                     "--activations", "relu", "--out", str(out), "--quiet", "--no-retrain"]) == 0
    rows = results.read_jsonl(out / results.EVALUATIONS)
    assert len(rows) == 2 and all("n_blocks" in r["config"] for r in rows)
    with pytest.raises(SystemExit):
        cli.main(["run", "--space", "rnn"])
    assert cli.main(["run", "--space", "cnn", "--units", "4", "8", "--out", str(tmp_path / "x"), "--quiet"]) == 2


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
                 "--momentum", "--weight-decay", "--dropout", "--batch-norm", "--lr-decay"):
        assert flag in run_help and flag in baseline_help, flag


def test_help_prints_each_default_once_and_reads_it_from_the_config(capsys):
    text = " ".join(_help("run", capsys).split())  # argparse wraps lines
    assert "(default:" not in text
    assert "(networks trained at once) [16]" in text and text.count("[16]") == 1
    assert "PSO iterations [8]" in text and "minibatch size [64]" in text
    assert "units per layer, log scale [16 256]" in text and "log scale [0.0001 0.1]" in text
    for name in ("masked", "packed", "serial", "mlp", "cnn", "lhs", "sobol"):
        assert name in text  # the choices come from the registries
