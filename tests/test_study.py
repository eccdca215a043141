import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxswarm import data as data_lib
from jaxswarm import load_model
from jaxswarm import results, train
from jaxswarm import study as tuner
from jaxswarm.models import cnn_space, mlp, mlp_space

SPACE = mlp_space(max_layers=2, units=(4, 32), activations=("relu", "tanh"))
TINY = dict(swarm_size=4, rounds=3, epochs=2, batch_size=32, progress=False)


@pytest.fixture(scope="module")
def digits():
    return data_lib.load_dataset("digits", seed=0)


def test_study_in_memory_finds_a_config_and_retrains(digits):
    result = tuner.tune(SPACE, digits, retrain_epochs=3, **TINY)
    assert set(result.best_config) >= {"n_layers", "units_1", "activation", "learning_rate"}
    assert 0.0 <= result.test_accuracy <= 1.0 and result.rounds_run == 3
    assert result.out_dir is None


@pytest.mark.slow  # ~15 s; fixed-seed studies are pinned value for value by tests/test_fingerprint.py
def test_same_seed_same_study(digits, tmp_path):
    a = tuner.tune(SPACE, digits, out_dir=tmp_path / "a", seed=3, **TINY)
    b = tuner.tune(SPACE, digits, out_dir=tmp_path / "b", seed=3, **TINY)
    assert a.best_config == b.best_config and a.best_fitness == b.best_fitness
    ea = results.read_jsonl(tmp_path / "a" / results.EVALUATIONS)
    eb = results.read_jsonl(tmp_path / "b" / results.EVALUATIONS)
    assert [r["fitness"] for r in ea] == [r["fitness"] for r in eb]


def test_results_directory_is_complete(digits, tmp_path):
    out = tmp_path / "study"
    result = tuner.tune(SPACE, digits, out_dir=out, **TINY)
    evals = results.read_jsonl(out / results.EVALUATIONS)
    assert len(evals) == 4 * 3 and {e["round"] for e in evals} == {0, 1, 2}
    assert len(results.read_jsonl(out / results.ROUNDS)) == 3
    best = json.loads((out / results.BEST).read_text())
    assert best["best_config"] == result.best_config and best["test_accuracy"] == result.test_accuracy
    # the best fitness is the max over evaluations (PSO's global best is a real memory)
    assert best["best_fitness"] == pytest.approx(max(e["fitness"] for e in evals))
    assert (out / results.CSV).read_text().count("\n") == 4 * 3 + 1
    assert (out / results.STUDY).exists() and (out / "checkpoints").is_dir()


@pytest.mark.slow  # ~22 s; the same property, killed from on_round: test_a_killed_study_resumes_where_it_stopped
def test_resume_in_process_equals_uninterrupted(digits, tmp_path):
    full = tuner.tune(SPACE, digits, out_dir=tmp_path / "full", **{**TINY, "rounds": 4})
    tuner.tune(SPACE, digits, out_dir=tmp_path / "part", **{**TINY, "rounds": 2, "retrain": False})
    resumed = tuner.tune(SPACE, digits, out_dir=tmp_path / "part", resume=True, **{**TINY, "rounds": 4})
    assert resumed.best_config == full.best_config and resumed.best_fitness == full.best_fitness
    assert resumed.test_accuracy == full.test_accuracy
    evals = results.read_jsonl(tmp_path / "part" / results.EVALUATIONS)
    assert [e["fitness"] for e in evals] == [e["fitness"] for e in
                                             results.read_jsonl(tmp_path / "full" / results.EVALUATIONS)]


def test_resuming_a_finished_study_trains_and_compiles_nothing(digits, tmp_path, compiles):
    first = tuner.tune(SPACE, digits, out_dir=tmp_path / "s", **{**TINY, "retrain": False})
    settings = {k: v for k, v in TINY.items() if k != "progress"}
    study = tuner.Study(SPACE, digits, tuner.StudyConfig(**settings, retrain=False), out_dir=tmp_path / "s",
                        progress=False)
    trained = []
    with compiles() as counted:
        again = study.run(resume=True, on_round=trained.append)
    assert again.best_config == first.best_config and again.best_fitness == first.best_fitness
    assert again.rounds_run == TINY["rounds"] and trained == []
    assert counted.count == 0  # no swarm program, no round: nothing was compiled
    assert len(results.read_jsonl(tmp_path / "s" / results.ROUNDS)) == TINY["rounds"]


