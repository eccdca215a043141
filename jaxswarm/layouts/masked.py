"""The masked layout: every member is its family's max-size network with masks, vmapped.

One program per study, compiled before the first round; sharding over
devices, chunking and warm mode come from `execute.make_swarm_runner`. Every
option works here. The round's program is a `SwarmProgram`, the shape every
layout builds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxswarm import execute
from jaxswarm.models import ModelFamily
from jaxswarm.space import SearchSpace
from jaxswarm.train import TrainConfig, make_train

__all__ = ["DataShape", "SwarmProgram", "supports", "build", "build_runners"]


class DataShape(NamedTuple):
    """What a layout needs to know about the data before it sees any."""

    in_features: int  # F of one flat row
    num_classes: int  # C
    input_shape: tuple | None  # (H, W, C) of an image, None for tabular data


class SwarmProgram(NamedTuple):
    """One layout's round, as the study calls it.

    Attributes:
        compile: ``(keys_S, positions_SxD, data, state) -> seconds`` ahead of
            the first round (0.0 where programs compile during the rounds).
        run: ``(keys_S, positions_SxD, data, state, keep_S) -> (Metrics[S], state)``;
            ``state`` None trains fresh members (and returns None); otherwise
            it is the warm per-member variables and members with ``keep_S``
            true continue from theirs.
        place: ``(data) -> data`` where the program reads it (once per study).
        init_state: ``(keys_S, positions_SxD) -> variables`` members start from.
        unpad: ``(state) -> state`` with exactly S rows (for a checkpoint).
        describe: ``(S) -> str``, one log line about the layout of S members.
        hparams: ``(position_D) -> (arch, OptHParams)`` the members decode with.
        start_span: ``(keys_S, positions_SxD, data, variables=None, keep_S=None)
            -> states``: the members' `train.TrainState` before their first
            epoch (warm: members with ``keep_S`` true start from their
            `variables`, one row each); None where the layout cannot train
            in spans (then no schedule but "none").
        span: ``(keys_S, positions_SxD, data, states, start, num_epochs,
            shuffle_key=None) -> (Metrics[S], states)``: epochs ``start ..``
            of the members (a schedule's rung, `train.fit_span`); one state
            row per member; a layout whose members share minibatches draws
            them from `shuffle_key` (the round's, the same at every rung).
    """

    compile: Callable
    run: Callable
    place: Callable
    init_state: Callable
    unpad: Callable
    describe: Callable
    hparams: Callable
    start_span: Callable | None = None
    span: Callable | None = None


def supports(family: ModelFamily, space: SearchSpace, config: Any) -> str | None:
    """The masked layout trains every study."""
    return None


def build_runners(family: ModelFamily, space: SearchSpace, train_config: TrainConfig, data_shape: DataShape,
                  config: Any, estimate: dict, log: Callable, *, branching: bool,
                  chunk_size: int | None) -> SwarmProgram:
    """A `SwarmProgram` over `execute`'s runner (fresh and warm runners; each compiles on first use)."""
    trainer = make_train(space, train_config, data_shape.in_features, data_shape.num_classes,
                         input_shape=data_shape.input_shape, branching=branching, family=family)
    cap = None if config.memory_cap_gb is None else int(config.memory_cap_gb * 2**30)
    runner_kw = dict(chunk_size=chunk_size, memory_cap_bytes=cap, estimate=estimate, log=log)
    fresh = execute.make_swarm_runner(trainer.train_member, in_axes=(0, 0, None), **runner_kw)
    # Same plan as the fresh runner's, which `describe` logs: the warm one stays quiet.
    warm = execute.make_swarm_runner(trainer.train_member_warm, in_axes=(0, 0, None, 0, 0), state_argnum=3,
                                     **{**runner_kw, "log": None})

    def init_state(keys_S, positions_SxD):
        return jax.vmap(trainer.init_member)(keys_S, positions_SxD)

    def compile_(keys_S, positions_SxD, data, state, keep_S=None):
        if state is None:
            fresh.compile(keys_S, positions_SxD, data)
            return fresh.compile_seconds
        warm.compile(keys_S, positions_SxD, data, state, keep_S)
        return warm.compile_seconds

    def run(keys_S, positions_SxD, data, state=None, keep_S=None):
        if state is None:
            return fresh(keys_S, positions_SxD, data), None
        return warm(keys_S, positions_SxD, data, state, keep_S)

    def describe(num_particles: int) -> str:
        return fresh.plan(num_particles).describe()

    # A schedule's rungs: one runner per span length, each compiling once per rung size.
    spans: dict[int, execute.SwarmRunner] = {}
    # variables and keep None (fresh members) are empty pytrees to vmap: one function, a trace for each case.
    start_members = jax.jit(jax.vmap(trainer.start_member, in_axes=(0, 0, None, 0, 0)), static_argnums=2)

    def start_span(keys_S, positions_SxD, data, variables=None, keep_S=None):
        return start_members(keys_S, positions_SxD, int(data.x_train.shape[0]), variables, keep_S)

    def span(keys_S, positions_SxD, data, states, start, num_epochs: int, shuffle_key=None):  # own shuffles
        if num_epochs not in spans:
            member = lambda k, p, d, s, e: trainer.train_member_span(k, p, d, s, e, num_epochs)
            spans[num_epochs] = execute.make_swarm_runner(member, in_axes=(0, 0, None, 0, None), state_argnum=3,
                                                          **{**runner_kw, "log": None})
        metrics, states = spans[num_epochs](keys_S, positions_SxD, data, states, jnp.int32(start))
        return metrics, spans[num_epochs].unpad(states, keys_S.shape[0])

    return SwarmProgram(compile_, run, fresh.replicate, init_state,
                        lambda state: warm.unpad(state, config.swarm_size), describe, trainer.hparams,
                        start_span, span)


def build(family: ModelFamily, space: SearchSpace, train_config: TrainConfig, data_shape: DataShape,
          config: Any, estimate: dict, log: Callable) -> SwarmProgram:
    """The masked layout's `SwarmProgram` (``config.chunk_size`` members per device at once)."""
    return build_runners(family, space, train_config, data_shape, config, estimate, log,
                         branching=False, chunk_size=config.chunk_size)
