"""A study of your own Task: the record, the compile count, resume, the saved winner, the command line."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxswarm as js

from jaxswarm import cli, results, schedules
from jaxswarm.saved import ModelError, TaskModel, load_model
from jaxswarm.space import Choice, Float, SearchSpace
from jaxswarm.study import Study, StudyConfig, StudyError, Warm, initial_state, round_keys, tune
from jaxswarm.data import kfold_indices
from jaxswarm.task import TrainingLoop, joined, load_task, supervised

# A task module as a user writes one: a Flax regression MLP of static width, data with a test split.
TASK_MODULE = textwrap.dedent('''
    import flax.linen as nn
    import numpy as np
    from jaxswarm import task as tk
    from jaxswarm.space import Choice, Float, SearchSpace

    class Net(nn.Module):
        width: int

        @nn.compact
        def __call__(self, x, hp, train):
            return nn.Dense(1)(nn.relu(nn.Dense(self.width)(x)))[:, 0]

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32)).astype(np.float32)
    WIDTHS = [4, 8, 16]
    task = tk.Task(lambda s: Net(s["width"]), tk.mse_loss, tk.regression_metrics, tk.Objective("mse", "min"),
                   tk.TaskData({"x": x[:120], "y": y[:120]}, {"x": x[120:160], "y": y[120:160]},
                               {"x": x[160:], "y": y[160:]}),
                   batch_size=32,
                   space=SearchSpace({"width": Choice(WIDTHS), "learning_rate": Float(1e-3, 1e-1, log=True)}))
    per_example_loss = task._replace(loss=lambda outputs, batch: (outputs - batch["y"]) ** 2)  # not a mean
''')


@pytest.fixture
def mytask(tmp_path, monkeypatch):
    """The module `mytask` in a folder of its own, importable here and by a process started there."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "mytask.py").write_text(TASK_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "mytask", raising=False)
    return folder


def _study(out, **kw):
    task = load_task("mytask:task")
    cfg = {"swarm_size": 4, "rounds": 3, "epochs": 2, **kw}
    return Study(task.space, task, StudyConfig(**cfg), out, progress=False)


def test_task_study_records_its_metrics_and_minimizes_its_objective(mytask, tmp_path):
    task = load_task("mytask:task")
    result = tune(None, task, swarm_size=4, rounds=3, epochs=2, out_dir=tmp_path / "r", progress=False)
    rows = results.read_jsonl(tmp_path / "r" / results.EVALUATIONS)
    assert len(rows) == 12 and all(set(r["metrics"]) == {"mse", "mae"} for r in rows)
    assert all(r["fitness"] == pytest.approx(-r["metrics"]["mse"]) for r in rows)  # minimized: fitness is -mse
    best = json.loads((tmp_path / "r" / results.BEST).read_text())
    assert best["objective"] == {"metric": "mse", "direction": "min"}
    assert best["best_value"] == pytest.approx(min(r["metrics"]["mse"] for r in rows))
    assert result.best_fitness == pytest.approx(-best["best_value"])
    assert set(result.test_metrics) == {"test_mse", "test_mae"} and best["test_metrics"] == result.test_metrics
    assert isinstance(result.model, TaskModel)


def test_each_static_signature_compiles_once_through_the_study(mytask, tmp_path):
    """One member per program call (chunk_size 1): after round r the study has compiled exactly one program per
    width its swarm has visited; floats move every round and compile nothing."""
    _study(tmp_path / "r", rounds=4, chunk_size=1).run()
    rows = results.read_jsonl(tmp_path / "r" / results.EVALUATIONS)
    rounds = results.read_jsonl(tmp_path / "r" / results.ROUNDS)
    for summary in rounds:
        seen = {r["config"]["width"] for r in rows if r["round"] <= summary["round"]}
        assert summary["programs_compiled"] == len(seen), summary
    lrs = {r["round"]: r["config"]["learning_rate"] for r in rows if r["particle"] == 0}
    assert len(set(lrs.values())) > 1  # the floats did move