def test_early_stopping(digits):
    """patience 1: the study stops after the first round that does not improve the best, not before."""
    rounds = []
    config = tuner.StudyConfig(**{**_settings(), "rounds": 20, "patience": 1, "retrain": False})
    result = tuner.Study(SPACE, digits, config, progress=False).run(on_round=rounds.append)
    best = [r["best_fitness"] for r in rounds]
    assert result.rounds_run == len(rounds) < 20
    assert all(b > a for a, b in zip(best[:-2], best[1:-1])), best  # every earlier round improved
    assert best[-1] == best[-2]  # the last one did not


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
    assert mlp.limits(mlp_space(max_layers=3, units=(8, 100))) == (3, 100)


@pytest.mark.slow  # covered by default: the packed study's results: test_fingerprint[packed]; its training: test_layouts
def test_packed_layout_study(digits):
    # (a packed study with a retrain: the fingerprint's "packed" case)
    folds = tuner.tune(SPACE, digits, layout="packed", folds=2, **{**TINY, "rounds": 1})
    assert np.isfinite(folds.best_fitness) and 0 < folds.test_accuracy <= 1
    # chunks of members one after another (each planned apart) train the same members
    one = tuner.Study(SPACE, digits, tuner.StudyConfig(**_settings(rounds=1, retrain=False, layout="packed")),
                      progress=False)
    chunked = tuner.Study(SPACE, digits, tuner.StudyConfig(**_settings(rounds=1, retrain=False, layout="packed",
                                                                       chunk_size=3)), progress=False)
    assert "2 chunk(s) of up to 3" in chunked.program.describe(4)
    one.run(), chunked.run()
    np.testing.assert_allclose([e["val_loss"] for e in chunked.evaluations], [e["val_loss"] for e in one.evaluations],
                               rtol=1e-4)
    with pytest.raises(ValueError, match="packed"):
        tuner.tune(cnn_space(max_blocks=1, filters=(2, 4)), digits, layout="packed", **TINY)


@pytest.mark.slow  # ~17 s; tests/test_cli.py::test_cnn_space_from_the_command_line runs a CNN study by default
def test_cnn_space_study(digits):
    space = cnn_space(max_blocks=2, filters=(2, 4), dense_units=(4, 8), activations=("relu",))
    result = tuner.tune(space, digits, layout="masked", **{**TINY, "rounds": 2, "epochs": 1})
    assert set(result.best_config) >= {"n_blocks", "filters_1", "kernel_1", "dense_units"}
    assert 0 < result.test_accuracy <= 1
    with pytest.raises(ValueError, match="serial"):
        tuner.tune(space, digits, layout="serial", chunk_size=4, **TINY)
    with pytest.raises(ValueError, match="warm"):
        tuner.tune(space, digits, mode="warm", **TINY)


@pytest.mark.slow  # the serial CNN program compiles for ~40 s; serial == masked members: test_train.py, fingerprint
def test_the_serial_cnn_study_searches_the_same_swarm(digits):
    space = cnn_space(max_blocks=2, filters=(2, 4), dense_units=(4, 8), activations=("relu",))
    masked = tuner.tune(space, digits, layout="masked", **{**TINY, "rounds": 2, "epochs": 1})
    serial = tuner.tune(space, digits, layout="serial", **{**TINY, "rounds": 2, "epochs": 1})
    assert serial.best_config == masked.best_config
    np.testing.assert_allclose(serial.best_fitness, masked.best_fitness, atol=1e-6)


@pytest.mark.slow  # covered by default: the retrain itself: test_study_in_memory_finds_a_config_and_retrains
def test_retrain_reports_every_epoch(digits, capsys):
    config = tuner.StudyConfig(swarm_size=2, rounds=1, epochs=1, batch_size=32, retrain_epochs=3)
    result = tuner.Study(SPACE, digits, config, progress=True).run()
    captured = capsys.readouterr()
    lines = [ln for ln in (captured.out + captured.err).splitlines() if ln.startswith("retrain epoch")]
    assert [ln.split(":")[0] for ln in lines] == [f"retrain epoch {e}/3" for e in (1, 2, 3)]
    assert lines[-1].endswith(f"test accuracy {result.test_accuracy:.4f}")  # the last epoch is the reported one


