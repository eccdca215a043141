"""Fake-device checks of jaxswarm.scale, run in a subprocess by tests/test_scale.py.

XLA_FLAGS=--xla_force_host_platform_device_count=N must be set before JAX
initialises, so these checks cannot share the pytest process (other test files
import JAX first). Run alone:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \\
        python tests/scale_fake_devices.py

Prints one JSON object of measured quantities; the test file asserts on them.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm import data as data_lib
from jaxswarm import execute as scale
from jaxswarm import optim, study, train
from jaxswarm.layouts import DataShape, auto, packed
from jaxswarm.models import family_of, mlp_space


def max_diff(a, b) -> float:
    """Largest absolute difference between two pytrees of arrays (finite entries)."""
    diffs = [np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0)
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return float(max(diffs))


def main() -> dict:
    out: dict = {"num_devices": jax.device_count()}
    ds = data_lib.load_dataset("digits")
    xtr, xva, _ = ds.flat_splits()
    data = train.device_data(xtr[:256], ds.y_train[:256], xva[:64], ds.y_val[:64])
    space = mlp_space(max_layers=2, units=(4, 16), optimizers=("sgd", "adam"))
    cfg = train.TrainConfig(epochs=1, batch_size=32, eval_batch_size=48)
    trainer = train.make_train(space, cfg, xtr.shape[1], ds.num_classes)
    single = jax.jit(jax.vmap(trainer.train_member, in_axes=(0, 0, None)))

    traces = {"n": 0}

    def counted(key, position_D, d):
        traces["n"] += 1
        return trainer.train_member(key, position_D, d)

    def swarm_inputs(s, seed):
        keys = jax.random.split(jax.random.key(seed), s)
        pos = jax.random.uniform(jax.random.key(seed + 100), (s, space.num_dims))
        return keys, pos

    logs: list[str] = []
    sharded = scale.make_swarm_runner(counted, log=logs.append)
    # Chunked automatically: a memory cap that holds one member per device.
    est_one = scale.estimate_memory(trainer.family, trainer.model_config, cfg, 1, 256, 64,
                                    optimizers=optim.optimizer_names(space))
    cap = est_one["shared"] + est_one["per_member"] + 1
    chunked = scale.make_swarm_runner(trainer.train_member, estimate=est_one, memory_cap_bytes=cap,
                                      log=logs.append)
    refs = {}
    for s in (6,):
        keys, pos = swarm_inputs(s, s)
        ref = refs[s] = single(keys, pos, data)  # plain jit(vmap), one device
        got = sharded(keys, pos, data)
        out[f"sharded_vs_unsharded_S{s}"] = max_diff(ref, got)
        out[f"sharded_shape_S{s}"] = list(got.fitness.shape)
        out[f"sharded_plan_S{s}"] = list(sharded.plan(s))
        got_c = chunked(keys, pos, data)
        out[f"chunked_vs_unchunked_S{s}"] = max_diff(ref, got_c)
        out[f"chunked_plan_S{s}"] = list(chunked.plan(s))
        out[f"fitness_sharding_S{s}"] = str(got.fitness.sharding.spec)

    # Compile once: more rounds with new positions and keys trace nothing new.
    traces_after_first = traces["n"]
    for r in range(3):
        keys, pos = swarm_inputs(6, 50 + r)
        sharded(keys, pos, data)
    out["traces_after_first_round"] = traces_after_first
    out["traces_after_four_rounds"] = traces["n"]

    # Warm mode: per-member variables are the donated scan carry.
    s = 6
    keys, pos = swarm_inputs(s, 7)
    variables = jax.vmap(trainer.init_member)(keys, pos)
    keep = jnp.asarray([True, False, True, True, False, True])
    ref_m, ref_v = jax.jit(jax.vmap(trainer.train_member_warm, in_axes=(0, 0, None, 0, 0)))(
        keys, pos, data, variables, keep)
    warm = scale.make_swarm_runner(trainer.train_member_warm, in_axes=(0, 0, None, 0, 0), state_argnum=3,
                                   chunk_size=1, log=logs.append)
    got_m, got_v = warm(keys, pos, data, variables, keep)
    out["warm_metrics_diff"] = max_diff(ref_m, got_m)
    out["warm_variables_diff"] = max_diff(ref_v, warm.unpad(got_v, s))
    out["warm_state_rows"] = int(jax.tree.leaves(got_v)[0].shape[0])
    leaf = jax.tree.leaves(got_v)[0]
    got_m2, got_v2 = warm(keys, pos, data, got_v, keep)  # feed the padded, sharded state back
    out["warm_state_donated"] = bool(leaf.is_deleted())
    ma = scale.memory_analysis(warm.compile(keys, pos, data, got_v2, keep))
    out["warm_alias_bytes"] = ma.get("alias_size_in_bytes", 0)
    out["warm_state_bytes_per_device"] = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(got_v2))

    # Memory: the estimate of one device's members against XLA's numbers for the sharded program.
    s = 6
    keys, pos = swarm_inputs(s, s)
    ma = sharded.memory_analysis(keys, pos, data)  # compiled above: no new compilation
    est = scale.estimate_memory(trainer.family, trainer.model_config, cfg, sharded.plan(s).chunk_size, 256, 64,
                                optimizers=optim.optimizer_names(space))
    out["estimate_over_xla"] = est["total"] / ma["total"]
    out["logs"] = logs
    out.update(packed_checks(data, xtr.shape[1], ds.num_classes))
    out.update(packed_study_checks(ds))
    return out


def packed_checks(data, in_features: int, num_classes: int) -> dict:
    """The packed layout dealt over every device against the same trainer on one device."""
    out: dict = {}
    cfg = train.TrainConfig(epochs=2, batch_size=32)
    s = 7  # not a multiple of 4: one pad place
    keys = jax.random.split(jax.random.key(0), s)
    shuffle = jax.random.key(2)
    space = mlp_space(max_layers=2, units=(4, 16), optimizers=("sgd", "adam"))
    pos = jax.random.uniform(jax.random.key(1), (s, space.num_dims))
    one, every = (packed.make_packed_train(space, cfg, in_features, num_classes, devices=d)
                  for d in (None, jax.devices()))
    ref, got = one.train_swarm(keys, pos, data, shuffle), every.train_swarm(keys, pos, data, shuffle)
    out["packed_sharded_vs_one_device"] = max_diff(ref, got)
    out["packed_sharded_shape"] = list(got.fitness.shape)
    out["packed_fitness_sharding"] = str(got.fitness.sharding.spec)
    plan = every.plan(pos)
    out["packed_tables_devices"] = int(plan.tables.slot_member_T.shape[0])
    out["packed_order"] = [int(m) for m in plan.order]
    # Moved particles that still fit the plan compile nothing new.
    traces = every.stats["traces"]
    for r in range(3):
        every.train_swarm(keys, jnp.clip(pos + 0.004 * (r + 1), 0.0, 1.0), data, shuffle)
    out["packed_new_traces_after_moves"] = every.stats["traces"] - traces
    # Warm: members with keep continue from their variables; the variables come back in member order.
    variables = one.init_variables(keys, pos)
    keep = jnp.asarray([True, False, True, True, False, True, False])
    ref_m, ref_v = one.train_swarm(keys, pos, data, shuffle, variables, keep)
    got_m, got_v = every.train_swarm(keys, pos, data, shuffle, variables, keep)
    out["packed_warm_metrics_diff"] = max_diff(ref_m, got_m)
    out["packed_warm_variables_diff"] = max_diff(ref_v, got_v)
    return out


def packed_study_checks(ds) -> dict:
    """A packed study over 4 devices: in chunks of one member per device, and not chunked."""
    space = mlp_space(max_layers=2, units=(4, 16))
    runs = {}
    for chunk in (None, 1):
        config = study.StudyConfig(swarm_size=6, rounds=1, epochs=1, batch_size=32, layout="packed",
                                   chunk_size=chunk, retrain=False)
        s = study.Study(space, ds, config, progress=False)
        s.run()
        runs[chunk] = (s.program.describe(6), [row["fitness"] for row in s.evaluations])
    big = study.StudyConfig(swarm_size=32, rounds=10, epochs=5)
    image = DataShape(784, 10, None)
    return {"packed_study_describe": runs[1][0], "packed_study_fitness": runs[None][1],
            "packed_study_chunked_fitness": runs[1][1],
            "auto_on_4_devices": auto.choose(family_of(mlp_space()), mlp_space(), big, image, 54_000)[0]}


if __name__ == "__main__":
    print("RESULT " + json.dumps(main()))
