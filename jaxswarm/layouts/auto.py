"""``layout="auto"``: the study's layout picked once, from the backend and a cost estimate.

The estimate weighs the study's `costs.CostModel` (``StudyConfig.cost_model``,
else the machine's: `costs.load`); `calibrate` measures one. The rule, in
order (the first that applies decides; the reason, with the cost model it
weighed, is logged once):

1. An accelerator backend (GPU/TPU) takes ``masked``: one wide vmapped
   program keeps the device busy, and no packed figure has been measured on
   a GPU yet (bench/results/).
2. A CNN on CPU takes ``serial`` (each member runs only its own blocks,
   kernel window and filter bucket: 2.6x faster training than masked in
   bench/results/cnn_bench.md) when the training that saves outweighs the
   serial program's longer compile (``serial_compile_s``), else ``masked``.
3. An MLP study on CPU takes ``packed`` when the training it saves outweighs
   the programs it compiles: the masked layout computes every member at its
   family's maximum size, the packed one close to its real size, and on a
   CPU the arithmetic is the time (bench/results/trainer_cpu*.md).
   Saved seconds = rounds x epochs x examples x 3 x (max-size FLOPs - real
   FLOPs / ``packed_efficiency``) x S / ``train_flops`` / processes (hosts
   train their shares side by side), the real FLOPs the mean over `SAMPLE`
   positions drawn from the space; the price is ``packed_compile_s`` per
   program, `expected_programs(rounds)` of them (every host compiles them
   at once), times the batch sizes a ``batch_size`` choice offers (one
   packed trainer per size). Both layouts deal the members to every device.
4. Else an MLP space with a ``batch_size`` choice takes ``serial``: members
   one at a time really skip the chunks on which they make no update (under
   vmap every member evaluates its optimizer on every chunk): 17.5 s against
   masked's 33.7 s for 32 mixed members (bench/results/batch_cpu.md).

Example:
    >>> expected_programs(1), expected_programs(10)
    (1, 6)
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxswarm import costs, train
from jaxswarm.layouts import packed, serial
from jaxswarm.layouts.masked import DataShape
from jaxswarm.models import ModelFamily, cnn, mlp, mlp_space
from jaxswarm.space import SearchSpace

__all__ = ["SAMPLE", "expected_programs", "packed_saving", "serial_saving", "choose", "calibrate"]

SAMPLE = 256  # positions drawn from the space for the expected real network size


def expected_programs(rounds: int) -> int:
    """Packed programs a study of `rounds` is expected to compile (one, then one every other round)."""
    return 1 + rounds // 2


def _sampled_archs(family: ModelFamily, space: SearchSpace, cfg) -> list[dict]:
    """The architecture dicts of `SAMPLE` positions drawn from the space, decoded by the family (one small jit)."""
    positions = np.random.default_rng(0).random((SAMPLE, space.num_dims), dtype=np.float32)
    arch_S = jax.tree.map(np.asarray, jax.jit(jax.vmap(family.decode(space, cfg)))(positions)[0])
    return [family.arch_to_python(jax.tree.map(lambda a: a[i], arch_S)) for i in range(SAMPLE)]


def _training_seconds(flops_per_example: float, config: Any, n_train: int, model: costs.CostModel) -> float:
    """Seconds a study's S members spend on `flops_per_example` (forward) in training, at ``model.train_flops``."""
    examples = config.rounds * config.epochs * config.folds * n_train
    return 3 * flops_per_example * examples * config.swarm_size / model.train_flops  # forward + backward: 3x


def packed_saving(family: ModelFamily, space: SearchSpace, data_shape: DataShape, config: Any,
                  n_train: int) -> tuple[float, float]:
    """``(seconds the packed layout saves an MLP study in training, seconds its compiles cost)`` on CPU,
    at the figures of the study's cost model (`costs.of(config)`)."""
    model = costs.of(config)
    cfg = family.config(space, data_shape.in_features, data_shape.num_classes, None, False)
    real = np.mean([mlp.useful_flops(a, cfg.in_features, cfg.num_classes) for a in _sampled_archs(family, space, cfg)])
    saved = _training_seconds(mlp.computed_flops(cfg) - real / model.packed_efficiency, config, n_train, model)
    trainers = max(1, len(train.batch_choices(space)))  # one packed trainer per batch size
    return saved, model.packed_compile_s * expected_programs(config.rounds) * trainers