# -- what a study promises, through the study itself ------------------------------------------


def _settings(**kw):
    base = {k: v for k, v in TINY.items() if k != "progress"}
    return {**base, "epochs": 1, **kw}


@pytest.mark.parametrize("kw", [dict(), dict(mode="warm"), dict(folds=2), dict(layout="serial", chunk_size=1)])
def test_rounds_after_the_first_compile_nothing(digits, kw, compiles):
    """One program per study: rounds 1.. of a real study (its runner, PSO, reports) compile nothing."""
    config = tuner.StudyConfig(**_settings(rounds=4, retrain=False, **kw))
    study = tuner.Study(SPACE, digits, config, progress=False)
    counts = []
    with compiles() as counted:
        study.run(on_round=lambda summary: counts.append(counted.count))
    assert len(counts) == 4
    assert counts[1:] == [counts[0]] * 3, f"compiles seen after each round: {counts}"


class Killed(Exception):
    """Raised from on_round: the study dies right after a round's results and checkpoint are written."""


def _kill_after(k):
    def on_round(summary):
        if summary["round"] == k - 1:
            raise Killed

    return on_round


@pytest.mark.parametrize("kw", [dict(),
                                # ~22 s; warm resume: PBT's mid-bracket resume (warm mode) runs by default
                                pytest.param(dict(mode="warm"), marks=pytest.mark.slow),
                                pytest.param(dict(patience=1, pso=dict(inertia=0.0, c1=0.0, c2=0.0)),
                                             marks=pytest.mark.slow),  # ~20 s: the patience counter's resume
                                pytest.param(dict(mode="warm", layout="packed"), marks=pytest.mark.slow)])  # ~40 s
def test_a_killed_study_resumes_where_it_stopped(digits, tmp_path, kw):
    """Resumed after round k, a study trains only rounds k.. and ends as the uninterrupted one."""
    config = tuner.StudyConfig(**_settings(rounds=4, **kw))
    full_rounds = []
    full = tuner.Study(SPACE, digits, config, tmp_path / "full", progress=False).run(on_round=full_rounds.append)
    with pytest.raises(Killed):
        tuner.Study(SPACE, digits, config, tmp_path / "part", progress=False).run(on_round=_kill_after(1))
    resumed_rounds = []
    resumed = tuner.Study(SPACE, digits, config, tmp_path / "part", progress=False).run(
        resume=True, on_round=resumed_rounds.append)
    assert [r["round"] for r in resumed_rounds] == [r["round"] for r in full_rounds][1:]
    assert resumed._replace(model=None) == full._replace(wall_time=resumed.wall_time, out_dir=resumed.out_dir,
                                                         model=None)
    np.testing.assert_array_equal(resumed.model.predict_proba(digits.x_test), full.model.predict_proba(digits.x_test))
    evals = [e["fitness"] for e in results.read_jsonl(tmp_path / "part" / results.EVALUATIONS)]
    assert evals == [e["fitness"] for e in results.read_jsonl(tmp_path / "full" / results.EVALUATIONS)]