@pytest.mark.parametrize("mode", ["fresh", "warm"])  # warm: the members' states come back from the checkpoint
def test_a_killed_task_study_resumes_to_the_uninterrupted_result(mytask, tmp_path, mode):
    _study(tmp_path / "whole", rounds=4, mode=mode).run()

    def kill_after_round_1(summary):
        if summary["round"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _study(tmp_path / "killed", rounds=4, mode=mode).run(on_round=kill_after_round_1)
    resumed = []
    _study(tmp_path / "killed", rounds=4, mode=mode).run(resume=True, on_round=lambda s: resumed.append(s["round"]))
    assert resumed == [2, 3]  # from its checkpoint, not from the start

    def record(name):
        rows = results.read_jsonl(tmp_path / name / results.EVALUATIONS)
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert record("killed") == record("whole")
    best = [json.loads((tmp_path / n / results.BEST).read_text()) for n in ("whole", "killed")]
    assert best[0]["best_config"] == best[1]["best_config"] and best[0]["test_metrics"] == best[1]["test_metrics"]


def test_a_task_study_resumes_only_on_its_own_data(mytask, tmp_path):
    def stop(summary):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _study(tmp_path / "r").run(on_round=stop)
    task = load_task("mytask:task")
    other = task._replace(data=task.data._replace(val={k: v[::-1] for k, v in task.data.val.items()}))
    with pytest.raises(StudyError, match="data_digest"):
        Study(task.space, other, StudyConfig(swarm_size=4, rounds=3, epochs=2), tmp_path / "r",
              progress=False).run(resume=True)


def test_warm_task_members_go_on_from_their_state_only_while_their_static_values_stay(mytask):
    """Through Study.round: a member of unchanged width trains on from its state (its learning rate may move),
    one whose width changed starts from a fresh init."""
    still = dict(inertia=0.0, c1=0.0, c2=0.0)  # the PSO leaves every particle where it is
    study = _study(None, mode="warm", pso=still)
    S, dims = study.config.swarm_size, study.space.dim_names
    state0 = initial_state(study.key, study.strategy, "lhs", S, study.space.num_dims)
    state1, warm1, _ = study.round(0, state0, Warm(None, None))
    pos = np.asarray(state1.position).copy()
    np.testing.assert_array_equal(pos, np.asarray(warm1.signature))
    w = dims.index("width")
    pos[0, w] = 0.1 if pos[0, w] > 0.5 else 0.9  # member 0 to another width; member 1 only to another rate
    pos[1, dims.index("learning_rate")] = 0.9 if pos[1, dims.index("learning_rate")] < 0.5 else 0.1
    widths = [study.space.to_python(p)["width"] for p in (np.asarray(warm1.signature)[0], pos[0])]
    assert widths[0] != widths[1]
    _, warm2, m = study.round(1, state1._replace(position=jnp.asarray(pos)), warm1)
    keys, _ = round_keys(study.key, 1, S)
    for i in range(S):
        fresh = study.engine.train(keys[np.array([i])], pos[[i]]).metrics["mse"][0]
        if i == 0:  # its old state is of another width: it cannot go on
            np.testing.assert_allclose(m.values["mse"][0], fresh, rtol=1e-5)
            continue
        kept = study.engine.train(keys[np.array([i])], pos[[i]], states=[warm1.variables[i]]).metrics["mse"][0]
        np.testing.assert_allclose(m.values["mse"][i], kept, rtol=1e-5, err_msg=f"member {i}")
        assert not np.isclose(m.values["mse"][i], fresh, rtol=1e-3), f"member {i}"
    assert [int(warm2.variables[i].epoch) for i in (0, 1)] == [2, 4]  # member 0 from scratch, 1 on from round 0


@pytest.mark.parametrize("setting", [{"layout": "masked"}, {"fitness": "loss"}])
def test_a_task_study_refuses_what_it_does_not_serve_yet(mytask, setting):
    with pytest.raises(ValueError, match="task"):
        _study(None, **setting)


def test_k_folds_score_each_member_by_its_networks_trained_alone_on_each_fold(mytask, tmp_path):
    """folds=3 through the study: a member's metrics are the means over the folds of its network trained alone
    on that fold's rows of train + val, from the fold's split of the member's keys (rtol 1e-5: vmapped and
    single programs round differently; a wrong fold's rows, key or a dropped mean move far more)."""
    task = load_task("mytask:task")
    study = _study(tmp_path / "r", rounds=1, folds=3)
    study.run()
    rows = results.read_jsonl(tmp_path / "r" / results.EVALUATIONS)
    keys, positions = _start(study)
    pool = joined(task.data.train, task.data.val)
    train_idx, val_idx = kfold_indices(160, 3, seed=0)
    for row in rows[:2]:
        i = row["particle"]
        static, hp = study.engine.hyperparameters(positions[i])
        k_init, k_train = jax.random.split(keys[i])
        alone = []
        for k, (tr, va) in enumerate(zip(train_idx, val_idx)):
            rows = js.TaskData(jax.tree.map(lambda a: a[tr], pool), jax.tree.map(lambda a: a[va], pool))
            trainable = supervised(task._replace(data=rows))(static)
            state = trainable.init(jax.random.split(k_init, 3)[k], hp)
            state = trainable.train(state, hp, jax.random.split(k_train, 3)[k], 2)
            alone.append(trainable.evaluate(state, hp))
        for name, value in row["metrics"].items():
            np.testing.assert_allclose(value, np.mean([m[name] for m in alone]), rtol=1e-5, atol=1e-6)


# Run in a process of 2 fake CPU devices: a task study whose calls split their members over both.
SHARDED = textwrap.dedent('''
    import json, jax, numpy as np
    from jaxswarm import results
    from jaxswarm.space import Choice, Float, SearchSpace
    from jaxswarm.study import Study, StudyConfig, initial_state, round_keys
    from jaxswarm.task import make_engine, supervised
    import mytask
    space = SearchSpace({"width": Choice([8]), "learning_rate": Float(1e-3, 1e-1, log=True)})
    study = Study(space, mytask.task, StudyConfig(swarm_size=4, rounds=1, epochs=2, chunk_size=1), None,
                  progress=False)
    study.run()
    state = initial_state(study.key, study.strategy, "lhs", 4, space.num_dims)
    keys, positions = round_keys(study.key, 0, 4)[0], np.asarray(study.strategy.ask(state))
    alone = make_engine(supervised(mytask.task), space, 2, mytask.task.objective,
                        group_size=1)
    mse = [float(alone.train(keys[np.array([i])], positions[[i]]).metrics["mse"][0]) for i in range(4)]
    print("RESULT " + json.dumps({"devices": len(jax.devices()), "sharded_calls": study.engine.stats["sharded_calls"],
                                  "study": [r["metrics"]["mse"] for r in study.evaluations], "alone": mse}))
''')


@pytest.mark.slow  # a subprocess of 2 fake devices, ~40 s
def test_a_task_study_splits_each_call_s_members_over_the_devices(mytask):
    """Two fake devices, chunk_size 1 (a member per device per call): the study's two calls each split their two
    members over both devices, and every member equals itself trained alone on one device (rtol 1e-5)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(mytask), os.getcwd()]),
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"}
    proc = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    assert out["devices"] == 2 and out["sharded_calls"] == 2
    np.testing.assert_allclose(out["study"], out["alone"], rtol=1e-5)


# One of 2 processes of 2 fake CPU devices each (argv: coordinator port, process id, out dir): a warm task study
# over all 4 devices, its calls split across both processes.
HOSTS = textwrap.dedent('''
    import json, sys, jax, numpy as np
    from jaxswarm import execute
    execute.initialize_distributed(f"localhost:{sys.argv[1]}", 2, int(sys.argv[2]), initialization_timeout=60)
    from jaxswarm.space import Choice, Float, SearchSpace
    from jaxswarm.study import Study, StudyConfig, round_keys
    from jaxswarm.task import make_engine, supervised
    import mytask
    space = SearchSpace({"width": Choice([8]), "learning_rate": Float(1e-3, 1e-1, log=True)})
    study = Study(space, mytask.task, StudyConfig(swarm_size=4, rounds=2, epochs=2, chunk_size=1, mode="warm"),
                  sys.argv[3], progress=False)
    study.run()
    rows = study.evaluations
    alone = make_engine(supervised(mytask.task), space, 2, mytask.task.objective, group_size=1)
    mse, states = [], []
    for r in range(2):  # each member trained alone on this process's first device, going on in round 1
        keys = round_keys(study.key, r, 4)[0]
        pos = np.array([[row["position"][n] for n in space.dim_names] for row in rows if row["round"] == r], np.float32)
        out = [alone.train(keys[np.array([i])], pos[[i]], states=None if r == 0 else [states[i]]) for i in range(4)]
        mse += [float(o.metrics["mse"][0]) for o in out]
        states = [o.states[0] for o in out]
    print("RESULT " + json.dumps({"devices": len(jax.devices()), "processes": jax.process_count(),
                                  "sharded_calls": study.engine.stats["sharded_calls"],
                                  "study": [r["metrics"]["mse"] for r in rows], "alone": mse}), flush=True)
    jax.distributed.shutdown()
''')


@pytest.mark.slow  # two processes of 2 fake devices each, ~60 s
def test_a_warm_task_study_over_two_processes_trains_what_each_member_trains_alone(mytask, tmp_path):
    """2 processes x 2 fake devices, chunk_size 1: each round's one call of 4 members splits over all 4 devices
    (both processes); both processes hold every member's metrics, equal to the member trained alone on one
    device (rtol 1e-5), round 1 going on from round 0's state (warm). The primary alone writes the record."""
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(mytask), os.getcwd()]),
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen([sys.executable, "-c", HOSTS, str(port), str(i), str(tmp_path / "r")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=600)
            assert p.returncode == 0, stderr[-3000:]
            outs.append(json.loads([line for line in stdout.splitlines() if line.startswith("RESULT ")][-1][7:]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for out in outs:
        assert out["devices"] == 4 and out["processes"] == 2 and out["sharded_calls"] == 2
        np.testing.assert_allclose(out["study"], out["alone"], rtol=1e-5)
    assert outs[0]["study"] == outs[1]["study"]
    assert len(results.read_jsonl(tmp_path / "r" / results.EVALUATIONS)) == 8  # written once


def test_a_call_that_would_not_fit_the_memory_cap_trains_in_halves_that_do(mytask, tmp_path):
    """chunk_size 4 and one static value: uncapped, the round is one call of 4 members (and one of 1, from a swarm
    of 5). With a cap between the two programs' memory (XLA's memory analysis), the study trains in calls that
    fit it and every member's metrics are the uncapped ones."""
    task = load_task("mytask:task")
    space = SearchSpace({"width": Choice([16]), "learning_rate": Float(1e-3, 1e-1, log=True)})
    cfg = {"swarm_size": 5, "rounds": 1, "epochs": 1, "chunk_size": 4}
    free = Study(space, task, StudyConfig(**cfg), None, progress=False)
    free.run()
    sig = (("width", 16),)
    one, four = free.engine.stats["call_bytes"][sig, 1], free.engine.stats["call_bytes"][sig, 4]
    assert one < four and free.engine.stats["call_limits"] == {}
    capped = Study(space, task, StudyConfig(**cfg, memory_cap_gb=(one + four) / 2 / 2**30), None, progress=False)
    capped.run()
    limit = capped.engine.stats["call_limits"][sig]
    assert limit < 4 and capped.engine.stats["call_bytes"][sig, limit] <= (one + four) / 2
    for a, b in zip(free.evaluations, capped.evaluations):
        np.testing.assert_allclose(a["metrics"]["mse"], b["metrics"]["mse"], rtol=1e-5)
    with pytest.raises(ValueError, match="GiB of a device's memory"):
        Study(space, task, StudyConfig(**cfg, memory_cap_gb=one / 2 / 2**30), None, progress=False).run()


def test_a_training_loop_has_no_data_to_fold():
    loop = TrainingLoop(lambda static: None, js.Objective("reward"), SearchSpace({"lr": Float(1e-3, 1e-1)}))
    with pytest.raises(ValueError, match="TrainingLoop has no data to fold"):
        Study(loop.space, loop, StudyConfig(swarm_size=2, rounds=1, folds=3), None, progress=False)



def test_a_saved_task_winner_predicts_in_a_fresh_process_what_it_predicted_in_the_study(mytask, tmp_path):
    task = load_task("mytask:task")
    result = tune(None, task, swarm_size=4, rounds=2, epochs=2, out_dir=tmp_path / "r", progress=False)
    x = task.data.test["x"]
    np.save(tmp_path / "x.npy", x)
    script = ("import numpy as np, jaxswarm\nfrom jaxswarm.task import load_task\n"
              f"m = jaxswarm.load_model({str(tmp_path / 'r')!r}, task=load_task('mytask:task'))\n"
              f"np.save({str(tmp_path / 'y.npy')!r}, m.predict({{'x': np.load({str(tmp_path / 'x.npy')!r})}}))\n")
    subprocess.run([sys.executable, "-c", script], cwd=mytask, check=True)
    expected = result.model.predict({"x": x})
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)
    assert float(np.mean((expected - task.data.test["y"]) ** 2)) == pytest.approx(result.test_metrics["test_mse"],
                                                                                 rel=1e-5)


def test_a_task_model_loads_only_with_its_task(mytask, tmp_path):
    task = load_task("mytask:task")
    tune(None, task, swarm_size=4, rounds=1, epochs=1, out_dir=tmp_path / "r", progress=False)
    with pytest.raises(ModelError, match="load_model\\(dir, task="):
        load_model(tmp_path / "r")  # from Python no import path is recorded
    narrow = task._replace(model=lambda s: task.model({"width": 2}))  # another network: its weights do not fit
    with pytest.raises(ModelError, match="does not fit"):
        load_model(tmp_path / "r", task=narrow)
    spec = tmp_path / "r" / "model" / "model.json"
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "format": 99}))
    with pytest.raises(ModelError, match="format 99"):
        load_model(tmp_path / "r", task=task)


