"""A training loop that is not supervised, under the swarm: a policy-gradient agent on gymnax's CartPole.

The agent is a `Trainable`, the Task protocol's lower tier: ``init(key, hp) -> state``, ``train(state, hp,
key, epochs) -> state`` and ``evaluate(state, hp) -> metrics`` over a state of its own (the policy's
parameters, the optimizer's state, the iterations done). The swarm tunes the learning rate and the
entropy coefficient (traced) and the policy's width (static: a program per width); `js.tune` runs the
study as it runs one of a supervised Task (`--schedule sha` / `pbt` included). Each iteration
collects a batch of episodes from vectorized environments and takes one REINFORCE step with a
return baseline (Williams, 1992); the fitness is the greedy policy's mean episode return.

    pip install gymnax six                  # the environment (gymnax imports six without declaring it)
    python examples/agent_cartpole.py       # a few minutes on a small CPU
    python examples/agent_cartpole.py --schedule pbt      # population-based training inside each round
    python examples/agent_cartpole.py --rounds 1 --swarm-size 2 --iterations 2   # a smoke run
"""

import argparse
import time
from typing import Any, NamedTuple

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import optax

import jaxswarm as js

ENVS = 16  # environments stepped side by side per iteration
STEPS = 200  # steps per environment per iteration (an episode ends and restarts inside them)
GAMMA = 0.99


class Policy(nn.Module):
    width: int

    @nn.compact
    def __call__(self, obs):
        return nn.Dense(2)(nn.tanh(nn.Dense(self.width)(nn.tanh(nn.Dense(self.width)(obs)))))


class AgentState(NamedTuple):
    params: Any
    opt_state: Any
    iteration: jax.Array  # int32: iterations done (each folds it into its key)


def agent(static: dict) -> js.Trainable:
    """The trainable of a policy of ``static["width"]`` units per hidden layer (a `task.Builder`)."""
    env, env_params = gymnax.make("CartPole-v1")
    policy = Policy(static["width"])
    reset = jax.vmap(env.reset, in_axes=(0, None))
    step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def optimizer(hp):
        return optax.adam(hp["learning_rate"])

    def init(key, hp) -> AgentState:
        params = policy.init(key, jnp.zeros((1, 4)))
        return AgentState(params, optimizer(hp).init(params), jnp.int32(0))

    def rollout(params, key):
        """``STEPS`` steps of ``ENVS`` environments with actions sampled from the policy."""
        k_reset, k_steps = jax.random.split(key)
        obs, env_state = reset(jax.random.split(k_reset, ENVS), env_params)

        def one(carry, k):
            obs, env_state = carry
            k_act, k_env = jax.random.split(k)
            action = jax.random.categorical(k_act, policy.apply(params, obs))
            next_obs, env_state, reward, ended, cut, _ = step_envs(jax.random.split(k_env, ENVS), env_state,
                                                                   action, env_params)
            return (next_obs, env_state), (obs, action, reward, ended | cut)

        return jax.lax.scan(one, (obs, env_state), jax.random.split(k_steps, STEPS))[1]

    def loss(params, trajectory, hp):
        obs_TxNx4, action_TxN, reward_TxN, done_TxN = trajectory

        def back(future, step):  # returns-to-go, cut where an episode ended
            reward, done = step
            g = reward + GAMMA * future * (1.0 - done)
            return g, g

        _, returns_TxN = jax.lax.scan(back, jnp.zeros(ENVS), (reward_TxN, done_TxN.astype(jnp.float32)),
                                      reverse=True)
        advantage = (returns_TxN - returns_TxN.mean()) / (returns_TxN.std() + 1e-8)
        logp_TxNx2 = jax.nn.log_softmax(policy.apply(params, obs_TxNx4))
        logp = jnp.take_along_axis(logp_TxNx2, action_TxN[..., None], axis=-1)[..., 0]
        entropy = -jnp.sum(jnp.exp(logp_TxNx2) * logp_TxNx2, axis=-1).mean()
        return -jnp.mean(logp * advantage) - hp["entropy_coef"] * entropy

    def train(state: AgentState, hp, key, epochs: int) -> AgentState:
        tx = optimizer(hp)

        def iteration(state: AgentState, _):
            trajectory = rollout(state.params, jax.random.fold_in(key, state.iteration))
            grads = jax.grad(loss)(state.params, trajectory, hp)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            return AgentState(optax.apply_updates(state.params, updates), opt_state, state.iteration + 1), None

        return jax.lax.scan(iteration, state, None, length=epochs)[0]

    def evaluate(state: AgentState, hp) -> dict:
        """The greedy policy's mean return over ``ENVS`` episodes (fixed starts), up to 500 steps."""
        obs, env_state = reset(jax.random.split(jax.random.key(12345), ENVS), env_params)

        def one(carry, k):
            obs, env_state, alive = carry
            action = jnp.argmax(policy.apply(state.params, obs), axis=-1)
            obs, env_state, reward, ended, cut, _ = step_envs(jax.random.split(k, ENVS), env_state, action,
                                                              env_params)
            return (obs, env_state, alive * (1.0 - (ended | cut))), reward * alive

        steps = env_params.max_steps_in_episode
        _, rewards = jax.lax.scan(one, (obs, env_state, jnp.ones(ENVS)), jax.random.split(jax.random.key(1), steps))
        return {"return": rewards.sum(0).mean()}

    return js.Trainable(init, train, evaluate)


SPACE = js.SearchSpace({
    "width": js.Choice([16, 32, 64]),
    "learning_rate": js.Float(1e-4, 3e-2, log=True),
    "entropy_coef": js.Float(1e-4, 1e-1, log=True),
})


# The agent as a study takes it: `js.tune(None, LOOP, ...)`, or `jaxswarm run --task agent_cartpole:LOOP`.
LOOP = js.TrainingLoop(agent, js.Objective("return", "max"), SPACE,
                       fingerprint=f"gymnax CartPole-v1, {ENVS} environments x {STEPS} steps, gamma {GAMMA}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--swarm-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--iterations", type=int, default=40, help="training iterations per member and round")
    p.add_argument("--schedule", default="none", choices=("none", "sha", "hyperband", "pbt"),
                   help="inside each round: successive halving, Hyperband or population-based training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="results folder (evaluations, best.json, the winner's state)  [none: in memory]")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    result = js.tune(None, LOOP, swarm_size=args.swarm_size, rounds=args.rounds, epochs=args.iterations,
                     schedule=args.schedule, seed=args.seed, out_dir=args.out, progress=False)
    retrained = result.test_metrics["retrain_return"]
    print(f"winner {result.best_config}: greedy return {result.best_fitness:.1f} of 500 in the search, "
          f"{retrained:.1f} after its retrain; {time.perf_counter() - t0:.0f} s")
    return {"config": result.best_config, "best_return": result.best_fitness, "retrained_return": retrained,
            "result": result}


if __name__ == "__main__":
    main()