def test_warm_members_keep_their_weights_only_while_their_architecture_stays(digits):
    """Through Study.round: an unchanged member trains on from its weights, a changed one starts afresh."""
    still = dict(inertia=0.0, c1=0.0, c2=0.0)  # the PSO leaves every particle where it is
    study = tuner.Study(SPACE, digits, tuner.StudyConfig(**_settings(mode="warm", pso=still)), progress=False)
    S = study.config.swarm_size
    state0 = tuner.initial_state(study.key, study.strategy, "lhs", S, SPACE.num_dims)
    state1, warm1, _ = study.round(0, state0, tuner.Warm(None, None))
    np.testing.assert_array_equal(state1.position, state0.position)
    before = jax.tree.map(np.asarray, study.program.unpad(warm1.variables))  # the round donates them
    # Move member 0 to another depth; the others keep their architecture.
    pos = np.asarray(state1.position).copy()
    d = SPACE.dim_names.index("n_layers")
    pos[0, d] = 0.25 if pos[0, d] > 0.5 else 0.75
    state1 = state1._replace(position=jnp.asarray(pos))
    _, warm2, m = study.round(1, state1, warm1)
    assert warm2.signature[0].tolist() != warm1.signature[0].tolist()
    # Reference: each member trained alone with round 1's keys.
    trainer = train.make_train(SPACE, study.train_config, 64, 10, input_shape=digits.input_shape)
    keys, _ = tuner.round_keys(study.key, 1, S)
    warm_member = jax.jit(trainer.train_member_warm)
    for i in range(S):
        own = jax.tree.map(lambda v: v[i], before)
        kept, _ = warm_member(keys[i], pos[i], study.data, own, jnp.asarray(True))
        fresh, _ = warm_member(keys[i], pos[i], study.data, own, jnp.asarray(False))
        want, other = (fresh, kept) if i == 0 else (kept, fresh)
        np.testing.assert_allclose(m.train_loss[i], want.train_loss, rtol=1e-4, atol=1e-6, err_msg=f"member {i}")
        assert not np.allclose(m.train_loss[i], other.train_loss, rtol=1e-3), f"member {i}"


def _diverging(space, lr_dim, S):
    pos = np.full((S, space.num_dims), 0.3, np.float32)
    pos[:, lr_dim] = np.linspace(0.02, 0.05, S)  # sane learning rates (5e-3 .. 0.1) for everyone ...
    wild = pos.copy()
    wild[0, lr_dim] = 1.0  # ... but member 0's, at the top of a 1e38 range: its weights overflow
    return pos, wild


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_a_diverging_member_is_isolated_through_the_chunked_runner(digits, family):
    """NaN in one member: worst fitness for it, the others bit for bit as without it, a finite global best."""
    wide = {"learning_rate": (1e-3, 1e38), "optimizers": ("sgd",), "activations": ("relu",)}
    space = (mlp_space(max_layers=2, units=(4, 16), **wide) if family == "mlp" else
             cnn_space(max_blocks=1, filters=(2, 4), kernels=(3,), dense_units=(4, 8), **wide))
    study = tuner.Study(space, digits, tuner.StudyConfig(**_settings(chunk_size=2)), progress=False)
    S = study.config.swarm_size
    sane, wild = _diverging(space, space.dim_names.index("learning_rate"), S)
    state = tuner.initial_state(study.key, study.strategy, "lhs", S, space.num_dims)
    _, _, base = study.round(0, state._replace(position=jnp.asarray(sane)), None)
    after, _, m = study.round(0, state._replace(position=jnp.asarray(wild)), None)
    assert bool(m.diverged[0]) and m.fitness[0] == -np.inf
    assert not np.any(np.asarray(m.diverged[1:]))
    for field in ("fitness", "train_loss", "val_loss"):
        np.testing.assert_array_equal(np.asarray(getattr(m, field))[1:], np.asarray(getattr(base, field))[1:])
    assert np.isfinite(float(after.global_best_fitness))
    assert float(after.global_best_fitness) == float(np.max(np.asarray(m.fitness)[1:]))


def test_a_study_whose_every_member_diverges_says_so_and_retrains_nothing(digits, tmp_path, capsys):
    """Every learning rate overflows: status all_diverged, no retrain, best.json says so, one clear line."""
    space = mlp_space(max_layers=1, units=(4, 8), learning_rate=(1e37, 1e38), optimizers=("sgd",),
                      activations=("relu",))
    config = tuner.StudyConfig(**_settings(rounds=2))
    result = tuner.Study(space, digits, config, tmp_path / "d", progress=True).run()
    assert result.status == "all_diverged" and result.test_accuracy is None
    assert result.best_fitness == -np.inf
    best = json.loads((tmp_path / "d" / results.BEST).read_text())
    assert best["status"] == "all_diverged" and best["test_accuracy"] is None
    out = capsys.readouterr()
    assert "every evaluation of the 2 round(s) diverged" in out.out + out.err
    assert "retrain epoch" not in out.out + out.err
    rounds = results.read_jsonl(tmp_path / "d" / results.ROUNDS)
    assert all(r["median_fitness"] is None and r["diverged"] == 4 for r in rounds)


