"""Multi-fidelity schedules: which members of a round go on training, and for how long.

A schedule cuts a round's training into rungs. Every member trains the first
rung's epochs; the best ``1/eta`` of them (by validation fitness) continue from
their own weights and optimizer state to the next rung, and so on until the
study's ``epochs`` (the top rung). The members that go on are gathered into a
smaller swarm, so a stopped member costs nothing more (`study.Study` trains
each rung as its own program: on masked and serial one per rung size,
compiled once per study; on packed one per plan shape, which serves every
rung it fits, of any size and span, and new shapes come only as the
survivors' architectures move out of the known ones).

  none       every member trains all the epochs (one rung).
  sha        successive halving: rungs at ``epochs // eta**i`` epochs down to
             ``min_epochs``; ``S``, ``S // eta``, ``S // eta**2``, ... members.
  hyperband  successive halving with a different ``min_epochs`` each round,
             cycling over Hyperband's brackets from the most aggressive
             (``epochs / eta**s_max``) to plain training (``epochs``). The
             swarm size stays S in every bracket (classic Hyperband varies it).
  pbt        population-based training: every member trains all the epochs,
             ``pbt_interval`` at a time; between spans the bottom
             ``pbt_fraction`` each continue from a copy of a random top
             member (weights, batch statistics, optimizer state: exploit) at
             its position moved by up to ``pbt_perturb`` per dimension
             (explore, `exploit`). The moved positions are the round's: the
             strategy is told their fitness (PSO's particles move there).

The fitness the strategy is told compares like with like (`scores`): a member
stopped at a lower rung ranks below every member that went further, by
``(top - rung) * span`` (span: the fitness's range, 1 for accuracy,
`train.DIVERGED_LOSS` for minus the loss), and the members of the top rung are
told their own fitness. With ``S >= eta ** (rungs - 1)`` some member reaches
the top rung every round, so the study's best is a fully trained member's.
There is no asynchronous variant (ASHA, asynchronous PBT): they exist so that
a worker need not wait for stragglers, and a rung's members here finish
together, in one program, so promoting as soon as a rung is full is already
what `sha` does.

Under PBT every member trains every epoch, and its fitness is told as it is;
a member's fitness then belongs to a schedule of hyperparameters (its
ancestors' before the last copy), and the study's retrain trains its last
position from scratch.

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

__all__ = ["SCHEDULES", "Rung", "Exploit", "rungs", "brackets", "round_rungs", "survivors", "scores", "check",
           "check_pbt", "pbt_interval", "exploit"]

SCHEDULES: tuple[str, ...] = ("none", "sha", "hyperband", "pbt")
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
    fitness = np.asarray(fitness, np.float32)
    if kind == "unbounded":  # your own task's objective: the round's finite range, plus one
        finite = fitness[np.isfinite(fitness)]
        span = 1.0 + (float(finite.max() - finite.min()) if finite.size else 0.0)
    else:
        span = 1.0 if kind == "accuracy" else LOSS_SPAN
    return (fitness - (top - np.asarray(rung)) * span).astype(np.float32)


class Exploit(NamedTuple):
    """One PBT exploit/explore step: where each member goes on from."""

    source: np.ndarray  # int[S]: the member whose state each member continues from (itself when it stays)
    positions: np.ndarray  # f32[S, D]: each member's position from now on


def check_pbt(interval: int | None, fraction: float, perturb: float, max_epochs: int) -> None:
    """Raises ValueError naming the first bad PBT setting."""
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, np.integer))
                                 or not 1 <= interval < max_epochs):
        raise ValueError(f"pbt_interval must be an integer from 1 to epochs - 1 ({max_epochs - 1}): PBT acts "
                         f"between spans of a round's epochs; got {interval!r}")
    for name, value, hi in (("pbt_fraction", fraction, 0.5), ("pbt_perturb", perturb, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < value <= hi:
            raise ValueError(f"{name} must be a number in (0, {hi}], got {value!r}")


def pbt_interval(interval: int | None, max_epochs: int) -> int:
    """The epochs between exploits (None: a quarter of the round's, at least 1)."""
    return max(1, max_epochs // 4) if interval is None else int(interval)


def exploit(fitness: np.ndarray, positions: np.ndarray, fraction: float, perturb: float,
            rng: np.random.Generator, same_architecture=None) -> Exploit:
    """PBT's exploit and explore: the bottom `fraction` each continue from a random member of the top `fraction`.

    The copied position moves by ``U(-perturb, perturb)`` in every dimension,
    clipped to the unit box. With `same_architecture` (``(a_NxD, b_NxD) ->
    bool[N]``: do rows a and b decode to networks of the same shapes), a
    dimension whose move would change the copied network's architecture
    stays where the source had it, tried one dimension at a time in order, so
    the copied weights carry over; without it, every dimension moves and a
    member whose architecture changed starts from new weights (the caller's
    part).
    """
    fitness = np.nan_to_num(np.asarray(fitness, np.float64), nan=-np.inf)
    positions = np.asarray(positions, np.float32)
    S, D = positions.shape
    n = max(1, int(S * fraction))
    order = np.argsort(-fitness, kind="stable")
    top, bottom = order[:n], order[S - n:]
    source = np.arange(S)
    source[bottom] = rng.choice(top, size=n)
    base = positions[source[bottom]]
    target = np.clip(base + rng.uniform(-perturb, perturb, size=(n, D)), 0.0, 1.0).astype(np.float32)
    if same_architecture is not None:
        moved = base.copy()
        for d in range(D):
            trial = moved.copy()
            trial[:, d] = target[:, d]
            keep = np.asarray(same_architecture(trial, base), bool)
            moved[keep] = trial[keep]
        target = moved
    out = positions.copy()
    out[bottom] = target
    return Exploit(source, out)