def serial_saving(family: ModelFamily, space: SearchSpace, data_shape: DataShape, config: Any,
                  n_train: int) -> tuple[float, float]:
    """``(seconds the serial layout saves a CNN study in training, its extra compile seconds)`` on CPU,
    at the figures of the study's cost model (`costs.of(config)`)."""
    model = costs.of(config)
    args = (space, data_shape.in_features, data_shape.num_classes, data_shape.input_shape)
    masked_cfg, serial_cfg = family.config(*args, False), family.config(*args, True)
    runs = np.mean([cnn.computed_flops_cnn(serial_cfg, a) for a in _sampled_archs(family, space, serial_cfg)])
    return _training_seconds(cnn.computed_flops_cnn(masked_cfg) - runs, config, n_train, model), model.serial_compile_s


def choose(family: ModelFamily, space: SearchSpace, config: Any, data_shape: DataShape, n_train: int,
           backend: str | None = None) -> tuple[str, str]:
    """``(layout name, the reason)`` that ``layout="auto"`` trains this study with.

    Args:
        family, space, config: the study's model family, space and `study.StudyConfig`; its
            ``cost_model`` (`costs.of`) prices training and compiles, and the reason names it.
        data_shape: the data's `DataShape`.
        n_train: training examples per fold.
        backend: ``jax.default_backend()`` when None.
    """
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return "masked", f"backend {backend}: one wide vmapped program keeps an accelerator busy"
    weighed = f" ({costs.describe(costs.of(config))})"
    if family.name == "cnn" and serial.supports(family, space, config) is None:
        saved, cost = serial_saving(family, space, data_shape, config, n_train)
        if saved > cost:
            return "serial", (f"on CPU, CNN members running only their own blocks save an estimated {saved:.0f}s "
                              f"of training for about {cost:.0f}s of longer compile{weighed}")
        return "masked", (f"on CPU, the serial CNN layout would save an estimated {saved:.0f}s of training "
                          f"but compile about {cost:.0f}s longer{weighed}")
    why_not = packed.supports_study(family, space, config)
    if why_not is not None:
        return "masked", f"{why_not.split(';')[0]}"
    saved, cost = packed_saving(family, space, data_shape, config, n_train)
    saved /= jax.process_count()
    if saved > cost:
        return "packed", (f"on CPU, packing members near their real size saves an estimated {saved:.0f}s of "
                          f"training for about {cost:.0f}s of compiles{weighed}")
    rejected = f"packing would save an estimated {saved:.0f}s of training but cost about {cost:.0f}s of compiles"
    if len(train.batch_choices(space)) > 1 and serial.supports(family, space, config) is None:
        return "serial", (f"on CPU, {rejected}; members one at a time skip the chunks on which they make no "
                          f"update{weighed}")
    return "masked", f"on CPU, {rejected}{weighed}"


# --------------------------------------------------------------------------
# Calibration: this machine's cost model (`jaxswarm calibrate`)
# --------------------------------------------------------------------------


class _Probe(NamedTuple):
    """The sizes `calibrate` measures at: a realistic study's, or a CI smoke test's (``tiny``)."""

    widths: tuple[int, ...]  # the timed MLP's layers, inputs to classes
    batch: int  # its minibatch
    steps: int  # training steps per timed call (one lax.scan)
    repeats: int  # timed calls; the best counts
    space: SearchSpace  # the packed program's space
    members: int  # its swarm
    rows: int  # its training rows: the plan rules weigh a compile against rows x epochs of training
    epochs: int  # its epochs


def _probe(tiny: bool) -> _Probe:
    # The first-layer-heavy MLP step of an image study (Fashion-MNIST's 784 inputs, batch 128), and the
    # packed program of bench_trainer.py's N = 32 row: the default space, about one epoch of 54,000 rows.
    # Tiny: the same step timed briefly, and the smallest packed program (its compile is a rough figure).
    widths, batch = (784, 256, 256, 10), 128
    if tiny:
        return _Probe(widths, batch, 5, 2, mlp_space(max_layers=1, units=(4, 8), activations=("relu",)), 2, batch, 1)
    return _Probe(widths, batch, 50, 3, mlp_space(), 32, 2048, 27)