def test_the_command_line_runs_shows_and_resumes_a_task(mytask, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(mytask)  # where the user's module is, as for `python -m`

    def jaxswarm(*args):
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    out = tmp_path / "r"
    code, _, err = jaxswarm("run", "--task", "mytask:task", "--swarm-size", "4", "--rounds", "2", "--epochs", "2",
                            "--out", str(out), "--quiet")
    assert code == 0, err
    assert json.loads((out / results.STUDY).read_text())["settings"]["task"] == "mytask:task"
    monkeypatch.delitem(sys.modules, "mytask")  # show imports the recorded task path again
    code, shown, _ = jaxswarm("show", str(out))
    assert code == 0 and "best mse (min)" in shown and "static width=" in shown
    code, _, err = jaxswarm("run", "--resume", str(out), "--quiet")  # finished: nothing to train
    assert code == 0, err
    x = load_task("mytask:task").data.test["x"]
    np.save(tmp_path / "x.npy", x)
    code, _, err = jaxswarm("predict", str(out), "--input", str(tmp_path / "x.npy"), "--output",
                            str(tmp_path / "y.npy"))
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), load_model(out).predict({"x": x}))
    code, _, err = jaxswarm("predict", str(out), "--input", str(tmp_path / "x.npy"), "--proba")
    assert code == 2 and "--proba" in err
    code, _, err = jaxswarm("run", "--task", "mytask:task", "--units", "4", "8")
    assert code == 2 and err.count("\n") == 1 and "units" in err
    code, _, err = jaxswarm("run", "--task", "mytask:nothing")
    assert code == 2 and "no attribute 'nothing'" in err
    code, _, err = jaxswarm("run", "--task", "mytask:per_example_loss", "--swarm-size", "2", "--rounds", "1",
                            "--epochs", "1", "--out", str(tmp_path / "bad"), "--quiet")
    assert code == 2 and err.count("\n") == 1, err
    assert "static hyperparameters {'width':" in err and "must be a scalar" in err


