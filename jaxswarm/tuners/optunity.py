"""Optunity's particle swarm, as shipped, over the unit box.

`optunity.solvers.ParticleSwarm` through `optunity.optimize`. Its particles'
personal best ALIASES the current position (`part.best = part.position`, then
the position is updated in place), so the cognitive term is always zero: the
swarm only follows the global best. Like `optunity.maximize`, a proposal
outside the box gets the worst score without being trained (not counted as an
evaluation). Optunity draws from Python's global `random`; it is seeded with
`seed` and restored afterwards.
"""

from __future__ import annotations

import math
import random as _py_random
import sys

import numpy as np

from jaxswarm.tuners.base import Tuner, worst

__all__ = ["TUNER"]


def run(ev, space, seed, budget, swarm_size: int | None = None, plan_evals: int | None = None):
    import optunity  # optional: the bench / dev extras
    from optunity.solvers.ParticleSwarm import ParticleSwarm

    plan = plan_evals or budget or 10 * (swarm_size or 10)
    box = {n: [0.0, 1.0] for n in space.dim_names}
    suggestion = ParticleSwarm.suggest_from_box(plan, **box)
    particles = swarm_size or suggestion["num_particles"]
    generations = int(math.ceil(plan / particles))

    def f(**kw):
        u = np.asarray([kw[n] for n in space.dim_names], np.float64)
        if np.any(u < 0.0) or np.any(u > 1.0):  # optunity.maximize's hard box constraint
            ev.check()
            return -sys.float_info.max
        return worst(ev(u.astype(np.float32)))

    state = _py_random.getstate()
    _py_random.seed(seed)  # before make_solver: ParticleSwarm draws its Sobol seed when it is built
    try:
        # max_speed as Optunity picks it for the planned run; the extra generations only let
        # rejected (out-of-box) proposals be made up until the budget or time limit stops us.
        solver = optunity.make_solver("particle swarm", num_particles=particles,
                                      num_generations=4 * generations, max_speed=0.7 / generations, **box)
        optunity.optimize(solver, f, maximize=True, max_evals=0)
    finally:
        _py_random.setstate(state)


TUNER = Tuner("optunity", run, ("swarm_size", "plan_evals"), ("optunity",), "Optunity's particle swarm")
