"""``layout="auto"``: the study's layout picked once, from the backend and a cost estimate.

The rule, in order (the first that applies decides; the reason is logged once):

1. An accelerator backend (GPU/TPU) takes ``masked``: one wide vmapped
   program keeps the device busy, and no packed figure has been measured on
   a GPU yet (bench/results/).
2. A CNN on CPU takes ``serial`` (each member runs only its own blocks,
   kernel window and filter bucket: 2.6x faster training than masked in
   bench/results/cnn_bench.md) when the training that saves outweighs the
   serial program's longer compile (`SERIAL_COMPILE_S`), else ``masked``.
3. An MLP study on CPU takes ``packed`` when the training it saves outweighs
   the programs it compiles: the masked layout computes every member at its
   family's maximum size, the packed one close to its real size, and on 2
   CPU cores the arithmetic is the time (bench/results/trainer_cpu*.md).
   Saved seconds = rounds x epochs x examples x 3 x (max-size FLOPs - real
   FLOPs / `PACKED_EFFICIENCY`) x S / `CPU_FLOPS` / processes (hosts train
   their shares side by side), the real FLOPs the mean over `SAMPLE`
   positions drawn from the space; the price is `PACKED_COMPILE_S` per
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

from typing import Any

import jax
import numpy as np

from jaxswarm import train
from jaxswarm.layouts import packed, serial
from jaxswarm.layouts.masked import DataShape
from jaxswarm.models import ModelFamily, cnn, mlp
from jaxswarm.space import SearchSpace

__all__ = ["CPU_FLOPS", "PACKED_EFFICIENCY", "PACKED_COMPILE_S", "SERIAL_COMPILE_S", "SAMPLE",
           "expected_programs", "packed_saving", "serial_saving", "choose"]

CPU_FLOPS = packed.CPU_FLOPS  # a conservative training rate of the 2-core CPUs here
PACKED_EFFICIENCY = 0.8  # useful / computed FLOPs of a packed plan (0.77-0.89 measured)
PACKED_COMPILE_S = packed.COMPILE_S  # one packed program on XLA:CPU (masked: 2-5 s)
SERIAL_COMPILE_S = 50.0  # what the serial CNN program takes longer to compile (60 s vs 9 s, default cnn_space)
SAMPLE = 256  # positions drawn from the space for the expected real network size


def expected_programs(rounds: int) -> int:
    """Packed programs a study of `rounds` is expected to compile (one, then one every other round)."""
    return 1 + rounds // 2


def _sampled_archs(family: ModelFamily, space: SearchSpace, cfg) -> list[dict]:
    """The architecture dicts of `SAMPLE` positions drawn from the space, decoded by the family (one small jit)."""
    positions = np.random.default_rng(0).random((SAMPLE, space.num_dims), dtype=np.float32)
    arch_S = jax.tree.map(np.asarray, jax.jit(jax.vmap(family.decode(space, cfg)))(positions)[0])
    return [family.arch_to_python(jax.tree.map(lambda a: a[i], arch_S)) for i in range(SAMPLE)]


def _training_seconds(flops_per_example: float, config: Any, n_train: int) -> float:
    """Seconds a study's S members spend on `flops_per_example` (forward) in training, at `CPU_FLOPS`."""
    examples = config.rounds * config.epochs * config.folds * n_train
    return 3 * flops_per_example * examples * config.swarm_size / CPU_FLOPS  # forward + backward: 3x


def packed_saving(family: ModelFamily, space: SearchSpace, data_shape: DataShape, config: Any,
                  n_train: int) -> tuple[float, float]:
    """``(seconds the packed layout saves an MLP study in training, seconds its compiles cost)`` on CPU."""
    cfg = family.config(space, data_shape.in_features, data_shape.num_classes, None, False)
    real = np.mean([mlp.useful_flops(a, cfg.in_features, cfg.num_classes) for a in _sampled_archs(family, space, cfg)])
    saved = _training_seconds(mlp.computed_flops(cfg) - real / PACKED_EFFICIENCY, config, n_train)
    trainers = max(1, len(train.batch_choices(space)))  # one packed trainer per batch size
    return saved, PACKED_COMPILE_S * expected_programs(config.rounds) * trainers


def serial_saving(family: ModelFamily, space: SearchSpace, data_shape: DataShape, config: Any,
                  n_train: int) -> tuple[float, float]:
    """``(seconds the serial layout saves a CNN study in training, its extra compile seconds)`` on CPU."""
    args = (space, data_shape.in_features, data_shape.num_classes, data_shape.input_shape)
    masked_cfg, serial_cfg = family.config(*args, False), family.config(*args, True)
    runs = np.mean([cnn.computed_flops_cnn(serial_cfg, a) for a in _sampled_archs(family, space, serial_cfg)])
    return _training_seconds(cnn.computed_flops_cnn(masked_cfg) - runs, config, n_train), SERIAL_COMPILE_S


def choose(family: ModelFamily, space: SearchSpace, config: Any, data_shape: DataShape, n_train: int,
           backend: str | None = None) -> tuple[str, str]:
    """``(layout name, the reason)`` that ``layout="auto"`` trains this study with.

    Args:
        family, space, config: the study's model family, space and `study.StudyConfig`.
        data_shape: the data's `DataShape`.
        n_train: training examples per fold.
        backend: ``jax.default_backend()`` when None.
    """
    backend = jax.default_backend() if backend is None else backend
    if backend != "cpu":
        return "masked", f"backend {backend}: one wide vmapped program keeps an accelerator busy"
    if family.name == "cnn" and serial.supports(family, space, config) is None:
        saved, cost = serial_saving(family, space, data_shape, config, n_train)
        if saved > cost:
            return "serial", (f"on CPU, CNN members running only their own blocks save an estimated {saved:.0f}s "
                              f"of training for about {cost:.0f}s of longer compile")
        return "masked", (f"on CPU, the serial CNN layout would save an estimated {saved:.0f}s of training "
                          f"but compile about {cost:.0f}s longer")
    why_not = packed.supports_study(family, space, config)
    if why_not is not None:
        return "masked", f"{why_not.split(';')[0]}"
    saved, cost = packed_saving(family, space, data_shape, config, n_train)
    saved /= jax.process_count()
    if saved > cost:
        return "packed", (f"on CPU, packing members near their real size saves an estimated {saved:.0f}s of "
                          f"training for about {cost:.0f}s of compiles")
    rejected = f"packing would save an estimated {saved:.0f}s of training but cost about {cost:.0f}s of compiles"
    if len(train.batch_choices(space)) > 1 and serial.supports(family, space, config) is None:
        return "serial", f"on CPU, {rejected}; members one at a time skip the chunks on which they make no update"
    return "masked", f"on CPU, {rejected}"