def _start(study):
    """Round 0's member keys and the positions the strategy asks first."""
    state = initial_state(study.key, study.strategy, study.config.init, study.config.swarm_size,
                          study.space.num_dims)
    return round_keys(study.key, 0, study.config.swarm_size)[0], np.asarray(study.strategy.ask(state))


def _close(row_metrics, result, j=0):
    for name, value in row_metrics.items():
        np.testing.assert_allclose(value, result.metrics[name][j], rtol=1e-5, atol=1e-6)


def test_successive_halving_on_a_task_continues_each_member_as_one_straight_run(mytask, tmp_path):
    """A member that reached the top rung trained 1, then 2, then 4 epochs from its own state: its metrics equal
    4 epochs in one go (vmapped and single programs may differ by float32 ulps, a restart by far more)."""
    study = _study(tmp_path / "r", rounds=1, epochs=4, schedule="sha", eta=2, min_epochs=1)
    study.run()
    rows = results.read_jsonl(tmp_path / "r" / results.EVALUATIONS)
    assert sorted(r["epochs"] for r in rows) == [1, 1, 2, 4]
    keys, positions = _start(study)
    (top,) = [r for r in rows if r["epochs"] == 4]
    i = top["particle"]
    _close(top["metrics"], study.engine.train(keys[np.array([i])], positions[[i]], n_epochs=4))