def calibrate(tiny: bool = False, log: Callable[[str], None] | None = None) -> costs.CostModel:
    """Measures this machine's `costs.CostModel` in seconds (`costs.save` stores it, `costs.load` reads it).

    Measured: ``train_flops`` (a jitted MLP training step, FLOPs counted from
    its shapes) and ``packed_compile_s`` (one packed swarm program, compiled
    with no compilation cache); ``span_compile_s`` and ``group_compile_s``
    scale with the latter as the built-in figures do. ``serial_compile_s``
    stays built-in (measuring it compiles two CNN programs: minutes) and so
    does ``packed_efficiency`` (a property of the plans, not of the
    machine); ``source`` says so. Measure on a quiet machine: a busy one
    makes every figure pessimistic.

    Args:
        tiny: a brief timing and the smallest packed program, to check the path (CI); its compile
            figure is rough.
        log: called with a line before each measurement (e.g. ``print``).

    Returns:
        The measured model.

    Example:
        >>> model = calibrate(tiny=True)  # doctest: +SKIP
        >>> costs.save(model)  # where studies read it  # doctest: +SKIP
    """
    log = log or (lambda line: None)
    probe = _probe(tiny)
    persistent = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)  # a cached program would compile in no time
    try:
        log(f"timing a {'-'.join(map(str, probe.widths))} MLP training step, batch {probe.batch}")
        flops = _train_flops(probe)
        log(f"compiling a packed program of {probe.members} members")
        compile_s = _packed_compile_seconds(probe)
    finally:
        jax.config.update("jax_enable_compilation_cache", persistent)
    scale = compile_s / costs.BUILTIN.packed_compile_s  # compiles on this machine against the built-in's
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, {jax.default_backend()}"
    return costs.BUILTIN._replace(
        train_flops=flops, packed_compile_s=compile_s, span_compile_s=costs.BUILTIN.span_compile_s * scale,
        group_compile_s=costs.BUILTIN.group_compile_s * scale,
        source=f"calibrated{' --tiny' if tiny else ''} {datetime.date.today().isoformat()} on {machine}; "
               "serial compile built-in")


def _train_flops(probe: _Probe) -> float:
    """FLOP/s of `probe`'s MLP training (forward + backward + Adam) in a lax.scan, best of its repeats."""
    rng = np.random.default_rng(0)
    params = [(jnp.asarray(rng.normal(0, n_in ** -0.5, (n_in, n_out)), jnp.float32), jnp.zeros(n_out))
              for n_in, n_out in zip(probe.widths[:-1], probe.widths[1:])]
    x_TxBxF = jnp.asarray(rng.random((probe.steps, probe.batch, probe.widths[0]), np.float32))
    y_TxB = jnp.asarray(rng.integers(0, probe.widths[-1], (probe.steps, probe.batch)), jnp.int32)
    adam = optax.adam(1e-3)

    def loss(params, x_BxF, y_B):
        h = x_BxF
        for kernel, bias in params[:-1]:
            h = jax.nn.relu(h @ kernel + bias)
        logits_BxC = h @ params[-1][0] + params[-1][1]
        return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, y_B).mean()

    def step(carry, batch):
        params, opt_state = carry
        updates, opt_state = adam.update(jax.grad(loss)(params, *batch), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    run = jax.jit(lambda carry, x, y: jax.lax.scan(step, carry, (x, y))[0])
    carry = (params, adam.init(params))
    jax.block_until_ready(run(carry, x_TxBxF, y_TxB))  # compile
    best = np.inf
    for _ in range(probe.repeats):
        t = time.perf_counter()
        jax.block_until_ready(run(carry, x_TxBxF, y_TxB))
        best = min(best, time.perf_counter() - t)
    matmuls = sum(a * b for a, b in zip(probe.widths[:-1], probe.widths[1:]))  # multiply-adds per example
    return 3 * 2 * matmuls * probe.batch * probe.steps / best  # forward + backward: 3x


def _packed_compile_seconds(probe: _Probe) -> float:
    """Seconds `packed.make_packed_train(...).compile` takes for `probe`'s swarm (planning included)."""
    features, classes = probe.widths[0], probe.widths[-1]
    rng = np.random.default_rng(0)
    x = rng.random((probe.rows + probe.batch, features), np.float32)
    y = rng.integers(0, classes, probe.rows + probe.batch).astype(np.int32)
    data = train.device_data(x[:probe.rows], y[:probe.rows], x[probe.rows:], y[probe.rows:])
    config = train.TrainConfig(epochs=probe.epochs, batch_size=probe.batch)
    positions_SxD = jnp.asarray(rng.random((probe.members, probe.space.num_dims), np.float32))
    keys = jax.random.split(jax.random.key(0), probe.members)
    trainer = packed.make_packed_train(probe.space, config, features, classes)
    t = time.perf_counter()
    trainer.compile(keys, positions_SxD, data, jax.random.key(1))
    return time.perf_counter() - t
