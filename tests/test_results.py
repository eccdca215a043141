"""Result files (jaxswarm/results.py): one writer per folder, file modes, CSV columns, killed writers' lines."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jaxswarm
from jaxswarm import results
from jaxswarm import study as study_lib

ROOT = Path(__file__).resolve().parent.parent
SPACE = jaxswarm.mlp_space(max_layers=1, units=(4, 8))
CONFIG = dict(swarm_size=2, rounds=4, epochs=1, retrain=False)

# Takes the folder's lock through the public API, says so, and holds it until killed.
HOLDER = """
import sys, time
from jaxswarm import results
lock = results.lock_folder(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""

# Runs a tiny study whose rounds wait a little each, so the test finds it running.
STUDY_HOLDER = """
import json, sys, time
import jaxswarm
from jaxswarm.study import Study, StudyConfig
study = Study(jaxswarm.mlp_space(max_layers=1, units=(4, 8)), jaxswarm.load_dataset("digits"),
              StudyConfig(**json.loads(sys.argv[2])), sys.argv[1], progress=False)
study.run(on_round=lambda summary: time.sleep(0.3))
"""


@pytest.fixture(scope="module")
def digits():
    return jaxswarm.load_dataset("digits")


def _spawn(script, folder, *args):
    # stderr to a file: a pipe nobody reads could fill up and block the holder.
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder.parent / f"{folder.name}.stderr", "w")
    proc = subprocess.Popen([sys.executable, "-c", script, str(folder), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=log)
    proc.log = Path(log.name)
    log.close()  # the child holds its own copy
    return proc


def _kill(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _wait_for(cond, proc, what, timeout=120):
    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the holder exited ({proc.returncode}) before {what}: {proc.log.read_text()}")
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _stop(proc):
    """SIGSTOPs `proc` and returns once every one of its threads has stopped (the signal is asynchronous)."""
    proc.send_signal(signal.SIGSTOP)
    deadline = time.time() + 30
    while not all(_state(t) in "Tt" for t in Path(f"/proc/{proc.pid}/task").iterdir()):
        assert time.time() < deadline, "the holder did not stop"
        time.sleep(0.01)


def _state(task: Path) -> str:
    try:
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:  # a thread that ended meanwhile
        return "T"


def _snapshot(folder: Path) -> dict:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- one writer per results folder ---------------------------------------------


def test_a_second_process_is_refused_and_a_killed_holder_blocks_nothing(tmp_path):
    folder = tmp_path / "f"
    holder = _spawn(HOLDER, folder)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.log.read_text()
        with pytest.raises(results.FolderLocked) as refused:
            results.lock_folder(folder)
        message = str(refused.value)
        assert "\n" not in message and str(folder) in message and "running" in message
        assert str(holder.pid) in message
        assert isinstance(refused.value, ValueError)  # the CLI prints a ValueError as one line
    finally:
        _kill(holder)
    assert holder.returncode == -signal.SIGKILL
    # The kernel dropped the dead holder's lock: a resume is not blocked.
    lock = results.lock_folder(folder)
    assert (folder / results.LOCK).read_text().strip() == str(os.getpid())
    lock.release()
    lock.release()  # again: a no-op


def test_deleting_the_lock_file_lets_no_second_writer_in(tmp_path):
    """The .lock file looks stale to a user; removing it must not open the folder to a second study."""
    folder = tmp_path / "f"
    holder = _spawn(HOLDER, folder)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.log.read_text()
        (folder / results.LOCK).unlink()
        with pytest.raises(results.FolderLocked, match="a study is running there"):
            results.lock_folder(folder)
    finally:
        _kill(holder)
    results.lock_folder(folder).release()


def test_the_lock_is_exclusive_within_a_process_until_released(tmp_path):
    with results.lock_folder(tmp_path):
        with pytest.raises(results.FolderLocked, match=str(os.getpid())):
            results.lock_folder(tmp_path)
    results.lock_folder(tmp_path).release()


def test_a_running_study_refuses_a_second_run_and_a_killed_one_resumes(digits, tmp_path):
    out = tmp_path / "study"
    holder = _spawn(STUDY_HOLDER, out, json.dumps(CONFIG))
    try:
        # Built while the holder starts up (it writes nothing), so its run() meets a running study.
        second = study_lib.Study(SPACE, digits, study_lib.StudyConfig(**CONFIG), out, progress=False)
        _wait_for(lambda: (out / results.STUDY).exists(), holder, "study.json")
        # Two rounds' rows: round 0's checkpoint is on disk (it is saved before round 1 starts).
        _wait_for(lambda: len(results.read_jsonl(out / results.ROUNDS)) >= 2, holder, "two rounds")
        _stop(holder)  # frozen, lock held: the folder holds still while we look
        before = _snapshot(out)
        rows = len(results.read_jsonl(out / results.EVALUATIONS))
        for attempt in (lambda: second.run(), lambda: second.run(resume=True),
                        lambda: study_lib.tune(SPACE, digits, out_dir=out, resume=True, progress=False, **CONFIG)):
            with pytest.raises(results.FolderLocked, match=str(holder.pid)):
                attempt()
        assert _snapshot(out) == before  # nothing written, study.json and checkpoints included
        assert len(results.read_jsonl(out / results.EVALUATIONS)) == rows
    finally:
        _kill(holder)
    assert not (out / results.BEST).exists()
    result = second.run(resume=True)
    assert result.rounds_run == CONFIG["rounds"]
    assert [r["round"] for r in results.read_jsonl(out / results.ROUNDS)] == list(range(CONFIG["rounds"]))
    assert len(results.read_jsonl(out / results.EVALUATIONS)) == CONFIG["rounds"] * CONFIG["swarm_size"]
    results.lock_folder(out).release()  # run released the lock at its end


def test_a_refused_start_releases_the_lock(digits, tmp_path):
    out = tmp_path / "s"
    with pytest.raises(study_lib.StudyError, match="no checkpoints"):
        study_lib.tune(SPACE, digits, out_dir=out, resume=True, progress=False, **CONFIG)
    results.lock_folder(out).release()


# -- file modes and CSV columns ------------------------------------------------


def test_study_files_are_0644_and_the_csv_has_position_columns(digits, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "s"
        study_lib.tune(SPACE, digits, out_dir=out, progress=False, **{**CONFIG, "rounds": 2})
    finally:
        os.umask(old)
    for name in (results.STUDY, results.BEST, results.CSV, results.EVALUATIONS, results.ROUNDS):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    with open(out / results.CSV, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    columns = reader.fieldnames
    assert "position" not in columns and "config" not in columns
    assert [c for c in columns if c.startswith("position.")] == [f"position.{d}" for d in SPACE.dim_names]
    evals = results.read_jsonl(out / results.EVALUATIONS)
    for row, e in zip(rows, evals, strict=True):
        for d, v in e["position"].items():
            assert float(row[f"position.{d}"]) == pytest.approx(v)


def test_write_text_respects_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        results.write_text(tmp_path / "a.txt", "x")
        results.append_jsonl(tmp_path / "b.jsonl", [{"a": 1}])
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.jsonl").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_csv_flattens_config_and_position_after_the_other_columns(tmp_path):
    results.append_jsonl(tmp_path / "e.jsonl", [
        {"round": 0, "config": {"units": 4}, "fitness": 0.5, "position": {"units": 0.1, "lr": 0.9}},
        {"round": 1, "config": {"units": 8}, "fitness": 0.7, "position": {"units": 0.6, "lr": 0.2}}])
    results.write_csv(tmp_path / "e.jsonl", tmp_path / "e.csv")
    with open(tmp_path / "e.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["round", "fitness", "config.units", "position.units", "position.lr"]
    assert rows[2] == ["1", "0.7", "8", "0.6", "0.2"]


# -- lines of a killed writer --------------------------------------------------


def _rounds(n):
    return [{"round": r, "best_fitness": 0.1 * r, "median_fitness": 0.05 * r} for r in range(n)]


def test_a_truncated_last_line_is_skipped(tmp_path):
    path = tmp_path / results.ROUNDS
    results.append_jsonl(path, _rounds(2))
    with open(path, "a") as f:
        f.write('{"round": 2, "best_fi')  # a writer killed mid-append
    assert results.read_jsonl(path) == _rounds(2)
    assert len(results.plot(tmp_path)) == 1  # progress.png; no evaluations, no positions.png
    results.truncate_rounds(path, 5)  # a resume rewrites the file without the partial line
    results.append_jsonl(path, _rounds(3)[2:])
    assert results.read_jsonl(path) == _rounds(3)


def test_a_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}')
    assert results.read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_a_corrupt_line_in_the_middle_is_one_clear_error(tmp_path):
    path = tmp_path / results.ROUNDS
    path.write_text(json.dumps(_rounds(1)[0]) + "\n{not json\n" + json.dumps(_rounds(2)[1]) + "\n")
    with pytest.raises(ValueError) as err:
        results.read_jsonl(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "line 2" in message
    assert not isinstance(err.value, json.JSONDecodeError)


def test_plot_without_rounds_is_empty(tmp_path):
    assert results.plot(tmp_path) == []
    results.append_jsonl(tmp_path / results.EVALUATIONS, [{"round": 0, "position": {"x": 0.5}}])
    assert results.plot(tmp_path) == []


def test_positions_png_draws_values_in_their_units_with_the_best_marked(tmp_path):
    """positions.png: a value per evaluation in real units (choices as labels); the plot runs on a real folder."""
    pytest.importorskip("matplotlib")
    space = jaxswarm.mlp_space(max_layers=2, units=(4, 8), activations=("relu", "tanh"))
    jaxswarm.tune(space, jaxswarm.load_dataset("digits"), swarm_size=2, rounds=2, epochs=1, retrain=False,
                  out_dir=tmp_path / "p", progress=False)
    written = results.plot(tmp_path / "p")
    assert tmp_path / "p" / "positions.png" in written and (tmp_path / "p" / "positions.png").stat().st_size > 0
    study = json.loads((tmp_path / "p" / results.STUDY).read_text())
    assert study["data_source"] == "sklearn"


def test_equal_wall_clock_credits_only_what_finished_by_T():
    """A recorded history with known finish times: a check BEFORE an evaluation let it start at 2.9 s
    under a 3 s limit, but it finished at 3.4 s, after T: it is not credited."""
    from jaxswarm.results import best_by, first_reaching

    history = [(0.5, 0.60), (1.2, -np.inf), (2.0, 0.80), (2.9, 0.79), (3.4, 0.95)]  # (finish s, val acc)
    assert best_by(history, 3.0) == 0.80  # the 0.95 evaluation was still running at T
    assert best_by(history, 3.4) == 0.95  # finishing exactly at T counts
    assert best_by(history, 0.4) is None and best_by([(1.0, -np.inf)], 2.0) is None
    assert first_reaching(history, 0.79) == 2.0 and first_reaching(history, 0.9) == 3.4
    assert first_reaching(history, 0.99) is None