def test_pbt_on_a_task_copies_the_source_state_exactly_and_trains_on_with_its_own_keys(mytask, tmp_path):
    study = _study(tmp_path / "r", rounds=1, epochs=4, schedule="pbt", pbt_interval=2, pbt_fraction=0.25)
    study.run()
    rows = results.read_jsonl(tmp_path / "r" / results.EVALUATIONS)
    (copier,) = [r for r in rows if r["copied_from"]]
    assert copier["copied_from"][0][0] == 2
    i, j = copier["particle"], copier["copied_from"][0][1]
    keys, positions = _start(study)
    source = study.engine.train(keys[np.array([j])], positions[[j]], n_epochs=2)  # the source's state at the exploit
    moved = np.array([[copier["position"][n] for n in study.space.dim_names]], np.float32)
    assert not np.allclose(moved, positions[[i]])  # it went on from a moved position
    _close(copier["metrics"], study.engine.train(keys[np.array([i])], moved, states=source.states, n_epochs=2))


def test_a_lower_rung_ranks_below_every_top_rung_member_whatever_the_objective_s_scale():
    """A task's fitness is unbounded (minus an MSE of 100): what the strategy is told still puts every member
    that reached a higher rung above every member that stopped lower."""
    told = schedules.scores(np.array([-100.0, -1.0, -50.0]), np.array([2, 0, 1]), 2, "unbounded")
    assert np.argsort(-told).tolist() == [0, 2, 1]


