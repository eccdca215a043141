"""Random search: independent uniform points of the unit box (numpy, seeded)."""

from __future__ import annotations

import numpy as np

from jaxswarm.tuners.base import Tuner

__all__ = ["TUNER"]


def run(ev, space, seed, budget):
    rng = np.random.default_rng(seed)
    while True:
        ev(rng.random(space.num_dims).astype(np.float32))


TUNER = Tuner("random", run, help="independent uniform points of the unit box")
