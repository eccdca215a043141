"""jaxswarm's own PSO run sequentially: a round's members one after another, then one `tell`.

Keys and initial design are the swarm study's (`study.round_keys`,
`study.initial_state`), so this is the swarm study's algorithm with the
vectorization taken away.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm import pso as pso_lib
from jaxswarm.study import initial_state, round_keys
from jaxswarm.tuners.base import Tuner

__all__ = ["TUNER"]


def run(ev, space, seed, budget, swarm_size: int = 16, init: str = "lhs",
             pso: dict | None = None, plan_evals: int | None = None):
    plan = plan_evals or budget or 10 * swarm_size
    swarm = pso_lib.make_pso(swarm_size, space.num_dims, maximize=True,
                             **{"num_iterations": max(1, -(-plan // swarm_size)), **(pso or {})})
    # Same keys as study.Study: the swarm study's algorithm, one member at a time.
    key = jax.random.key(seed)
    state = initial_state(key, swarm, init, swarm_size, space.num_dims)
    tell = jax.jit(swarm.tell)  # as the study's
    r = 0
    while True:
        keys, k_tell = round_keys(key, r, swarm_size)
        positions = np.asarray(swarm.ask(state))
        fitness = [ev(positions[i], key=keys[i], round_=r, particle=i) for i in range(swarm_size)]
        state = tell(k_tell, state, jnp.asarray(fitness, jnp.float32))
        r += 1


TUNER = Tuner("pso", run, ("swarm_size", "init", "pso", "plan_evals"),
              help="jaxswarm's PSO, one member at a time")
