"""Grid search over the unit box, visited in a seeded random order.

Int/Choice dims sit at their bin centres (all values when there are at most
`r` of them), Float dims at `r` bin centres, with the resolution `r` the
smallest whose number of DISTINCT configurations (inactive conditional dims
collapsed) reaches the budget. The grid is visited in a seeded random order and
truncated at the budget, so a truncated grid is an unbiased subset rather than
one corner of the box.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np

from jaxswarm.space import Choice, Int, SearchSpace
from jaxswarm.tuners.base import Tuner

__all__ = ["grid_positions", "TUNER"]

# Largest grid enumerated while choosing the grid's resolution.
_MAX_GRID = 200_000


def grid_positions(space: SearchSpace, target: int, seed: int = 0) -> np.ndarray:
    """The grid tuner's positions: >= `target` distinct configs if the space has them, shuffled.

    Args:
      space: the search space.
      target: wanted number of distinct configurations.
      seed: seed of the visiting order.

    Returns:
      f32[N, D] positions, one per distinct configuration, in a seeded random order.

    Example:
        >>> from jaxswarm.models import mlp_space
        >>> grid_positions(mlp_space(max_layers=1), 8).shape[1]
        3
    """
    levels_fn = lambda r: [_levels(space.params[n], r) for n in space.dim_names]
    r, prev = 1, None
    while True:
        levels = levels_fn(r)
        size = math.prod(len(lv) for lv in levels)
        if size > _MAX_GRID and prev is not None:
            levels = prev
            break
        distinct = _distinct(space, levels)
        if len(distinct) >= target or levels == prev:
            break
        prev, r = levels, r + 1
    pos = _distinct(space, levels)
    order = np.random.default_rng(seed).permutation(len(pos))
    return pos[order]


def _levels(p, r: int) -> list[float]:
    if isinstance(p, Int) and p.n <= r:
        return [p.encode(k) for k in range(p.lo, p.hi + 1)]
    if isinstance(p, Choice) and p.k <= r:
        return [p.encode(o) for o in p.options]
    return [(j + 0.5) / r for j in range(r)]


def _distinct(space: SearchSpace, levels) -> np.ndarray:
    pts = np.asarray(list(itertools.product(*levels)), np.float32).reshape(-1, space.num_dims)
    configs = space.to_python_batch(pts)
    seen, keep = set(), []
    for i, c in enumerate(configs):
        k = json.dumps(c, sort_keys=True, default=str)
        if k not in seen:
            seen.add(k)
            keep.append(i)
    return pts[keep]


def run(ev, space, seed, budget, grid_points: int | None = None):
    target = budget if budget is not None else (grid_points or 256)
    for u in grid_positions(space, target, seed):
        ev(u)


TUNER = Tuner("grid", run, ("grid_points",), help="a shuffled grid over the unit box")