def _toy_loop():
    """The lower tier at its smallest: a noisy gradient descent on |w|^2, its start scaled by a static value."""
    def build(static):
        def init(key, hp):
            return {"w": jax.random.normal(key, (3,)) * static["scale"], "t": jnp.int32(0)}

        def train(state, hp, key, epochs):
            def epoch(st, _):
                noise = jax.random.normal(jax.random.fold_in(key, st["t"]), (3,)) * 0.05
                return {"w": st["w"] - hp["learning_rate"] * (2 * st["w"] + noise), "t": st["t"] + 1}, None
            return jax.lax.scan(epoch, state, None, length=epochs)[0]

        def evaluate(state, hp):
            return {"loss": jnp.sum(state["w"] ** 2)}

        return js.Trainable(init, train, evaluate)

    space = SearchSpace({"scale": Choice([1, 2]), "learning_rate": Float(1e-3, 0.3, log=True)})
    return js.TrainingLoop(build, js.Objective("loss", "min"), space, fingerprint="toy")


def _keyed_loop():
    """A loop whose state carries its own PRNG key (PureJaxRL-style), split every epoch."""
    def build(static):
        def init(key, hp):
            return {"w": jnp.full((3,), float(static["scale"])), "rng": key}

        def train(state, hp, key, epochs):
            def epoch(st, _):
                rng, k = jax.random.split(st["rng"])
                noise = jax.random.normal(k, (3,)) * 0.05
                return {"w": st["w"] - hp["learning_rate"] * (2 * st["w"] + noise), "rng": rng}, None
            return jax.lax.scan(epoch, state, None, length=epochs)[0]

        return js.Trainable(init, train, lambda state, hp: {"loss": jnp.sum(state["w"] ** 2)})

    space = SearchSpace({"scale": Choice([1, 2]), "learning_rate": Float(1e-3, 0.3, log=True)})
    return js.TrainingLoop(build, js.Objective("loss", "min"), space, fingerprint="keyed")


