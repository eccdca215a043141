"""One process of a multi-process (multi-host) study, for tests/test_scale.py.

Every process runs the same loop: PSO ask -> the sharded swarm runner over all
processes' devices -> PSO tell, on the same keys. Each process trains the
members on its own devices; the metrics come back replicated on every process,
so all processes take the same PSO step. The packed layout's trainer, dealt
over every process's devices, is checked against itself on one device. Only
the primary process writes its result file. Usage (one line per process, same coordinator):

    JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/multihost_worker.py --coordinator localhost:PORT \\
        --num-processes 2 --process-id I --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--num-processes", type=int, required=True)
    ap.add_argument("--process-id", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--swarm", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    from jaxswarm import execute as scale

    scale.initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                 initialization_timeout=60)
    import jax

    result = study(args.swarm, args.rounds)
    if scale.is_primary():
        Path(args.out, f"result_{jax.process_index()}.json").write_text(json.dumps(result))
    print("RESULT " + json.dumps(result), flush=True)
    jax.distributed.shutdown()


def study(swarm_size: int = 6, rounds: int = 2) -> dict:
    """The tiny study every process runs: PSO on digits, the runner over jax.devices()."""
    import jax
    import numpy as np

    from jaxswarm import data as data_lib
    from jaxswarm import execute as scale
    from jaxswarm import pso, train
    from jaxswarm.layouts import packed
    from jaxswarm.models import mlp_space

    ds = data_lib.load_dataset("digits")
    xtr, xva, _ = ds.flat_splits()
    data = train.device_data(xtr[:256], ds.y_train[:256], xva[:64], ds.y_val[:64])
    space = mlp_space(max_layers=1, units=(4, 16))
    cfg = train.TrainConfig(epochs=1, batch_size=32)
    trainer = train.make_train(space, cfg, xtr.shape[1], ds.num_classes)
    runner = scale.make_swarm_runner(trainer.train_member, log=None)
    swarm = pso.make_pso(swarm_size, space.num_dims, maximize=True)
    key = jax.random.key(0)
    state = swarm.init(jax.random.fold_in(key, 0))
    fitness_rounds = []
    for r in range(rounds):
        k_train, k_tell = jax.random.split(jax.random.fold_in(key, r + 1))
        metrics = runner(jax.random.split(k_train, swarm_size), swarm.ask(state), data)
        state = swarm.tell(k_tell, state, metrics.fitness)
        fitness_rounds.append([float(f) for f in metrics.fitness])
    # The packed layout dealt over every process's devices, against the same trainer on this process's first device.
    every = packed.make_packed_train(space, cfg, xtr.shape[1], ds.num_classes, devices=jax.devices())
    one = packed.make_packed_train(space, cfg, xtr.shape[1], ds.num_classes)
    keys, positions, shuffle = jax.random.split(jax.random.key(5), swarm_size), swarm.ask(state), jax.random.key(6)
    dealt, alone = every.train_swarm(keys, positions, data, shuffle), one.train_swarm(keys, positions, data, shuffle)
    result = {
        "packed_fitness": [float(f) for f in dealt.fitness],
        "packed_vs_one_device": float(np.max(np.abs(np.asarray(dealt.train_loss) - np.asarray(alone.train_loss)))),
        "process_index": jax.process_index(), "process_count": jax.process_count(),
        "global_devices": jax.device_count(), "local_devices": jax.local_device_count(),
        "plan": list(runner.plan(swarm_size)),
        "best_fitness": float(state.global_best_fitness),
        "best_position": [float(v) for v in state.global_best_position],
        "fitness_rounds": fitness_rounds,
    }
    return result


if __name__ == "__main__":
    main()
