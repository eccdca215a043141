"""Swarm layouts: how the members of one round are laid out as compiled programs.

A `Layout` says whether it can train a study (`supports`, a reason when it
cannot) and builds the round's `SwarmProgram` (`build`). The study picks one
from `LAYOUTS` by name, once, and only ever calls the program it got:

  masked   every member is the family's max-size network with masks, vmapped
           (one program per study; every option works).
  serial   the members one after another in ONE program (a scan, no vmap), so
           each runs only its own branches (the CNN's layout on CPU).
  packed   MLP members share each minibatch; their first layers are one matmul
           and the deeper layers run in a few width groups (every MLP option,
           warm mode, memory chunks and several devices; a batch_size
           choice: one packed trainer per size).

``"auto"`` (the default) is not a layout but a choice among them, made once
per study from the backend and a cost estimate at the study's
`costs.CostModel` (`auto.choose`); `resolve` turns any name into the
`Layout` and the reason it was picked, which names the cost model weighed.

A new layout is one file in this folder and one line in `LAYOUTS`.

Example:
    >>> sorted(LAYOUTS), LAYOUT_NAMES[0]
    (['masked', 'packed', 'serial'], 'auto')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from jaxswarm.layouts import auto, masked, packed, serial
from jaxswarm.layouts.masked import DataShape, SwarmProgram

__all__ = ["Layout", "SwarmProgram", "LAYOUTS", "LAYOUT_NAMES", "DEFAULT_LAYOUT", "resolve"]


class Layout(NamedTuple):
    """One way to lay out a swarm.

    Attributes:
        name: registry key (``--layout``).
        supports: ``(family, space, config) -> str | None``: why the layout
            cannot train this study (``config`` is the `study.StudyConfig`), or None.
        build: ``(family, space, train_config, data_shape, config, estimate, log) -> SwarmProgram``.
    """

    name: str
    supports: Callable
    build: Callable


LAYOUTS: dict[str, Layout] = {
    "masked": Layout("masked", masked.supports, masked.build),
    "serial": Layout("serial", serial.supports, serial.build),
    "packed": Layout("packed", packed.supports_study, packed.build),
}
LAYOUT_NAMES: tuple[str, ...] = ("auto", *LAYOUTS)  # what ``StudyConfig.layout`` / ``--layout`` accept
DEFAULT_LAYOUT = "auto"


def resolve(name: str, family, space, config, data_shape: DataShape, n_train: int) -> tuple[Layout, str]:
    """The `Layout` a study named `name` trains with, and why (``"auto"`` asks `auto.choose`, which weighs
    ``costs.of(config)``; the reason says which cost model)."""
    if name == "auto":
        chosen, reason = auto.choose(family, space, config, data_shape, n_train)
        return LAYOUTS[chosen], f"layout auto -> {chosen}: {reason}"
    return LAYOUTS[name], f"layout {name} (asked for)"
