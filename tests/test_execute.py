"""Tests of jaxswarm.scale: sharding, padding, chunking, memory planning, multi-host.

Fake-device checks (4 CPU devices) and the 2-process run need their own JAX
processes (XLA_FLAGS must be set before JAX starts), so they run as
subprocesses: tests/scale_fake_devices.py and tests/multihost_worker.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxswarm import execute as scale
from jaxswarm import optim, train
from jaxswarm.models import FAMILIES, cnn
from jaxswarm.models import mlp as models
from jaxswarm.models import mlp_space

HERE = Path(__file__).parent


@pytest.fixture
def key():
    return jax.random.key(0)


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"  # conftest's too
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    return env


def _result(stdout: str) -> dict:
    lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, f"no RESULT line in output:\n{stdout[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def tiny():
    """A tiny digits setup shared by the in-process tests."""
    from jaxswarm import data as data_lib

    ds = data_lib.load_dataset("digits")
    xtr, xva, _ = ds.flat_splits()
    data = train.device_data(xtr[:192], ds.y_train[:192], xva[:48], ds.y_val[:48])
    space = mlp_space(max_layers=2, units=(4, 16))
    cfg = train.TrainConfig(epochs=1, batch_size=32, eval_batch_size=32)
    trainer = train.make_train(space, cfg, xtr.shape[1], ds.num_classes)
    return space, cfg, trainer, data


MLP, CNN = FAMILIES["mlp"], FAMILIES["cnn"]


# -- plans -----------------------------------------------------------------


def test_make_plan_covers_swarm_with_least_padding():
    for s in range(1, 40):
        for d in (1, 2, 3, 4):
            for c in (None, 1, 2, 3, 5):
                p = scale.make_swarm_plan(s, d, c)
                assert p.padded >= s and p.padded == d * p.chunk_size * p.num_chunks
                per_device = -(-s // d)
                assert p.per_device - per_device < p.num_chunks  # balanced chunks: < 1 pad row per chunk
                if c is not None:
                    assert p.chunk_size <= c and p.num_chunks == -(-per_device // min(c, per_device))
                else:
                    assert p.num_chunks == 1


def test_plan_chunks_fits_capacity_and_rejects_impossible():
    est = {"per_member": 1000, "shared": 500}
    for cap in (1500, 2600, 7000, 10**6):
        for s, d in ((7, 1), (16, 2), (33, 4)):
            c = scale.plan_chunks(est, cap, s, d)
            assert est["shared"] + c * est["per_member"] <= cap
            assert 1 <= c <= -(-s // d)
    assert scale.plan_chunks(est, 10**9, 10, 2) == 5  # everything fits: one chunk
    with pytest.raises(ValueError, match="cannot hold one member"):
        scale.plan_chunks(est, 1499, 4, 1)


def test_bad_arguments_raise_value_error(tiny):
    _, _, trainer, _ = tiny
    with pytest.raises(ValueError, match="num_particles"):
        scale.make_swarm_plan(0, 1)
    with pytest.raises(ValueError, match="in_axes"):
        scale.make_swarm_runner(trainer.train_member, in_axes=(1, 0, None))
    with pytest.raises(ValueError, match="state_argnum"):
        scale.make_swarm_runner(trainer.train_member, state_argnum=2)
    with pytest.raises(ValueError, match="needs an estimate"):
        scale.make_swarm_runner(trainer.train_member, memory_cap_bytes=10**9)
    runner = scale.make_swarm_runner(lambda k, x, w: x.sum() * w, log=None)
    with pytest.raises(ValueError, match="disagree"):
        runner(jax.random.split(jax.random.key(0), 3), jnp.ones((4, 2)), 1.0)


# -- memory ----------------------------------------------------------------


def test_estimate_memory_counts_params_and_the_shared_optimizer_state():
    cfg = models.MLPConfig(64, 10, 2, 32)
    tc = train.TrainConfig(batch_size=32)
    one = scale.estimate_memory(MLP, cfg, tc, 1, 500, 100, optimizers=("adam",))
    every = scale.estimate_memory(MLP, cfg, tc, 1, 500, 100, optimizers=optim.OPTIMIZERS)
    n_params = (64 * 32 + 32) + (32 * 32 + 32) + 2 * 2 * 32 + (32 * 10 + 10)
    assert one["params"] == 4 * n_params
    # adam keeps mu and nu; the nine names share two slots (a member's optimizer keeps at most two
    # param-shaped buffers: rmsprop with momentum, adam's family, adadelta), plus their step counts.
    assert 2 * one["params"] <= one["optimizer"] < 2 * one["params"] + 64
    assert 2 * one["params"] <= every["optimizer"] < 2 * one["params"] + 256
    big = scale.estimate_memory(MLP, cfg, tc, 10, 500, 100, optimizers=("adam",))
    assert big["total"] - one["total"] == 9 * one["per_member"]  # linear in S, data shared


def test_estimate_is_within_a_small_factor_of_xla(tiny, key):
    space, cfg, trainer, data = tiny
    for s in (4,):
        keys = jax.random.split(key, s)
        pos = jax.random.uniform(jax.random.key(1), (s, space.num_dims))
        ma = scale.make_swarm_runner(trainer.train_member, log=None).memory_analysis(keys, pos, data)
        est = scale.estimate_memory(trainer.family, trainer.model_config, cfg, s, 192, 48,
                                    optimizers=optim.optimizer_names(space))
        assert 0.5 <= est["total"] / ma["total"] <= 3.0, (s, est["total"], ma)


@pytest.fixture(scope="module")
def tiny_cnn():
    """A tiny CNN setup on digits (8x8x1 images): 1 block of up to 8 filters, 8 dense units."""
    from jaxswarm import data as data_lib

    ds = data_lib.load_dataset("digits")
    xtr, xva, _ = ds.flat_splits()
    data = train.device_data(xtr[:64], ds.y_train[:64], xva[:40], ds.y_val[:40])
    space = cnn.cnn_space(max_blocks=1, filters=(2, 8), kernels=(3,), dense_units=(4, 8),
                          activations=("relu",))
    cfg = train.TrainConfig(epochs=1, batch_size=8, eval_batch_size=40)  # the 40-row evaluation dominates
    trainer = train.make_train(space, cfg, xtr.shape[1], ds.num_classes, input_shape=ds.input_shape)
    return space, cfg, trainer, data


def _cnn_estimate(trainer, cfg, s, data, space):
    return scale.estimate_memory(trainer.family, trainer.model_config, cfg, s, data.x_train.shape[0], data.x_val.shape[0],
                                 optimizers=optim.optimizer_names(space))


def test_cnn_estimate_counts_the_max_size_network_and_grows_as_it_should():
    cfg = cnn.CNNConfig((28, 28, 1), 10, max_blocks=2, max_filters=16, max_kernel=3, max_dense=32,
                        activations=("relu",), conv="xla")
    tc = train.TrainConfig(batch_size=32, eval_batch_size=50)  # 100 validation rows: 2 chunks, no padded copy
    est = scale.estimate_memory(CNN, cfg, tc, 1, 500, 100)
    assert est.keys() == scale.estimate_memory(MLP, models.MLPConfig(784, 10, 2, 32), tc, 1, 500, 100).keys()
    P = 14 * 14 * 16  # the head reads every slot's map zero-padded to slot 0's length
    n_params = (9 * 1 * 16 + 16) + (9 * 16 * 16 + 16) + 2 * 2 * 16 + (P * 32 + 32) + 2 * 32 + (32 * 10 + 10)
    assert est["params"] == 4 * n_params and est["batch_stats"] == 4 * 2 * (16 + 16 + 32)
    assert 2 * est["params"] <= est["optimizer"] < 2 * est["params"] + 64  # adam: mu and nu
    assert est["data"] == 4 * 600 * 785  # flat images + labels, shared
    grow = {
        "swarm": scale.estimate_memory(CNN, cfg, tc, 4, 500, 100),
        "filters": scale.estimate_memory(CNN, cfg._replace(max_filters=32), tc, 1, 500, 100),
        "batch": scale.estimate_memory(CNN, cfg, tc._replace(batch_size=64), 1, 500, 100),
        "blocks": scale.estimate_memory(CNN, cfg._replace(max_blocks=3), tc, 1, 500, 100),
        "branches": scale.estimate_memory(CNN, cfg._replace(activations=("relu", "tanh")), tc, 1, 500, 100),
        "im2col": scale.estimate_memory(CNN, cfg._replace(conv="matmul"), tc, 1, 500, 100),
    }
    assert grow["swarm"]["total"] - est["total"] == 3 * est["per_member"]  # linear in S, data shared
    assert grow["filters"]["per_member"] > 1.9 * est["per_member"]  # maps, head and kernels all scale with F
    assert grow["batch"]["activations"] > 1.9 * est["activations"]
    assert grow["batch"]["params"] == est["params"] and grow["batch"]["eval_chunk"] == est["eval_chunk"]
    assert grow["blocks"]["activations"] > est["activations"] and grow["blocks"]["params"] > est["params"]
    assert grow["branches"]["activations"] > est["activations"]
    assert grow["im2col"]["activations"] > est["activations"] and grow["im2col"]["eval_chunk"] > est["eval_chunk"]
    big_eval = scale.estimate_memory(CNN, cfg, tc._replace(eval_batch_size=2048), 1, 500, 2000)
    assert big_eval["training_peak"] == big_eval["eval_chunk"] > est["eval_chunk"]


@pytest.mark.slow  # ~15 s; the MLP estimate against XLA runs by default
def test_cnn_estimate_is_within_a_small_factor_of_xla(key):
    # Training-dominated; the other regime (the evaluation chunk) is
    # test_cnn_runner_chunks_under_a_memory_cap_and_matches_unchunked's.
    space = cnn.cnn_space(max_blocks=2, filters=(2, 4), kernels=(3,), dense_units=(4, 8),
                          activations=("relu", "elu"))
    cfg = train.TrainConfig(epochs=1, batch_size=32, eval_batch_size=16)
    x = jax.random.uniform(key, (80, 64))
    y = jax.random.randint(key, (80,), 0, 3)
    data = train.Data(x[:64], y[:64], x[64:], y[64:])
    trainer = train.make_train(space, cfg, 64, 3, input_shape=(8, 8, 1))
    s = 2
    keys = jax.random.split(key, s)
    pos = jax.random.uniform(jax.random.key(1), (s, space.num_dims))
    ma = scale.make_swarm_runner(trainer.train_member, log=None).memory_analysis(keys, pos, data)
    est = _cnn_estimate(trainer, cfg, s, data, space)
    assert est["eval_chunk"] < est["gradients"] + est["activations"]
    assert 0.8 <= est["total"] / ma["total"] <= 1.5, (est["total"], ma)


@pytest.mark.slow  # ~20 s; test_chunked_equals_unchunked_and_compiles_once covers the chunked runner by default
def test_cnn_runner_chunks_under_a_memory_cap_and_matches_unchunked(tiny_cnn, key):
    space, cfg, trainer, data = tiny_cnn
    s = 4
    keys = jax.random.split(key, s)
    pos = jax.random.uniform(jax.random.key(1), (s, space.num_dims))
    est = _cnn_estimate(trainer, cfg, s, data, space)
    assert est["eval_chunk"] > est["gradients"] + est["activations"]  # evaluation-dominated
    whole = scale.make_swarm_runner(trainer.train_member, log=None, estimate=est)
    ma = whole.memory_analysis(keys, pos, data)
    # A tiny evaluation-dominated network: the estimate errs high (the CNN's memory_terms comment).
    assert 0.8 <= est["total"] / ma["total"] <= 2.0, (est["total"], ma)
    assert whole.plan(s).num_chunks == 1
    ref = whole(keys, pos, data)
    logs = []
    cap = est["shared"] + 2 * est["per_member"] + est["per_member"] // 2  # room for 2 of the 4 members
    chunked = scale.make_swarm_runner(trainer.train_member, memory_cap_bytes=cap, estimate=est, log=logs.append)
    got = chunked(keys, pos, data)
    assert chunked.plan(s) == scale.SwarmPlan(4, 1, 2, 2)
    assert any("chunked because estimated" in line and "(memory cap)" in line for line in logs)
    ma_chunked = chunked.memory_analysis(keys, pos, data)  # the program just run: no new compile
    assert ma_chunked["total"] < ma["total"]
    assert 0.8 <= _cnn_estimate(trainer, cfg, 2, data, space)["total"] / ma_chunked["total"] <= 2.0, ma_chunked
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(b, np.float64), np.asarray(a, np.float64), atol=1e-5)


def test_device_memory_bytes_is_a_fraction_of_physical_ram():
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    b = scale.device_memory_bytes(jax.local_devices()[0])
    assert 0 < b <= physical
    assert scale.device_memory_bytes(fraction=0.1) < b


# -- runner in this process (one device) -------------------------------------


def test_chunked_equals_unchunked_and_compiles_once(tiny, key):
    space, _, trainer, data = tiny
    traces = []

    def member(k, p, d):
        traces.append(1)
        return trainer.train_member(k, p, d)

    logs = []
    runner = scale.make_swarm_runner(member, chunk_size=2, log=logs.append)
    s = 5
    keys = jax.random.split(key, s)
    pos = jax.random.uniform(jax.random.key(1), (s, space.num_dims))
    ref = jax.jit(jax.vmap(trainer.train_member, in_axes=(0, 0, None)))(keys, pos, data)
    got = runner(keys, pos, data)
    assert runner.plan(s) == scale.SwarmPlan(5, 1, 2, 3)
    assert any("3 chunk(s) of 2" in line and "padded with 1" in line for line in logs)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(b, np.float64), np.asarray(a, np.float64), atol=1e-5)
    n = len(traces)
    for r in range(2):  # new round, new positions: nothing is traced or compiled again
        runner(jax.random.split(jax.random.key(r + 5), s), jax.random.uniform(jax.random.key(r), pos.shape), data)
    assert len(traces) == n


# -- fake devices and multi-host (subprocesses) -------------------------------


# The 4-fake-device subprocess takes ~75 s: its checks run with `-m slow`. By default the two-process
# study below covers sharding (4 devices over 2 processes, sharded and packed equal one device).
FAKE4 = pytest.mark.slow


@pytest.fixture(scope="module")
def fake4():
    proc = subprocess.run([sys.executable, str(HERE / "scale_fake_devices.py")], env=_env(4),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _result(proc.stdout)


@FAKE4
def test_sharded_equals_unsharded_on_4_fake_devices_uneven_swarm(fake4):
    assert fake4["num_devices"] == 4
    assert fake4["sharded_plan_S6"] == [6, 4, 2, 1]  # 6 members over 4 devices: 2 pad rows
    assert fake4["sharded_shape_S6"] == [6]  # pad rows dropped
    assert fake4["fitness_sharding_S6"] == "P()"  # metrics replicated for the host
    assert fake4["sharded_vs_unsharded_S6"] < 1e-5


@FAKE4
def test_chunked_equals_unchunked_on_4_fake_devices(fake4):
    assert fake4["chunked_plan_S6"] == [6, 4, 1, 2]  # the memory cap forced chunks of one ...
    assert fake4["chunked_vs_unchunked_S6"] < 1e-5  # ... and the results did not change
    assert any("chunked because estimated" in line for line in fake4["logs"])


@FAKE4
def test_sharded_runner_compiles_once(fake4):
    assert fake4["traces_after_first_round"] == 1
    assert fake4["traces_after_four_rounds"] == 1


@FAKE4
def test_warm_state_is_donated_and_updated_in_place(fake4):
    assert fake4["warm_metrics_diff"] < 1e-5 and fake4["warm_variables_diff"] < 1e-5
    assert fake4["warm_state_rows"] == 8  # kept padded and sharded for the next round
    assert fake4["warm_state_donated"]
    # XLA aliases the whole per-device state: a round holds one copy of it.
    assert fake4["warm_alias_bytes"] >= fake4["warm_state_bytes_per_device"]


@FAKE4
def test_estimate_matches_xla_for_sharded_program(fake4):
    assert 0.5 <= fake4["estimate_over_xla"] <= 3.0


@pytest.mark.slow  # ~50 s: two processes, each compiling; the fake-device tests above shard by default
def test_two_process_study_on_localhost():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, str(HERE / "multihost_worker.py"), "--coordinator", f"localhost:{port}",
               "--num-processes", "2", "--out", out]
        procs = [subprocess.Popen(cmd + ["--process-id", str(i)], env=_env(2), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = []
        try:
            for p in procs:
                stdout, stderr = p.communicate(timeout=240)
                assert p.returncode == 0, stderr[-3000:]
                outs.append(_result(stdout))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        files = sorted(os.listdir(out))
    assert [r["process_index"] for r in outs] == [0, 1]
    assert all(r["process_count"] == 2 and r["global_devices"] == 4 and r["local_devices"] == 2 for r in outs)
    assert outs[0]["best_fitness"] == outs[1]["best_fitness"]
    assert outs[0]["best_position"] == outs[1]["best_position"]
    assert files == ["result_0.json"]  # results written once, by the primary process
    # The packed layout over both processes' 4 devices: the same members as on one device.
    assert outs[0]["packed_fitness"] == outs[1]["packed_fitness"] and len(outs[0]["packed_fitness"]) == 6
    assert outs[0]["packed_vs_one_device"] < 1e-5 and outs[1]["packed_vs_one_device"] < 1e-5
    # The 4-device, 2-process study trains what a single process trains.
    spec = importlib.util.spec_from_file_location("multihost_worker", HERE / "multihost_worker.py")
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    local = worker.study()
    np.testing.assert_allclose(local["fitness_rounds"], outs[0]["fitness_rounds"], atol=1e-6)


@FAKE4
def test_packed_layout_dealt_over_4_fake_devices_equals_one_device(fake4):
    assert fake4["packed_tables_devices"] == 4  # one table set per device, one plan shape
    assert sorted(set(fake4["packed_order"])) == list(range(7)) and len(fake4["packed_order"]) == 8  # one pad place
    assert fake4["packed_sharded_shape"] == [7] and fake4["packed_fitness_sharding"] == "P()"
    assert fake4["packed_sharded_vs_one_device"] < 1e-5
    assert fake4["packed_warm_metrics_diff"] < 1e-5 and fake4["packed_warm_variables_diff"] < 1e-5
    assert fake4["packed_new_traces_after_moves"] == 0


@FAKE4
def test_packed_study_over_4_fake_devices_chunks_without_changing_results(fake4):
    assert "over 4 device(s), 2 chunk(s) of up to 1 per device" in fake4["packed_study_describe"]
    assert len(fake4["packed_study_fitness"]) == 6  # 6 members, one round
    assert fake4["packed_study_chunked_fitness"] == fake4["packed_study_fitness"]
    assert fake4["auto_on_4_devices"] == "packed"  # a Fashion-MNIST-sized MLP study packs on several CPU devices too
