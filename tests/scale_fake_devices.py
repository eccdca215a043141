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
from jaxswarm import optim, train
from jaxswarm.models import mlp_space


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
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(main()))
