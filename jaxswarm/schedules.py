"""Multi-fidelity schedules: which members of a round go on training, and for how long.

A schedule cuts a round's training into rungs. Every member trains the first
rung's epochs; the best ``1/eta`` of them (by validation fitness) continue from
their own weights and optimizer state to the next rung, and so on until the
study's ``epochs`` (the top rung). The members that go on are gathered into a
smaller swarm, so a stopped member costs nothing more (`study.Study` trains
each rung as its own program: one per rung size, compiled once per study).

  none       every member trains all the epochs (one rung).
  sha        successive halving: rungs at ``epochs // eta**i`` epochs down to
             ``min_epochs``; ``S``, ``S // eta``, ``S // eta**2``, ... members.
  hyperband  successive halving with a different ``min_epochs`` each round,
             cycling over Hyperband's brackets from the most aggressive
             (``epochs / eta**s_max``) to plain training (``epochs``). The
             swarm size stays S in every bracket (classic Hyperband varies it).

The fitness the strategy is told compares like with like (`scores`): a member
stopped at a lower rung ranks below every member that went further, by
``(top - rung) * span`` (span: the fitness's range, 1 for accuracy,
`train.DIVERGED_LOSS` for minus the loss), and the members of the top rung are
told their own fitness. With ``S >= eta ** (rungs - 1)`` some member reaches
the top rung every round, so the study's best is a fully trained member's.

Example:
    >>> [tuple(r) for r in rungs(27, min_epochs=1, max_epochs=9, eta=3)]
    [(1, 27), (3, 9), (9, 3)]
    >>> brackets(min_epochs=1, max_epochs=9, eta=3)
    [1, 3, 9]
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["SCHEDULES", "Rung", "rungs", "brackets", "round_rungs", "survivors", "scores", "check"]

SCHEDULES: tuple[str, ...] = ("none", "sha", "hyperband")
LOSS_SPAN = 1e3  # train.DIVERGED_LOSS: minus a finite (not diverged) loss lies in [-LOSS_SPAN, 0]


class Rung(NamedTuple):
    """One rung of a round: its members train until `epochs` (counted from the round's start)."""

    epochs: int
    members: int


def check(schedule: str, eta: int, min_epochs: int | None, max_epochs: int) -> None:
    """Raises ValueError naming the first bad setting."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if isinstance(eta, bool) or not isinstance(eta, (int, np.integer)) or eta < 2:
        raise ValueError(f"eta must be an integer >= 2, got {eta!r}")
    if min_epochs is not None and (isinstance(min_epochs, bool) or not isinstance(min_epochs, (int, np.integer))
                                   or not 1 <= min_epochs <= max_epochs):
        raise ValueError(f"min_epochs must be an integer from 1 to epochs ({max_epochs}), got {min_epochs!r}")


def rungs(swarm_size: int, min_epochs: int, max_epochs: int, eta: int) -> list[Rung]:
    """Successive halving's rungs: epochs ``max_epochs // eta**i`` down to `min_epochs`, members ``S // eta**i``.

    Counted from the top, as Hyperband does, so the last step is a full factor
    `eta` (10 epochs, eta 3: rungs at 1, 3 and 10). No rung is left with
    fewer than one member.
    """
    stops, e = [], max_epochs
    while e >= min_epochs and (not stops or e < stops[-1]):
        stops.append(e)
        e //= eta
    out, n = [], swarm_size
    for stop in reversed(stops):
        out.append(Rung(stop, n))
        n = max(1, n // eta)
    return out


def brackets(min_epochs: int, max_epochs: int, eta: int) -> list[int]:
    """Hyperband's brackets as each one's first rung (epochs), most aggressive first, the last `max_epochs`."""
    s_max = int(math.floor(math.log(max_epochs / min_epochs, eta) + 1e-9))
    return [max(min_epochs, max_epochs // eta**s) for s in range(s_max, -1, -1)]


def round_rungs(schedule: str, r: int, swarm_size: int, min_epochs: int | None, max_epochs: int,
                eta: int) -> list[Rung]:
    """The rungs of round `r` (``min_epochs`` None: ``max_epochs // eta**2``, at least 1)."""
    if schedule == "none":
        return [Rung(max_epochs, swarm_size)]
    low = max(1, max_epochs // eta**2) if min_epochs is None else min_epochs
    if schedule == "hyperband":
        options = brackets(low, max_epochs, eta)
        low = options[r % len(options)]
    return rungs(swarm_size, low, max_epochs, eta)


def survivors(fitness: np.ndarray, members: int) -> np.ndarray:
    """Indices of the `members` best of `fitness` (higher is better; ties: the lower index), best first."""
    order = np.argsort(-np.nan_to_num(np.asarray(fitness, np.float64), nan=-np.inf), kind="stable")
    return order[:members]


def scores(fitness: np.ndarray, rung: np.ndarray, top: int, kind: str) -> np.ndarray:
    """What the strategy is told: `fitness` less ``(top - rung) * span`` (see the module docstring)."""
    span = 1.0 if kind == "accuracy" else LOSS_SPAN
    fitness = np.asarray(fitness, np.float32)
    return (fitness - (top - np.asarray(rung)) * span).astype(np.float32)