def test_round_statistics_leave_diverged_members_out(digits):
    wide = {"learning_rate": (1e-3, 1e38), "optimizers": ("sgd",), "activations": ("relu",)}
    space = mlp_space(max_layers=2, units=(4, 16), **wide)
    study = tuner.Study(space, digits, tuner.StudyConfig(**_settings()), progress=False)
    S = study.config.swarm_size
    _, wild = _diverging(space, space.dim_names.index("learning_rate"), S)
    state = tuner.initial_state(study.key, study.strategy, "lhs", S, space.num_dims)
    after, _, m = study.round(0, state._replace(position=jnp.asarray(wild)), None)
    summary = study._summary(0, after, jax.tree.map(np.asarray, m), 1.0)
    others = np.asarray(m.fitness)[1:]
    assert summary["diverged"] == 1
    assert summary["median_fitness"] == pytest.approx(float(np.median(others)))
    assert summary["round_best_fitness"] == pytest.approx(float(np.max(others)))


def test_a_finite_but_exploded_loss_counts_as_diverged():
    """A validation loss far above chance level (here 1e6 nats) is a blown-up member, not a weak one."""
    loss_E, acc_E = jnp.array([[0.5, 0.4], [0.5, 0.4], [0.5, np.nan]]), jnp.full((3, 2), 0.3)
    vloss_E = jnp.array([[0.6, 0.5], [9e5, 1e6], [0.6, 0.5]])
    m = train.metrics_of(loss_E, acc_E, vloss_E, "accuracy")
    assert m.diverged.tolist() == [False, True, True]
    assert m.fitness.tolist()[1:] == [-np.inf, -np.inf] and m.val_accuracy.tolist()[1:] == [0.0, 0.0]
    assert train.DIVERGED_LOSS < 1e6


def test_best_json_names_every_hyperparameter_the_winner_trained_with(digits, tmp_path):
    """The space tunes no optimizer here; best.json still says the winner trained with Adam and its settings."""
    tuner.tune(SPACE, digits, out_dir=tmp_path / "h", **{**TINY, "rounds": 1, "retrain": False})
    best = json.loads((tmp_path / "h" / results.BEST).read_text())
    hp = best["hyperparameters"]
    assert hp["optimizer"] == "adam" and hp["momentum"] == pytest.approx(0.9) and hp["lr_decay"] == 1.0
    assert hp["n_layers"] == best["best_config"]["n_layers"] and hp["epochs"] == TINY["epochs"]
    assert hp["learning_rate"] == pytest.approx(best["best_config"]["learning_rate"], rel=1e-6)


def test_resume_announces_where_it_starts(digits, tmp_path, capsys):
    config = tuner.StudyConfig(**_settings(rounds=3, retrain=False))
    with pytest.raises(Killed):
        tuner.Study(SPACE, digits, config, tmp_path / "r", progress=False).run(on_round=_kill_after(2))
    tuner.Study(SPACE, digits, config, tmp_path / "r", progress=True).run(resume=True)
    out = capsys.readouterr()
    assert "resuming at round 2 (2 of 3 rounds done)" in out.out + out.err
    lines = [ln for ln in (out.out + out.err).splitlines() if ln.startswith("round ")]
    assert lines and lines[0].startswith("round 2 (3/3 done)")


def test_an_absurdly_large_swarm_is_refused_before_anything_compiles(digits, compiles):
    """Estimated memory far beyond the device: refused at once with the estimate (no swarm program built)."""
    config = tuner.StudyConfig(**_settings(swarm_size=10**7, init="uniform"))
    with compiles() as counted:
        with pytest.raises(tuner.StudyError, match=r"a swarm of 10000000 needs an estimated .* GiB per device"):
            tuner.Study(SPACE, digits, config, progress=False)
    assert "jit(program)" not in counted.names and counted.count < 20  # a few eager set-up ops at most
    study = tuner.Study(SPACE, digits, tuner.StudyConfig(**_settings(swarm_size=8)), progress=False)
    assert study.memory_estimate["total"] < 2**30  # a sane swarm passes


