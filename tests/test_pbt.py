"""Population-based training inside the swarm (schedule "pbt"): exploit, explore, the study's rounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxswarm.study as tuner
from jaxswarm import data as data_lib
from jaxswarm import results, schedules
from jaxswarm.models import mlp_space

SPACE = mlp_space(max_layers=2, units=(4, 16), optimizers=("sgd", "adam"), batch_norm=True)
PBT = dict(swarm_size=8, rounds=2, epochs=4, batch_size=64, schedule="pbt", pbt_interval=2, retrain=False)


@pytest.fixture(scope="module")
def digits():
    return data_lib.load_dataset("digits", seed=0)


def _same(a, b) -> bool:
    return all(bool(jnp.array_equal(u, v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _rows(tree, rows):
    return jax.tree.map(lambda x: x[np.asarray(rows)], tree)


def test_exploit_copies_the_top_into_the_bottom_and_explores_inside_the_box():
    rng = np.random.default_rng(0)
    positions = rng.random((8, 5)).astype(np.float32)
    positions[0] = [0.0, 1.0, 0.0, 1.0, 0.5]  # at the box's faces: a move must be clipped
    fitness = np.array([0.9, 0.1, 0.5, np.nan, 0.8, 0.2, 0.7, 0.6])  # top 2: members 0, 4; bottom 2: 1, NaN 3
    ex = schedules.exploit(fitness, positions, 0.25, 0.3, np.random.default_rng(1))
    moved = np.flatnonzero(ex.source != np.arange(8))
    assert moved.tolist() == [1, 3] and set(ex.source[moved]) <= {0, 4}
    stay = np.setdiff1d(np.arange(8), moved)
    assert np.array_equal(ex.positions[stay], positions[stay])
    assert ex.positions.min() >= 0.0 and ex.positions.max() <= 1.0
    step = np.abs(ex.positions[moved] - positions[ex.source[moved]])
    assert step.max() <= 0.3 + 1e-6 and step.min() > 0.0
    again = schedules.exploit(fitness, positions, 0.25, 0.3, np.random.default_rng(1))
    assert np.array_equal(again.source, ex.source) and np.array_equal(again.positions, ex.positions)

    # Keeping the architecture: here dimension 0 above 0.5 is "another architecture".
    def same(a, b):
        return (a[:, 0] > 0.5) == (b[:, 0] > 0.5)

    for seed in range(20):
        kept = schedules.exploit(fitness, positions, 0.5, 1.0, np.random.default_rng(seed), same)
        src = kept.source
        assert np.all(same(kept.positions, positions[src]))  # every copy keeps its source's architecture
        assert np.abs(kept.positions - positions[src]).max() <= 1.0
    assert np.any(kept.positions[:, 1:] != positions[kept.source][:, 1:])  # the other dimensions still move


@pytest.mark.parametrize("layout", [pytest.param("masked", marks=pytest.mark.slow), "packed"])  # ~17 s, ~22 s
def test_a_copy_is_exact_and_a_changed_network_or_optimizer_starts_afresh(digits, layout):
    """Weights, batch statistics and optimizer state copied bitwise; new weights / optimizer state where they changed."""
    study = tuner.Study(SPACE, digits, tuner.StudyConfig(**PBT, layout=layout, pbt_architecture=True), progress=False)
    S = 6
    positions = np.full((S, SPACE.num_dims), 0.25, np.float32)  # 1 layer
    positions[:, 5] = 0.75  # adam: after an epoch its moments are non-zero, so a missing copy shows
    positions[1, 4] = positions[2, 4] = 0.9  # other learning rates
    positions[2, 1] = 0.9  # wider
    keys = jax.random.split(jax.random.key(3), S)
    program = study.program
    start = program.start_span(keys, positions, study.data)
    _, states = program.span(keys, positions, study.data, start, 0, 1)
    moved = positions.copy()
    moved[3] = positions[1]
    moved[3, 4] = 0.3  # member 1's network, a new learning rate: everything carries over
    moved[4] = positions[1]
    moved[4, 5] = 0.25  # member 1's network under sgd: a new optimizer state
    moved[5] = positions[2]
    moved[5, 0] = 0.75  # member 2 with two layers: new weights
    ex = schedules.Exploit(np.array([0, 1, 2, 1, 1, 2]), moved)
    got, new_weights, new_optimizer = study._exploited(keys, states, positions, ex)
    assert new_weights.tolist() == [False] * 5 + [True]
    assert new_optimizer.tolist() == [False] * 4 + [True, True]
    fresh = program.start_span(keys, moved, study.data)
    assert _same(_rows(got, [0, 1, 2]), _rows(states, [0, 1, 2]))  # those not moved: untouched
    for i, src in ((3, 1), (4, 1)):  # copied weights and batch statistics, bitwise
        assert _same((_rows(got.params, [i]), _rows(got.batch_stats, [i])),
                     (_rows(states.params, [src]), _rows(states.batch_stats, [src])))
    source_slots = _rows(states.opt_state.inner_state.slots, [1])
    assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(source_slots))  # Adam's moments
    assert not _same(_rows(states.opt_state.inner_state.slots, [3]), source_slots)  # member 3's own differ
    assert _same(_rows(got.opt_state.inner_state.slots, [3]), source_slots)  # the copy takes the source's
    assert _same(_rows(got.opt_state.inner_state.slots, [4, 5]), _rows(fresh.opt_state.inner_state.slots, [4, 5]))
    assert _same((_rows(got.params, [5]), _rows(got.batch_stats, [5])),
                 (_rows(fresh.params, [5]), _rows(fresh.batch_stats, [5])))
    # The round's step count everywhere (one epoch made), and each member's new hyperparameters.
    steps = int(states.opt_state.count[0])
    assert steps > 0 and all(np.all(np.asarray(c) == steps) for c in jax.tree.leaves(
        (got.opt_state.count, got.opt_state.inner_state.count, got.opt_state.inner_state.rest)))
    assert _same(got.opt_state.hyperparams, fresh.opt_state.hyperparams)
    assert float(got.opt_state.hyperparams["learning_rate"][3]) != float(states.opt_state.hyperparams["learning_rate"][1])
    # And the copies train on from there.
    metrics, _ = program.span(keys, moved, study.data, got, 1, 1)
    assert np.all(np.isfinite(np.asarray(metrics.fitness)))


def test_a_pbt_study_trains_every_member_every_span_and_tells_where_they_ended(digits, tmp_path):
    # PSO standing still: round 1 asks where round 0's members ended (PBT keeps each copy's architecture).
    config = tuner.StudyConfig(**PBT, mode="warm", layout="masked", pso=dict(inertia=0.0, c1=0.0, c2=0.0))
    study = tuner.Study(SPACE, digits, config, tmp_path, progress=False)
    calls, starts, program = [], [], study.program

    def span(keys, positions, data, states, start, num_epochs, shuffle_key=None):
        calls.append((keys.shape[0], int(start), num_epochs))
        out = program.span(keys, positions, data, states, start, num_epochs, shuffle_key=shuffle_key)
        calls[-1] += (out[1],)
        return out

    def start_span(keys, positions, data, variables=None, keep=None):
        starts.append((variables, keep))
        return program.start_span(keys, positions, data, variables, keep)

    study.program = program._replace(span=span, start_span=start_span)
    result = study.run()
    # Every member trains every epoch, in spans of pbt_interval: (members, first epoch, epochs) per span.
    assert [c[:3] for c in calls] == [(8, 0, 2), (8, 2, 2)] * 2
    rows = results.read_jsonl(tmp_path / results.EVALUATIONS)
    rounds = results.read_jsonl(tmp_path / results.ROUNDS)
    assert all(row["epochs"] == 4 for row in rows)
    for r, summary in enumerate(rounds):
        (ex,) = summary["exploits"]  # one exploit per round, after epoch 2
        assert ex["epoch"] == 2 and len(ex["members"]) == 2  # a quarter of 8
        round_rows = [row for row in rows if row["round"] == r]
        for i, src in zip(ex["members"], ex["sources"]):
            assert round_rows[i]["copied_from"] == [[2, src]]
            assert src not in ex["members"]
    # Warm: round 1 starts from round 0's last weights where the architecture stayed.
    variables, keep = starts[2]  # round 0: one start and one exploit's fresh states; then round 1's start
    last = calls[1][3]
    assert np.asarray(keep).all()
    assert _same(variables, {"params": last.params, "batch_stats": last.batch_stats})
    # PSO was told the positions the members ended at: each particle's best is one of its rows.
    state = _restored_state(study, tmp_path)
    for i in range(8):
        mine = [row for row in rows if row["particle"] == i and row["fitness"] == float(state.best_fitness[i])]
        assert any(np.allclose(list(row["position"].values()), np.asarray(state.best_position[i])) for row in mine)
    assert result.best_fitness == float(state.global_best_fitness)


def _restored_state(study, out):
    """A finished study's strategy state, from its last checkpoint."""
    from jaxswarm import strategies

    state = tuner.initial_state(study.key, study.strategy, study.config.init, study.config.swarm_size,
                                study.space.num_dims)
    ckpt = results.Checkpointer(out / "checkpoints")
    _, tree = ckpt.restore_latest(study._checkpoint_tree(state, tuner.Warm(None, None)))
    ckpt.close()
    return strategies.from_checkpoint(state, tree[study.strategy.name])


