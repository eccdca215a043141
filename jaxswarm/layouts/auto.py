"""``layout="auto"``: the study's layout picked once, from the backend and a cost estimate.

The rule, in order (the first that applies decides; the reason is logged once):

1. An accelerator backend (GPU/TPU) takes ``masked``: one wide vmapped
   program keeps the device busy, and no packed figure has been measured on
   a GPU yet (bench/results/).
2. A study the ``packed`` layout cannot train (a CNN, warm mode, several
   devices, ...) takes ``serial`` for a CNN on CPU (each member runs only its
   own branches; bench/results/cnn_bench.md) and ``masked`` otherwise.
3. An MLP study on CPU takes ``packed`` when the training it saves outweighs
   the programs it compiles: the masked layout computes every member at its
   family's maximum size, the packed one close to its real size, and on 2
   CPU cores the arithmetic is the time (bench/results/trainer_cpu*.md).
   Saved seconds = rounds x epochs x examples x 3 x (max-size FLOPs - real
   FLOPs / `PACKED_EFFICIENCY`) x S / `CPU_FLOPS`, the real FLOPs the mean
   over `SAMPLE` positions drawn from the space; the price is
   `PACKED_COMPILE_S` per program, `expected_programs(rounds)` of them.

Example:
    >>> expected_programs(1), expected_programs(10)
    (1, 6)
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxswarm.layouts import packed, serial
from jaxswarm.layouts.masked import DataShape
from jaxswarm.models import ModelFamily, mlp
from jaxswarm.space import SearchSpace

__all__ = ["CPU_FLOPS", "PACKED_EFFICIENCY", "PACKED_COMPILE_S", "SAMPLE", "expected_programs",
           "packed_saving", "choose"]

CPU_FLOPS = packed.CPU_FLOPS  # a conservative training rate of the 2-core CPUs here
PACKED_EFFICIENCY = 0.8  # useful / computed FLOPs of a packed plan (0.77-0.89 measured)
PACKED_COMPILE_S = packed.COMPILE_S  # one packed program on XLA:CPU (masked: 2-5 s)
SAMPLE = 256  # positions drawn from the space for the expected real network size


def expected_programs(rounds: int) -> int:
    """Packed programs a study of `rounds` is expected to compile (one, then one every other round)."""
    return 1 + rounds // 2


def packed_saving(space: SearchSpace, data_shape: DataShape, config: Any, n_train: int) -> tuple[float, float]:
    """``(seconds the packed layout saves in training, seconds its compiles cost)`` on CPU."""
    cfg = mlp.config(space, data_shape.in_features, data_shape.num_classes)
    positions = np.random.default_rng(0).random((SAMPLE, space.num_dims), dtype=np.float32)  # host: nothing to compile
    real = np.mean([mlp.useful_flops(mlp_arch(space, p), cfg.in_features, cfg.num_classes) for p in positions])
    per_example = mlp.computed_flops(cfg) - real / PACKED_EFFICIENCY
    examples = config.rounds * config.epochs * config.folds * n_train
    saved = 3 * per_example * examples * config.swarm_size / CPU_FLOPS
    return saved, PACKED_COMPILE_S * expected_programs(config.rounds)


def mlp_arch(space: SearchSpace, position_D) -> dict:
    """The architecture dict (``n_layers``, ``units``) of a position, as `mlp.useful_flops` reads it."""
    values = space.to_python(position_D)
    n = int(values.get("n_layers", 1))
    return {"n_layers": n, "units": [int(values[f"units_{k}"]) for k in range(1, n + 1)]}


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
    why_not = packed.supports_study(family, space, config)
    if why_not is None and len(jax.devices()) > 1:
        why_not = f"the packed layout runs on one device, and {len(jax.devices())} are present"
    if why_not is not None:
        if family.name == "cnn" and serial.supports(family, space, config) is None:
            return "serial", f"on CPU a CNN member runs only its own branches ({why_not.split(';')[0]})"
        return "masked", f"{why_not.split(';')[0]}"
    saved, cost = packed_saving(space, data_shape, config, n_train)
    if saved > cost:
        return "packed", (f"on CPU, packing members near their real size saves an estimated {saved:.0f}s of "
                          f"training for about {cost:.0f}s of compiles")
    return "masked", (f"on CPU, packing would save an estimated {saved:.0f}s of training but cost about "
                      f"{cost:.0f}s of compiles")

