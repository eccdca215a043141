"""Per-round study checkpoints with orbax (atomic: orbax writes to a temporary directory and renames).

A checkpoint holds the PSO state, the early-stopping counters and, in warm
mode, every member's weights. Keys are not stored: round r's keys are derived
from the seed (`tuner.Study._round_keys`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np


class Checkpointer:
    """Saves one pytree per finished round (the step is the number of rounds done)."""

    def __init__(self, directory: Path, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def save(self, step: int, tree: Any) -> None:
        tree = jax.tree.map(np.asarray, tree)
        self.manager.save(step, args=self._ocp.args.StandardSave(tree))
        self.manager.wait_until_finished()

    def restore_latest(self, template: Any) -> tuple[int, Any] | None:
        """(step, tree) of the newest complete checkpoint, or None when there is none."""
        step = self.manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), template)
        tree = self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        return int(step), tree

    def close(self) -> None:
        self.manager.close()
