"""Quick GPU check: package imports, masked swarm trainer compiles and runs; rough timings.

Run: PYTHONPATH=. python bench/gpu_smoke.py --data-dir .gpudata/fashion_mnist
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm import data as data_lib
from jaxswarm import execute, train
from jaxswarm.models import mlp_space

p = argparse.ArgumentParser()
p.add_argument("--data-dir", default=None)
p.add_argument("--sizes", type=int, nargs="+", default=[32, 256, 1024])
p.add_argument("--sequential", type=int, default=4)
a = p.parse_args()
print("jax", jax.__version__, jax.devices())
ds = data_lib.load_dataset("fashion_mnist", data_dir=a.data_dir)
d = train.device_data(ds.x_train, ds.y_train, ds.x_val, ds.y_val)
space = mlp_space()
cfg = train.TrainConfig(epochs=1, batch_size=128)
tr = train.make_train(space, cfg, d.x_train.shape[1], 10)
runner = execute.make_swarm_runner(tr.train_member, log=None)
for n in a.sizes:
    pos = jax.random.uniform(jax.random.key(n), (n, space.num_dims))
    keys = jax.random.split(jax.random.key(1), n)
    t0 = time.perf_counter()
    runner.compile(keys, pos, d)
    tc = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = runner(keys, pos, d)  # the program compiled above
    m.fitness.block_until_ready()
    tt = time.perf_counter() - t0
    print(f"N={n}: compile {tc:.1f}s train {tt:.2f}s ({tt / n * 1e3:.1f} ms/member) "
          f"median acc {float(jnp.median(m.val_accuracy)):.3f} diverged {int(m.diverged.sum())}", flush=True)
dense = train.make_dense_train(space, cfg, d.x_train.shape[1], 10)
t0 = time.perf_counter()
for i in range(a.sequential):
    pos = jax.random.uniform(jax.random.key(100 + i), (space.num_dims,))
    dense.train_position(jax.random.key(i), pos, d).fitness.block_until_ready()
ts = (time.perf_counter() - t0) / a.sequential
print(f"sequential dense: {ts:.2f}s per configuration (compile included)")