def test_the_saved_winner_is_the_retrained_network(digits, tmp_path):
    """result.model (and model/ on disk) predicts what the retrain evaluated: same test accuracy, same rows right."""
    result = tuner.tune(SPACE, digits, out_dir=tmp_path / "m", **{**TINY, "rounds": 1})
    m = len(digits.y_test)
    right = int(np.sum(result.model.predict(digits.x_test) == digits.y_test))
    assert right == round(result.test_accuracy * m)
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(digits.x_test), result.model.predict_proba(digits.x_test))
    assert loaded.classes_.tolist() == list(range(10))


def test_the_auto_layout_is_logged_once_and_recorded(digits, tmp_path, capsys):
    tuner.tune(SPACE, digits, out_dir=tmp_path / "s", **{**TINY, "rounds": 1, "retrain": False, "progress": True})
    out = capsys.readouterr()
    lines = [ln for ln in (out.out + out.err).splitlines() if ln.startswith("layout auto -> ")]
    assert len(lines) == 1 and lines[0].startswith("layout auto -> masked: on CPU")  # tiny: compiles dominate
    recorded = json.loads((tmp_path / "s" / results.STUDY).read_text())["layout"]
    assert recorded["name"] == "masked" and recorded["reason"] == lines[0]


def test_resume_refuses_another_study_and_allows_going_on(digits, tmp_path):
    """From Python as from the CLI: a resume with another space of the same size, other epochs, another seed
    or other data is refused before anything trains or is written; more rounds continue the study."""
    out = tmp_path / "s"
    settings = dict(TINY, rounds=1, retrain=False)
    tuner.tune(SPACE, digits, out_dir=out, **settings)
    before = (out / results.EVALUATIONS).read_text()
    other_space = mlp_space(max_layers=2, units=(8, 64), activations=("relu", "tanh"))  # the same dimensions
    assert other_space.num_dims == SPACE.num_dims
    for space, data, changed, field in [(other_space, digits, {}, "space"),
                                        (SPACE, digits, {"epochs": 3}, "epochs 2 there, 3 now"),
                                        (SPACE, digits, {"seed": 1}, "seed 0 there, 1 now"),
                                        (SPACE, data_lib.load_dataset("digits", seed=1), {}, "data_digest")]:
        with pytest.raises(tuner.StudyError, match=f"holds another study.*{field}"):
            tuner.tune(space, data, out_dir=out, resume=True, **{**settings, **changed})
    assert (out / results.EVALUATIONS).read_text() == before
    resumed = tuner.tune(SPACE, digits, out_dir=out, resume=True, **{**settings, "rounds": 2})
    assert resumed.rounds_run == 2
    with pytest.raises(tuner.StudyError, match=r"resume=True, or --resume DIR"):
        tuner.tune(SPACE, digits, out_dir=out, **settings)


def test_a_dataset_without_test_rows_runs_to_the_end_and_keeps_its_winner(tmp_path):
    """from_arrays(test_fraction=0.0) is accepted: the study ends ok, saves its retrained winner, and has no
    test accuracy (it crashed at the retrain, losing the study's results)."""
    digits = data_lib.load_dataset("digits")
    x = np.concatenate([digits.flat(digits.x_train), digits.flat(digits.x_val)])
    y = np.concatenate([digits.y_train, digits.y_val])
    ds = data_lib.from_arrays(x, y, test_fraction=0.0)
    assert len(ds.y_test) == 0
    out = tmp_path / "s"
    result = tuner.tune(SPACE, ds, out_dir=out, **dict(TINY, rounds=1))
    assert result.status == "ok" and result.test_accuracy is None and result.model is not None
    best = json.loads((out / results.BEST).read_text())
    assert best["status"] == "ok" and best["test_accuracy"] is None
    np.testing.assert_array_equal(load_model(out).predict(x[:5]), result.model.predict(x[:5]))


def _damage(checkpoint, how: str) -> None:
    if how == "metadata":  # a half-written or overwritten _METADATA: orbax's JSONDecodeError
        (checkpoint / "default" / "_METADATA").write_text("{ not json")
    else:  # every data file emptied: orbax's read errors
        for f in checkpoint.rglob("*"):
            if f.is_file() and f.parent.name == "d":
                f.write_bytes(b"")