def test_a_warm_loop_whose_state_holds_a_prng_key_resumes_to_the_uninterrupted_result(tmp_path):
    """Warm mode checkpoints each member's state; a typed key in it is stored as its raw data and comes back a
    key of its own implementation, so the resumed study draws what the uninterrupted one drew. The saved
    winner's state loads with its key too."""
    loop = _keyed_loop()
    cfg = StudyConfig(swarm_size=4, rounds=3, epochs=2, mode="warm")

    def rows(name):
        return [{k: v for k, v in r.items() if k != "seconds"}
                for r in results.read_jsonl(tmp_path / name / results.EVALUATIONS)]

    whole = Study(loop.space, loop, cfg, tmp_path / "whole", progress=False).run()
    saved = load_model(tmp_path / "whole", task=loop).state["rng"]  # the winner's saved state: a key again
    np.testing.assert_array_equal(jax.random.key_data(saved), jax.random.key_data(whole.model.state["rng"]))

    def kill(summary):
        if summary["round"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Study(loop.space, loop, cfg, tmp_path / "killed", progress=False).run(on_round=kill)
    Study(loop.space, loop, cfg, tmp_path / "killed", progress=False).run(resume=True)
    assert rows("killed") == rows("whole")


def test_a_training_loop_runs_pbt_copies_its_state_exactly_and_saves_its_winner(tmp_path):
    loop = _toy_loop()
    study = Study(loop.space, loop, StudyConfig(swarm_size=4, rounds=1, epochs=4, schedule="pbt", pbt_interval=2,
                                                pbt_fraction=0.25), tmp_path / "r", progress=False)
    result = study.run()
    rows = results.read_jsonl(tmp_path / "r" / results.EVALUATIONS)
    (copier,) = [r for r in rows if r["copied_from"]]
    i, j = copier["particle"], copier["copied_from"][0][1]
    keys, positions = _start(study)
    source = study.engine.train(keys[np.array([j])], positions[[j]], n_epochs=2)
    moved = np.array([[copier["position"][n] for n in study.space.dim_names]], np.float32)
    _close(copier["metrics"], study.engine.train(keys[np.array([i])], moved, states=source.states, n_epochs=2))
    assert set(result.test_metrics) == {"retrain_loss"}
    loaded = load_model(tmp_path / "r", task=loop)
    jax.tree.map(np.testing.assert_array_equal, loaded.state, result.model.state)
    with pytest.raises(ModelError, match="no predict"):
        loaded.predict({"x": np.zeros(1)})


def test_leftovers_of_a_killed_model_save_are_explained_by_show_and_removed_by_resume(mytask, tmp_path, capsys):
    task = load_task("mytask:task")
    out = tmp_path / "r"
    tune(None, task, swarm_size=4, rounds=1, epochs=1, out_dir=out, progress=False)
    (out / "model").rename(out / ".model.old.1.aa")  # killed between the save's two renames
    (out / ".model.2.bb").mkdir()
    (out / ".model.2.bb" / "model.json").write_text("{")
    assert cli.main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert ".model.2.bb, .model.old.1.aa left by a model save that was cut short (so there is no model/)" in shown
    _study(out, rounds=1, epochs=1).run(resume=True)
    assert not list(out.glob(".model.*")) and (out / "model" / "model.json").is_file()