@pytest.mark.parametrize("bad, message", [
    (dict(strategy="random"), "strategy 'random' cannot take the moved positions"),
    (dict(folds=3), "trains on one hold-out split"),
    (dict(pbt_interval=4), "pbt_interval must be an integer from 1 to epochs - 1"),
    (dict(pbt_fraction=0.7), "pbt_fraction must be a number in"),
    (dict(pbt_perturb=0.0), "pbt_perturb must be a number in"),
    (dict(epochs=1, pbt_interval=None), "epochs must be >= 2"),
])
def test_bad_pbt_settings_are_one_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        tuner.StudyConfig(**{**PBT, **bad}).validate()


def test_the_pbt_flags_reach_the_study_config():
    from jaxswarm import cli

    args = cli.build_parser().parse_args(["run", "--schedule", "pbt", "--pbt-interval", "3", "--pbt-fraction", "0.5",
                                          "--pbt-perturb", "0.1", "--pbt-architecture"])
    cfg = cli.settings_from_args(args)
    keys = ("schedule", "pbt_interval", "pbt_fraction", "pbt_perturb", "pbt_architecture")
    assert [cfg[k] for k in keys] == ["pbt", 3, 0.5, 0.1, True]
    tuner.StudyConfig(**{k: cfg[k] for k in keys}).validate()


