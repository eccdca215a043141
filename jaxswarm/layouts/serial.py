"""The serial layout: members one after another inside ONE compiled program.

A `lax.scan` over members (no vmap; `execute`'s runner with chunks of one), so
each member's conditionals run one branch: a CNN member runs only its own
blocks, kernel window, filter bucket and head (`CNNConfig.branching`). Still
one compile per study, a longer one. The CNN's layout on CPU; the MLP
computes exactly what the masked layout computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaxswarm.layouts.masked import DataShape, SwarmProgram, build_runners
from jaxswarm.models import ModelFamily
from jaxswarm.space import SearchSpace
from jaxswarm.train import TrainConfig

__all__ = ["supports", "build"]


def supports(family: ModelFamily, space: SearchSpace, config: Any) -> str | None:
    """Serial trains one member at a time: any chunk size but 1 is a contradiction."""
    if config.chunk_size not in (None, 1):
        return f"layout 'serial' trains one member at a time; chunk_size must be 1 or None, got {config.chunk_size}"
    return None


def build(family: ModelFamily, space: SearchSpace, train_config: TrainConfig, data_shape: DataShape,
          config: Any, estimate: dict, log: Callable) -> SwarmProgram:
    """The serial layout's `SwarmProgram` (branching members, one at a time)."""
    return build_runners(family, space, train_config, data_shape, config, estimate, log,
                         branching=True, chunk_size=1)