@pytest.mark.parametrize("how", ["metadata", pytest.param("data", marks=pytest.mark.slow)])  # ~20 s each
def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(digits, tmp_path, capsys, how):
    """Killed after round 3 of 4 (checkpoints of rounds 2 and 3 kept), its newest checkpoint damaged: the
    resume says so in one line, sets it aside, continues from round 2 and ends as the uninterrupted study."""
    config = tuner.StudyConfig(**_settings(rounds=4))
    full = tuner.Study(SPACE, digits, config, tmp_path / "full", progress=False).run()
    part = tmp_path / "part"
    with pytest.raises(Killed):
        tuner.Study(SPACE, digits, config, part, progress=False).run(on_round=_kill_after(3))
    _damage(part / "checkpoints" / "3", how)
    capsys.readouterr()
    resumed = tuner.Study(SPACE, digits, config, part, progress=True).run(resume=True)
    log = capsys.readouterr()
    said = [ln for ln in (log.out + log.err).splitlines() if "checkpoint of round 3 does not restore" in ln]
    assert len(said) == 1 and len(said[0]) < 400, said
    assert "resuming at round 2" in log.out + log.err
    assert len(list((part / "damaged_checkpoints").iterdir())) == 1
    assert resumed._replace(model=None) == full._replace(wall_time=resumed.wall_time, out_dir=resumed.out_dir,
                                                         model=None)
    evals = [e["fitness"] for e in results.read_jsonl(part / results.EVALUATIONS)]
    assert evals == [e["fitness"] for e in results.read_jsonl(tmp_path / "full" / results.EVALUATIONS)]


def test_resume_refuses_a_record_that_misses_rows_of_the_checkpoint(digits, tmp_path):
    """A line removed from evaluations.jsonl (or rounds.jsonl): the resume says so instead of ending with a
    record that silently misses an evaluation."""
    config = tuner.StudyConfig(**_settings(rounds=3, retrain=False))
    out = tmp_path / "s"
    with pytest.raises(Killed):
        tuner.Study(SPACE, digits, config, out, progress=False).run(on_round=_kill_after(2))
    for name, match in ((results.EVALUATIONS, "evaluations.jsonl has 7 of their 8 rows"),
                        (results.ROUNDS, "rounds.jsonl has 1 of their 2 rows")):
        path = out / name
        whole = path.read_text()
        path.write_text("".join(whole.splitlines(keepends=True)[:-1]))
        with pytest.raises(tuner.StudyError, match=match):
            tuner.Study(SPACE, digits, config, out, progress=False).run(resume=True)
        path.write_text(whole)
    assert tuner.Study(SPACE, digits, config, out, progress=False).run(resume=True).rounds_run == 3


def test_the_decoded_weight_decay_reaches_the_member_and_changes_its_training(digits):
    """What a member trains with is what its position decodes to (a decode that dropped the weight decay,
    always the default 0, passed every test before this one)."""
    space = mlp_space(max_layers=1, units=(8, 16), optimizers=("adam", "sgd"), weight_decay=(1e-5, 1e-1))
    study = tuner.Study(space, digits, tuner.StudyConfig(**_settings(swarm_size=2)), progress=False)
    positions = np.full((2, space.num_dims), 0.3, np.float32)
    positions[:, space.dim_names.index("weight_decay")] = [0.0, 1.0]  # 1e-5 and 1e-1, the rest the same
    for p in positions:
        assert study.trained_with(p)["weight_decay"] == pytest.approx(space.to_python(p)["weight_decay"], rel=1e-6)
    metrics = study.evaluate(positions)
    assert metrics.val_loss[0] != metrics.val_loss[1]


def test_the_retrain_trains_on_train_and_validation(digits):
    """The winner's retrain sees len(train) + len(val) examples (a retrain on train alone was caught only by
    the fingerprint's pinned values)."""
    lines = []
    position = np.full(SPACE.num_dims, 0.5, np.float32)
    tuner.retrain_model(SPACE, digits, position, seed=0, epochs=1, batch_size=64, fitness="accuracy", log=lines.append)
    (line,) = [ln for ln in lines if ln.startswith("retraining")]
    assert line.endswith(f"on {len(digits.y_train) + len(digits.y_val)} images")