def test_an_explored_member_takes_the_schedule_length_of_its_new_batch_size(digits):
    """A copy explored to another batch size makes another number of updates in the round: its learning-rate
    schedule spans a fresh state's length for that size, not its source's (320 where 80 is right)."""
    space = mlp_space(max_layers=1, units=(4, 16), optimizers=("adam",), batch_sizes=(16, 64))
    study = tuner.Study(space, digits, tuner.StudyConfig(**{**PBT, "layout": "masked"}), progress=False)
    S, b = PBT["swarm_size"], space.dim_names.index("batch_size")
    positions = np.full((S, space.num_dims), 0.25, np.float32)  # batch 16
    positions[1, b] = 0.9  # member 1: batch 64
    keys = jax.random.split(jax.random.key(3), S)
    start = study.program.start_span(keys, positions, study.data)
    _, states = study.program.span(keys, positions, study.data, start, 0, 1)
    moved = positions.copy()
    moved[3] = positions[1]
    moved[3, b] = 0.25  # member 1's copy, explored to batch 16
    source = np.arange(S)
    source[3] = 1
    got, _, _ = study._exploited(keys, states, positions, schedules.Exploit(source, moved))
    fresh = study.program.start_span(keys, moved, study.data)
    horizon = np.asarray(got.opt_state.inner_state.horizon)
    assert horizon[3] == np.asarray(fresh.opt_state.inner_state.horizon)[3]
    assert horizon[3] == 4 * np.asarray(states.opt_state.inner_state.horizon)[1]  # a quarter of the batch
