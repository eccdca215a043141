"""A faster swarm layout: first layers packed into one matmul, tails in a few width groups.

The masked layout (`jaxswarm.layouts.masked`) gives every member max-size weights,
so with widths 16..256 and depth 1..3 only about a quarter of the computed
FLOPs are useful (docs/layouts.md). This module trains the SAME
objective (same decoding, initialization, minibatches, optimizers, loss and
`train.Metrics`) with far less waste:

* All members see the same minibatches (one `shuffle_key` per round), so the
  first hidden layer of every member is ONE matmul
  ``z_PxB = W1[F, P]^T x_BxF^T`` over the members' real first-layer widths
  concatenated (P, the column budget, pads the sum a little). Each column
  keeps its member's activation (a per-column select) and its member's
  optimizer hyperparameters (arrays of shape [P] broadcast over the kernel).
  With several optimizers in the space the columns come in one block per
  optimizer (`PlanShape.blocks`), each block its own array and matmul, so a
  block runs only its optimizer's update (`_split_first`), not every name's
  followed by a select: a step of the five-optimizer bench space 17.0 ms
  against 27.2 ms (bench/results/profile_packed_cpu_all*.md).
  On image inputs this layer carries ~86-88% of the useful FLOPs.
* The rest of each network (hidden layers 2.., output layer) runs vmapped in
  a few *groups*: members of one depth whose widths, rounded up, fit the
  group's widths share one stacked program; greedy merging of exact
  architectures picks at most `groups` of them. Each group reads its members'
  first-layer activations with one static row gather whose backward is the
  inverse gather (each packed column feeds exactly one slot), not a
  scatter-add and not per-member slices.
* Shapes (column budget, group depths, widths and capacities) are rounded to
  a ladder of ~1.125x / 1.5x steps and form a `PlanShape`; which member sits
  where is runtime data (`PlanTables`), so a compiled program serves every
  swarm that fits its shape. Programs are cached by shape and a new swarm is
  put into a known shape whenever its extra padding costs less training time
  than compiling a fresh plan would (the `costs.CostModel`'s compile seconds
  against its training FLOP/s), or at most `make_plan`'s ``reuse_tolerance``
  times a fresh plan when no data size is known, so recompiles stay few as
  particles move.

Equivalence: a member trained here follows the masked member's trajectory
(same init: `mlp.init_mlp` with the same key, then packed; same
minibatches when the masked trainer gets the same `shuffle_key`) up to
float32 rounding of differently shaped matmuls. Everything is per column or
per slot, so a diverging member never disturbs the others.

Batch norm is per column (first layer) or per slot unit (tails): its
statistics reduce over the shared minibatch, members with it off keep their
pre-activations. Dropout draws each member's masks from its own key exactly
as its network does (`layers.dropout`'s units-first draw, of which a first
layer column reads its unit's row). k-fold `FoldData` trains the folds one
after another on the same plan (`train.combine_folds` averages them). A
``batch_size`` choice trains one packed trainer per size (`_by_batch_size`):
each member steps on batches of its real size, with the shared permutation,
and draws its dropout per chunk as `train.fit_span` does, so it follows the
masked member (and the dense network of its size). Warm
mode hands each member's max-size variables in and out (`_pack` / `_unpack`);
a schedule's rung (`train_span`) hands in and out each member's whole
`train.TrainState`, its optimizer state packed with its params
(`_pack_opt` / `_unpack_opt`), so survivors are planned on their own; the
rung's epochs are a traced loop and its members are padded to the shape's
slots, so one program per plan shape serves rungs of every size and length.
Over several devices (`make_packed_train`'s ``devices``) the members are dealt
out by architecture, one plan shape fits every device's share
(`make_plan`'s ``parts``) and one `jax.shard_map` program trains them all.

Example:
    >>> import jax, numpy as np
    >>> from jaxswarm.models import mlp_space
    >>> from jaxswarm.train import TrainConfig, device_data
    >>> space = mlp_space(max_layers=2, units=(4, 16))
    >>> x = np.random.rand(64, 8).astype(np.float32); y = (x[:, 0] > .5).astype(np.int32)
    >>> data = device_data(x[:48], y[:48], x[48:], y[48:])
    >>> trainer = make_packed_train(space, TrainConfig(epochs=2, batch_size=16), 8, 2)
    >>> pos = jax.random.uniform(jax.random.key(0), (4, space.num_dims))
    >>> keys = jax.random.split(jax.random.key(1), 4)
    >>> trainer.train_swarm(keys, pos, data, jax.random.key(2)).fitness.shape
    (4,)
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from jaxswarm import costs, execute, optim, train
from jaxswarm.costs import BUILTIN, CostModel
from jaxswarm.layouts.masked import DataShape, SwarmProgram
from jaxswarm.models import ModelFamily, family_of, mlp
from jaxswarm.models.layers import (ACTIVATION_NAMES, ACTIVATIONS, MAX_DROPOUT, batch_norm_eval,
                                    batch_norm_train)
from jaxswarm.space import Choice, Fixed, SearchSpace

__all__ = [
    "GroupShape",
    "PlanShape",
    "PlanTables",
    "Plan",
    "PackedTrainer",
    "supports",
    "ladder_up",
    "make_plan",
    "plan_flops",
    "describe_plan",
    "make_packed_train",
    "LoopState",
    "TailSlots",
]


# --------------------------------------------------------------------------
# Plans (host side)
# --------------------------------------------------------------------------


class GroupShape(NamedTuple):
    """Static shape of one tail group: members of one depth, padded widths, slots."""

    depth: int  # hidden layers of every member in the group
    widths: tuple[int, ...]  # padded width of each hidden layer (len == depth)
    capacity: int  # member slots (K)


class PlanShape(NamedTuple):
    """Everything static about a packed swarm program (the compile-cache key)."""

    columns: int  # P, the packed first layer's column budget
    groups: tuple[GroupShape, ...]
    blocks: tuple[int, ...] = ()  # optimizer o's columns: [sum(blocks[:o]), sum(blocks[:o+1])); () unblocked


class PlanTables(NamedTuple):
    """Runtime placement of members in a `PlanShape` (int32 arrays, traced)."""

    col_member_P: Any  # member owning each packed column, -1 for padding
    col_unit_P: Any  # first-layer unit of that member the column holds
    gather_R: Any  # R = sum_g K_g * widths_g[0]: packed column feeding each tail input row, P = zero
    inverse_P: Any  # row of gather_R each packed column feeds, R = none (the gather's inverse)
    slot_member_T: Any  # T = sum_g K_g: member in each slot, -1 for an empty slot
    member_slot_S: Any  # slot of each member


class Plan(NamedTuple):
    shape: PlanShape
    tables: PlanTables
    order: Any = None  # sharded plans: the member at each place, device after device (`make_plan`'s parts)


def ladder_up(n: int, cap: int | None = None, steps_per_octave: int = 2) -> int:
    """Smallest value >= n of the ladder 2^k * (1 + j / steps_per_octave), capped at `cap`.

    Two steps per octave gives 1, 2, 3, 4, 6, 8, 12, 16, 24, ...

    Example:
        >>> [ladder_up(n) for n in (1, 5, 7, 17, 100)]
        [1, 6, 8, 24, 128]
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"ladder_up needs n >= 1, got {n}")
    k = max(0, int(math.floor(math.log2(n))) - 1)
    while True:
        for j in range(steps_per_octave):
            v = int(math.ceil((2**k) * (1 + j / steps_per_octave)))
            if v >= n:
                return v if cap is None else min(v, max(cap, n))
        k += 1


def _tail_cost(depth: int, widths: Sequence[int], num_classes: int) -> int:
    """Multiply-adds per example of one slot's tail (+ its gathered input rows)."""
    mac = sum(widths[l - 1] * widths[l] for l in range(1, depth)) + widths[depth - 1] * num_classes
    return mac + widths[0]


def _group_cost(g: GroupShape, num_classes: int) -> int:
    return g.capacity * _tail_cost(g.depth, g.widths, num_classes)


def _shape_cost(shape: PlanShape, in_features: int, num_classes: int) -> int:
    return shape.columns * (in_features + 1) + sum(_group_cost(g, num_classes) for g in shape.groups)


def plan_flops(shape: PlanShape, in_features: int, num_classes: int) -> int:
    """Forward FLOPs per example the packed program computes for all members (2 per MAC).

    Example:
        >>> plan_flops(PlanShape(8, (GroupShape(1, (8,), 1),)), 4, 2)
        96
    """
    macs = shape.columns * in_features
    for g in shape.groups:
        macs += g.capacity * (sum(g.widths[l - 1] * g.widths[l] for l in range(1, g.depth))
                              + g.widths[-1] * num_classes)
    return 2 * macs


def describe_plan(shape: PlanShape) -> str:
    """Short text of a plan shape, e.g. ``P=2304 | d1 (64,)x8 | d2 (128, 32)x4``."""
    parts = [f"P={shape.columns}" + (f" {shape.blocks}" if shape.blocks else "")] + \
        [f"d{g.depth} {g.widths}x{g.capacity}" for g in shape.groups]
    return " | ".join(parts)


def _fresh_groups(archs, max_groups: int, max_units: int, num_classes: int, free_merge: float,
                  headroom: float) -> list[GroupShape]:
    """Greedy merging of exact (ladder-rounded) architectures into <= max_groups groups.

    Merges go on past `max_groups` while one costs at most `free_merge`
    multiply-adds per example (fewer groups compile faster); capacities get
    `headroom` spare slots (fraction) so the next rounds' swarms fit the shape.
    """
    clusters: dict[tuple, int] = {}
    for depth, units in archs:
        key = (depth, tuple(ladder_up(u, max_units) for u in units))
        clusters[key] = clusters.get(key, 0) + 1
    cl = [(d, w, n) for (d, w), n in clusters.items()]

    def cost(d, w, n):
        return ladder_up(n) * _tail_cost(d, w, num_classes)

    while True:
        best = None
        for i in range(len(cl)):
            for j in range(i + 1, len(cl)):
                (d1, w1, n1), (d2, w2, n2) = cl[i], cl[j]
                if d1 != d2:
                    continue
                w = tuple(max(a, b) for a, b in zip(w1, w2))
                delta = cost(d1, w, n1 + n2) - cost(d1, w1, n1) - cost(d2, w2, n2)
                if best is None or delta < best[0]:
                    best = (delta, i, j, (d1, w, n1 + n2))
        if best is None or (len(cl) <= max_groups and best[0] > free_merge):
            break
        _, i, j, merged = best
        cl = [c for k, c in enumerate(cl) if k not in (i, j)] + [merged]
    return sorted(GroupShape(d, w, ladder_up(math.ceil(n * (1 + headroom)))) for d, w, n in cl)


def _tightest(arch, groups: Sequence[GroupShape], free: Sequence[int] | None = None) -> int | None:
    """The group of `groups` with the cheapest slot that `arch` fits (with a free slot, given `free`), or None."""
    depth, units = arch
    fits = [i for i, g in enumerate(groups)
            if g.depth == depth and (free is None or free[i] > 0) and all(u <= w for u, w in zip(units, g.widths))]
    return min(fits, key=lambda i: _tail_cost(groups[i].depth, groups[i].widths, 1)) if fits else None


def _assign(archs, groups: Sequence[GroupShape]) -> list[int] | None:
    """Puts each member into a slot of `groups` (tightest fitting group first); None if impossible."""
    free = [g.capacity for g in groups]
    order = sorted(range(len(archs)), key=lambda m: -_tail_cost(archs[m][0], archs[m][1], 1))
    where = [None] * len(archs)
    for m in order:
        i = _tightest(archs[m], groups, free)
        if i is None:
            return None
        free[i] -= 1
        where[m] = i
    return where


def _tables(archs, shape: PlanShape, group_of: Sequence[int], optimizers: Sequence[int] | None = None) -> PlanTables:
    """The runtime tables of `archs` in `shape` (member m in a slot of group ``group_of[m]``); with
    ``shape.blocks``, member m's first-layer columns lie in the block of its optimizer ``optimizers[m]``."""
    S = len(archs)
    P = shape.columns
    caps = [g.capacity for g in shape.groups]
    T = sum(caps)
    R = sum(g.capacity * g.widths[0] for g in shape.groups)
    slot_member = -np.ones(T, np.int32)
    member_slot = np.zeros(S, np.int32)
    slot_base = np.cumsum([0] + caps)
    used = [0] * len(caps)
    for m in range(S):
        g = group_of[m]
        t = slot_base[g] + used[g]
        used[g] += 1
        slot_member[t], member_slot[m] = m, t
    col_member = -np.ones(P, np.int32)
    col_unit = np.zeros(P, np.int32)
    gather = np.full(R, P, np.int32)
    inverse = np.full(P, R, np.int32)
    blocks = shape.blocks or (P,)
    cursor = list(_block_starts(blocks))  # the next free column of each block
    row = 0
    for g, gs in enumerate(shape.groups):
        for k in range(gs.capacity):
            m = slot_member[slot_base[g] + k]
            if m >= 0:
                u0 = archs[m][1][0]
                o = optimizers[m] if shape.blocks else 0
                col = cursor[o]
                col_member[col:col + u0] = m
                col_unit[col:col + u0] = np.arange(u0)
                gather[row:row + u0] = np.arange(col, col + u0)
                inverse[col:col + u0] = np.arange(row, row + u0)
                cursor[o] += u0
            row += gs.widths[0]
    ends = np.cumsum(blocks)
    assert all(c <= e for c, e in zip(cursor, ends)) and row == R
    return PlanTables(col_member, col_unit, gather, inverse, slot_member, member_slot)


def _deal(archs, parts: int, max_units: int) -> np.ndarray:
    """Member indices dealt to `parts` devices, device after device (``len(archs) / parts`` each).

    Members sorted by architecture (depth, then ladder-rounded widths) go to
    the devices in turn, so every device holds nearly the same mix and one
    plan shape fits them all with little padding.
    """
    key = lambda m: (archs[m][0], tuple(ladder_up(u, max_units) for u in archs[m][1]))
    ranked = sorted(range(len(archs)), key=key)
    return np.asarray([m for p in range(parts) for m in ranked[p::parts]], np.int32)


def _shared_groups(archs, part_archs, max_groups: int, max_units: int, num_classes: int, free_merge: float,
                   headroom: float) -> list[GroupShape]:
    """Tail groups one shape of which every part's members fit: `_fresh_groups`' widths for the
    whole swarm, each with the slots the part needing most of them needs (plus `headroom`).

    A member needs its tightest fitting group, so `_assign` fills every part
    without running out of slots.
    """
    shapes = _fresh_groups(archs, max_groups, max_units, num_classes, free_merge, 0.0)
    most = [0] * len(shapes)
    for part in part_archs:
        count = [0] * len(shapes)
        for arch in part:
            count[_tightest(arch, shapes)] += 1
        most = [max(a, b) for a, b in zip(most, count)]
    return [g._replace(capacity=ladder_up(math.ceil(n * (1 + headroom)))) for g, n in zip(shapes, most) if n]


def make_plan(
    archs: Sequence[tuple[int, Sequence[int]]],
    max_units: int,
    num_classes: int,
    in_features: int,
    groups: int = 8,
    known: Sequence[PlanShape] = (),
    reuse_tolerance: float = 1.5,
    headroom: float = 0.25,
    switch_cost: float | None = None,
    free_merge: float | None = None,
    parts: int = 1,
    optimizers: Sequence[int] | None = None,
    n_optimizers: int = 1,
) -> Plan:
    """Places a swarm's architectures into a packed plan (host side, numpy).

    Args:
        archs: per member ``(depth, widths of its hidden layers)``.
        max_units: the widest a layer may be (ladder rounding never exceeds it).
        num_classes, in_features: the network's output and input widths.
        groups: the most tail groups of a fresh plan (at least one per depth present).
        known: shapes already compiled; the cheapest one the swarm fits is used
            when it costs at most ``reuse_tolerance`` times a fresh plan.
        reuse_tolerance: see ``known``.
        switch_cost: when given, replaces `reuse_tolerance`: a known shape is
            reused when it costs at most this much more than a fresh plan (in
            `plan_flops`' units halved: multiply-adds per example), the price
            of compiling the fresh one.
        free_merge: a fresh plan merges two groups (one fewer to compile)
            while that costs at most this many multiply-adds per example; None:
            1% of the first layer's.
        headroom: spare fraction of a fresh plan's columns and group slots, so
            that the swarm's next rounds fit it too.
        parts: devices the members are dealt to (`len(archs)` a multiple of
            it): one shape that every device's members fit, each device its
            own tables.
        optimizers, n_optimizers: each member's optimizer index (of
            `n_optimizers`); with ``n_optimizers > 1`` the first layer's columns are
            blocked by optimizer (``PlanShape.blocks``, each block's budget on
            the ladder), so each optimizer updates only its own columns.

    Returns:
        `Plan` (static shape + runtime tables). With ``parts > 1`` every table
        has a leading ``[parts]`` axis and ``order`` says which member sits
        at each place (device after device, ``len(archs) / parts`` each).

    Example:
        >>> p = make_plan([(1, [20]), (2, [30, 10])], 256, 10, 64)
        >>> p.shape.columns >= 50, len(p.shape.groups)
        (True, 2)
        >>> p = make_plan([(1, [20]), (2, [30, 10]), (1, [16]), (2, [24, 8])], 256, 10, 64, parts=2)
        >>> p.tables.slot_member_T.shape[0], p.order.tolist()  # each device: one of each depth
        (2, [2, 3, 0, 1])
    """
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    archs = [(int(d), tuple(int(u) for u in us[: int(d)])) for d, us in archs]
    if not archs:
        raise ValueError("make_plan needs at least one member, got 0")
    if parts < 1 or len(archs) % parts:
        raise ValueError(f"parts must be >= 1 and divide the {len(archs)} members, got {parts}")
    order = _deal(archs, parts, max_units) if parts > 1 else np.arange(len(archs), dtype=np.int32)
    n = len(archs) // parts
    part_archs = [[archs[m] for m in order[p * n:(p + 1) * n]] for p in range(parts)]
    need = max(sum(a[1][0] for a in part) for part in part_archs)
    merge = 0.01 * need * in_features if free_merge is None else free_merge
    blocked = n_optimizers > 1 and optimizers is not None
    if blocked:
        part_opts = [[int(optimizers[m]) for m in order[p * n:(p + 1) * n]] for p in range(parts)]
        need_o = [max(sum(a[1][0] for a, o in zip(part, opts) if o == i) for part, opts in zip(part_archs, part_opts))
                  for i in range(n_optimizers)]

    def placed(shape):
        wheres = [_assign(part, shape.groups) for part in part_archs]
        return None if any(w is None for w in wheres) else wheres

    def columns_fit(shape):
        if not blocked:
            return not shape.blocks and shape.columns >= need
        return len(shape.blocks) == n_optimizers and all(b >= u for b, u in zip(shape.blocks, need_o))

    room = lambda u: ladder_up(math.ceil(u * (1 + headroom / 2)), steps_per_octave=8) if u else 0
    blocks = tuple(room(u) for u in need_o) if blocked else ()
    columns = sum(blocks) if blocked else room(need)
    fresh = PlanShape(columns, tuple(
        _fresh_groups(archs, groups, max_units, num_classes, merge, headroom) if parts == 1
        else _shared_groups(archs, part_archs, groups, max_units, num_classes, merge, headroom)), blocks)
    fresh_cost = _shape_cost(fresh, in_features, num_classes)
    best = None
    for shape in known:
        if not columns_fit(shape):
            continue
        c = _shape_cost(shape, in_features, num_classes)
        limit = reuse_tolerance * fresh_cost if switch_cost is None else fresh_cost + switch_cost
        if c > limit or (best is not None and c >= best[0]):
            continue
        wheres = placed(shape)
        if wheres is not None:
            best = (c, shape, wheres)
    if best is None:
        wheres = placed(fresh)
        assert wheres is not None, "a fresh plan always fits"
        best = (fresh_cost, fresh, wheres)
    _, shape, wheres = best
    opts_of = part_opts if blocked else [None] * parts
    tables = [_tables(part, shape, w, opts) for part, w, opts in zip(part_archs, wheres, opts_of)]
    if parts == 1:
        return Plan(shape, tables[0])
    return Plan(shape, PlanTables(*(np.stack(t) for t in zip(*tables))), order)


# --------------------------------------------------------------------------
# The packed program (traced)
# --------------------------------------------------------------------------


def supports(space: SearchSpace) -> bool:
    """Whether the packed layout can train `space`: an MLP space (batch norm, dropout, k folds and a
    ``batch_size`` choice included: members of one size step together on one batch, `make_packed_train`).

    Example:
        >>> from jaxswarm.models import cnn_space, mlp_space
        >>> supports(mlp_space(batch_norm=True, dropout=(0.0, 0.5))), supports(cnn_space())
        (True, False)
    """
    return family_of(space).name == "mlp"


def _names_in(space: SearchSpace, name: str, default: str) -> tuple[str, ...]:
    p = space.params.get(name)
    if isinstance(p, Choice):
        return tuple(dict.fromkeys(p.options))
    if isinstance(p, Fixed):
        return (p.value,)
    return (default,)


@jax.custom_vjp
def _gather_rows(h_PxB, gather_R, inverse_P):
    """Rows ``h[gather_R]`` (out-of-range rows read zero); backward is the inverse gather."""
    return jnp.take(h_PxB, gather_R, axis=0, mode="fill", fill_value=0)


def _gather_fwd(h_PxB, gather_R, inverse_P):
    return _gather_rows(h_PxB, gather_R, inverse_P), (gather_R, inverse_P)


def _gather_bwd(res, g_RxB):
    gather_R, inverse_P = res
    # Every packed column feeds at most one row, so the transpose of the
    # gather is the gather by the inverse table (no scatter-add).
    return jnp.take(g_RxB, inverse_P, axis=0, mode="fill", fill_value=0), None, None


_gather_rows.defvjp(_gather_fwd, _gather_bwd)


def _activate_columns(index, z, names: tuple[str, ...]):
    """Per-element activation choice: `index` (global ACTIVATION_NAMES ids) broadcasts to z."""
    out = ACTIVATIONS[names[0]](z)
    for n in names[1:]:
        out = jnp.where(index == ACTIVATION_NAMES.index(n), ACTIVATIONS[n](z), out)
    return out


class TailSlots(NamedTuple):
    """One tail group's per-slot data, derived in the program (leading axis K, the group's slots)."""

    valid_K: jax.Array  # bool: the slot holds a member
    act_KxL: jax.Array  # int32: each layer's activation (`ACTIVATION_NAMES` ids)
    masks: tuple  # per layer l, bool [K, widths[l]]: the member's real units
    hp_K: optim.OptHParams  # fields [K]: the member's optimizer hyperparameters
    bn_K: jax.Array  # bool: the member has batch norm on
    rate_K: jax.Array  # float32: the member's dropout rate
    member_K: jax.Array  # int32: the member in the slot (0 for an empty slot)


class _Context(NamedTuple):
    """Per-column and per-slot data derived inside the program from positions and tables."""

    col_valid_P: jax.Array  # bool: the column belongs to a member
    col_act_P: jax.Array  # int32: the column's member's first-layer activation
    col_hp: optim.OptHParams  # fields [P]
    groups: tuple[TailSlots, ...]  # one per tail group
    col_bn_P: jax.Array  # bool: the column's member has batch norm on
    col_rate_P: jax.Array  # the column's member's dropout rate


def _context(arch_S: mlp.Arch, hp_S: optim.OptHParams, tables: PlanTables, shape: PlanShape) -> _Context:
    col_member_P = jnp.maximum(tables.col_member_P, 0)
    col_hp = jax.tree.map(lambda a: a[col_member_P], hp_S)
    rate_S = jnp.clip(jnp.asarray(arch_S.dropout, jnp.float32), 0.0, MAX_DROPOUT)
    act_SxL = jnp.broadcast_to(arch_S.activation.reshape(arch_S.units.shape[0], -1), arch_S.units.shape)  # per layer
    groups, base = [], 0
    for group in shape.groups:
        slot_member_K = tables.slot_member_T[base:base + group.capacity]
        base += group.capacity
        member_K = jnp.maximum(slot_member_K, 0)
        units_KxL = arch_S.units[member_K]
        masks = tuple(jnp.arange(group.widths[l])[None, :] < units_KxL[:, l:l + 1] for l in range(group.depth))
        groups.append(TailSlots(slot_member_K >= 0, act_SxL[member_K], masks,
                                jax.tree.map(lambda a: a[member_K], hp_S), arch_S.batch_norm[member_K],
                                rate_S[member_K], member_K))
    return _Context(tables.col_member_P >= 0, act_SxL[col_member_P, 0], col_hp, tuple(groups),
                    arch_S.batch_norm[col_member_P], rate_S[col_member_P])

def _pack(variables_S: dict, tables: PlanTables, shape: PlanShape, bn: bool) -> tuple[dict, dict]:
    """Max-size per-member variables (leading S axis) -> ``(packed params, packed batch stats)``.

    With `bn` every packed layer also holds batch norm's ``scale``/``shift``
    (params) and running ``mean``/``var`` (stats, ``{}`` without `bn`), taken
    from the same units as its kernel columns.
    """
    params_S, stats_S = variables_S["params"], variables_S["batch_stats"]
    valid = tables.col_member_P >= 0
    cm = jnp.maximum(tables.col_member_P, 0)
    cols = lambda a_SxU, fill=0.0: jnp.where(valid, a_SxU[cm, tables.col_unit_P], fill)
    k0 = params_S["dense_0"]["kernel"]  # [S, F, U]
    first = {"kernel": jnp.where(valid[None, :], k0[cm, :, tables.col_unit_P].T, 0.0),
             "bias": cols(params_S["dense_0"]["bias"])}
    first_stats = {}
    if bn:
        first.update(scale=cols(params_S["bn_0"]["scale"]), shift=cols(params_S["bn_0"]["bias"]))
        first_stats = {"mean": cols(stats_S["bn_0"]["mean"]), "var": cols(stats_S["bn_0"]["var"], 1.0)}
    groups, group_stats, base = [], [], 0
    for g in shape.groups:
        sm = tables.slot_member_T[base:base + g.capacity]
        base += g.capacity
        m, ok = jnp.maximum(sm, 0), sm >= 0
        slots = lambda a, fill=0.0: jnp.where(ok.reshape((-1,) + (1,) * (a.ndim - 1)), a, fill)
        layers, layer_stats = [], []
        for l in range(1, g.depth):
            w_in, w = g.widths[l - 1], g.widths[l]
            lay = {"kernel": slots(params_S[f"dense_{l}"]["kernel"][m][:, :w_in, :w]),
                   "bias": slots(params_S[f"dense_{l}"]["bias"][m][:, :w])}
            if bn:
                lay.update(scale=slots(params_S[f"bn_{l}"]["scale"][m][:, :w]),
                           shift=slots(params_S[f"bn_{l}"]["bias"][m][:, :w]))
                layer_stats.append({"mean": slots(stats_S[f"bn_{l}"]["mean"][m][:, :w]),
                                    "var": slots(stats_S[f"bn_{l}"]["var"][m][:, :w], 1.0)})
            layers.append(lay)
        out = {"kernel": slots(params_S["out"]["kernel"][m][:, : g.widths[-1], :]),
               "bias": slots(params_S["out"]["bias"][m])}
        groups.append({"layers": layers, "out": out})
        group_stats.append(layer_stats)
    stats = {"first": first_stats, "groups": group_stats} if bn else {}
    return {"first": first, "groups": groups}, stats


def _unpack(base_S: dict, params: dict, stats: dict, tables: PlanTables, shape: PlanShape, bn: bool) -> dict:
    """`_pack`'s inverse, traced: packed ``(params, stats)`` written into max-size variables `base_S`.

    Entries outside the packed networks keep their value in `base_S` (the
    members' variables as training started), so ``_unpack(v, *_pack(v, ...))``
    is ``v``.
    """
    S = tables.member_slot_S.shape[0]
    m_P = jnp.where(tables.col_member_P >= 0, tables.col_member_P, S)  # padding columns write nowhere
    u_P = tables.col_unit_P
    out = jax.tree.map(lambda a: a, base_S)  # a new tree; leaves are replaced below
    pa, st = out["params"], out["batch_stats"]
    first = params["first"]
    pa["dense_0"] = {"kernel": pa["dense_0"]["kernel"].at[m_P, :, u_P].set(first["kernel"].T, mode="drop"),
                     "bias": pa["dense_0"]["bias"].at[m_P, u_P].set(first["bias"], mode="drop")}
    if bn:
        pa["bn_0"] = {"scale": pa["bn_0"]["scale"].at[m_P, u_P].set(first["scale"], mode="drop"),
                      "bias": pa["bn_0"]["bias"].at[m_P, u_P].set(first["shift"], mode="drop")}
        st["bn_0"] = {k: st["bn_0"][k].at[m_P, u_P].set(stats["first"][k], mode="drop") for k in ("mean", "var")}
    base = 0
    for i, g in enumerate(shape.groups):
        sm = tables.slot_member_T[base:base + g.capacity]
        base += g.capacity
        m_K = jnp.where(sm >= 0, sm, S)
        p = params["groups"][i]
        for l in range(1, g.depth):
            w_in, w = g.widths[l - 1], g.widths[l]
            lay = p["layers"][l - 1]
            pa[f"dense_{l}"] = {
                "kernel": pa[f"dense_{l}"]["kernel"].at[m_K, :w_in, :w].set(lay["kernel"], mode="drop"),
                "bias": pa[f"dense_{l}"]["bias"].at[m_K, :w].set(lay["bias"], mode="drop")}
            if bn:
                pa[f"bn_{l}"] = {"scale": pa[f"bn_{l}"]["scale"].at[m_K, :w].set(lay["scale"], mode="drop"),
                                 "bias": pa[f"bn_{l}"]["bias"].at[m_K, :w].set(lay["shift"], mode="drop")}
                st[f"bn_{l}"] = {k: st[f"bn_{l}"][k].at[m_K, :w].set(stats["groups"][i][l - 1][k], mode="drop")
                                 for k in ("mean", "var")}
        pa["out"] = {"kernel": pa["out"]["kernel"].at[m_K, : g.widths[-1], :].set(p["out"]["kernel"], mode="drop"),
                     "bias": pa["out"]["bias"].at[m_K].set(p["out"]["bias"], mode="drop")}
    return out


def _pack_opt(opt_S, fresh: dict, stats_S: dict, tables: PlanTables, shape: PlanShape, bn: bool) -> dict:
    """Members' optimizer states (`optim.make_optimizer`'s, on max-size params, leading S) -> the packed ones.

    `fresh` is the packed state as a new run starts (its hyperparameters per
    column and slot); the members' shared state buffers are packed as their
    params are, and every step count is the members' (one rung's members
    have all made the same number of steps).
    """
    slots = [_pack({"params": b, "batch_stats": stats_S}, tables, shape, bn)[0] for b in opt_S.inner_state.slots]
    count = opt_S.count[0]

    def fill(state, part):
        return _with_slots(state, tuple(part(b) for b in slots), count)

    return {"first": fill(fresh["first"], lambda b: b["first"]),
            "groups": [fill(g, lambda b, i=i: b["groups"][i]) for i, g in enumerate(fresh["groups"])]}


def _unpack_opt(opt_S, packed: dict, start_S: dict, stats: dict, tables: PlanTables, shape: PlanShape, bn: bool):
    """`_pack_opt`'s inverse: the packed optimizer state written back into the members' `opt_S`."""
    count = packed["first"].count
    slots = tuple(_unpack({"params": b_S, "batch_stats": start_S["batch_stats"]},
                          {"first": f, "groups": list(g)}, stats, tables, shape, bn)["params"]
                  for b_S, f, *g in zip(opt_S.inner_state.slots, packed["first"].inner_state.slots,
                                        *(p.inner_state.slots for p in packed["groups"])))
    return _with_slots(opt_S, slots, count)


def _block_starts(blocks: Sequence[int]) -> np.ndarray:
    """The first column of each block of `PlanShape.blocks` (blocks lie side by side from column 0)."""
    return np.cumsum((0,) + tuple(blocks[:-1]))


def _columns(tree, start: int, width: int):
    """Columns ``start .. start + width - 1`` of every leaf (its last axis)."""
    return jax.tree.map(lambda a: jax.lax.slice_in_dim(a, start, start + width, axis=a.ndim - 1), tree)


def _split_first(first: dict, state, singles: Sequence, blocks: tuple[int, ...]) -> tuple[list, list]:
    """The packed first layer and its all-names optimizer state -> one ``(params, state)`` per optimizer block
    (`PlanShape.blocks`), block o's state that of ``singles[o]`` (`optim.make_optimizer` of name o alone).

    Block o keeps the first shared buffers its optimizer uses and name o's other leaves: the state the
    all-names optimizer would read for those columns (`_join_first` puts them back).
    """
    inner, params, states = state.inner_state, [], []
    for o, (s, w) in enumerate(zip(_block_starts(blocks), blocks)):
        part = lambda tree, s=int(s), w=int(w): _columns(tree, s, w)
        hp = part(dict(state.hyperparams))
        own = len(jax.eval_shape(singles[o].init, part(first), optim.OptHParams(**hp)).inner_state.slots)
        params.append(part(first))
        states.append(state._replace(hyperparams=hp, inner_state=inner._replace(
            slots=tuple(part(b) for b in inner.slots[:own]), rest=(inner.rest[o],))))
    return params, states


def _join_columns(parts: Sequence):
    """Trees of column blocks (`_columns`' cuts, in order) side by side again: every leaf along its last axis."""
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=-1), *parts)


def _join_first(params: list, states: list, state, blocks: tuple[int, ...]) -> tuple[dict, Any]:
    """`_split_first`'s inverse: the blocks' params and states -> the packed first layer and its all-names
    state (`state`, as the split took it, gives the buffers a block's optimizer does not keep)."""
    inner, slots = state.inner_state, [[] for _ in state.inner_state.slots]
    for s, w, block in zip(_block_starts(blocks), blocks, states):
        own = len(block.inner_state.slots)
        for j, old in enumerate(inner.slots):
            slots[j].append(block.inner_state.slots[j] if j < own else _columns(old, int(s), int(w)))
    last = states[-1]
    return _join_columns(params), state._replace(count=last.count, inner_state=inner._replace(
        count=last.inner_state.count, slots=tuple(_join_columns(b) for b in slots),
        rest=tuple(b.inner_state.rest[0] for b in states)))


def _flat(tree_K):
    """A tail group's tree (every leaf with a leading slot axis K) as one ``[K, n]`` array, leaves side by side."""
    return jnp.concatenate([a.reshape(a.shape[0], -1) for a in jax.tree.leaves(tree_K)], axis=1)


def _unflat(flat_KxN, like_K):
    """`_flat`'s inverse: the ``[K, n]`` array cut back into a tree shaped as `like_K`."""
    leaves, tree = jax.tree.flatten(like_K)
    widths = np.array([math.prod(a.shape[1:]) for a in leaves], dtype=int)
    ends = np.cumsum(widths)
    return jax.tree.unflatten(tree, [flat_KxN[:, end - width:end].reshape(a.shape)
                                     for a, width, end in zip(leaves, widths, ends)])


def _flat_state(state):
    """A tail group's optimizer state with its shared buffers `_flat` (what the optimizer of `_flat` params keeps)."""
    inner = state.inner_state
    return state._replace(inner_state=inner._replace(slots=tuple(_flat(b) for b in inner.slots)))


def _unflat_state(state, like_K):
    """`_flat_state`'s inverse, its buffers shaped as the group's params `like_K`."""
    inner = state.inner_state
    return state._replace(inner_state=inner._replace(slots=tuple(_unflat(b, like_K) for b in inner.slots)))


def _with_slots(state, slots: tuple, count):
    """An `optim.make_optimizer` state with these shared buffers and every step count set to `count`."""
    state = optim.with_count(state, count)
    return state._replace(inner_state=state.inner_state._replace(slots=slots))



def _normalize(z, lay: dict, stats: dict, on, axis: int, train: bool):
    """Batch norm of packed pre-activations ``z`` over the batch `axis` where `on`; ``(z, new stats)``.

    ``lay`` holds ``scale``/``shift`` and ``stats`` ``mean``/``var`` shaped as
    ``z`` without `axis`; members with batch norm off keep ``z`` and their stats.
    """
    expand = lambda a: jnp.expand_dims(a, axis)
    if train:
        z_bn, mean, var = batch_norm_train(z, expand(lay["scale"]), expand(lay["shift"]),
                                           stats["mean"], stats["var"], axis=axis)
        new = {"mean": jnp.where(on, mean, stats["mean"]), "var": jnp.where(on, var, stats["var"])}
    else:
        z_bn = batch_norm_eval(z, *(expand(a) for a in (lay["scale"], lay["shift"], stats["mean"], stats["var"])))
        new = stats
    return jnp.where(expand(on), z_bn, z), new


def unpack_params(packed: dict, plan: Plan, cfg: mlp.MLPConfig) -> dict:
    """Packed params -> max-size per-member params (S axis), zeros outside real networks.

    Host side (numpy); for tests and for handing members back to the masked
    layout. Batch-norm entries are not part of the packed layout and are left out.
    """
    t = jax.tree.map(np.asarray, plan.tables)
    S = len(t.member_slot_S)
    F, C, L, U = cfg.in_features, cfg.num_classes, cfg.max_layers, cfg.max_units
    out = {f"dense_{l}": {"kernel": np.zeros((S, F if l == 0 else U, U), np.float64),
                          "bias": np.zeros((S, U), np.float64)} for l in range(L)}
    out["out"] = {"kernel": np.zeros((S, U, C), np.float64), "bias": np.zeros((S, C), np.float64)}
    w1, b1 = np.asarray(packed["first"]["kernel"]), np.asarray(packed["first"]["bias"])
    for p in np.nonzero(t.col_member_P >= 0)[0]:
        m, u = t.col_member_P[p], t.col_unit_P[p]
        out["dense_0"]["kernel"][m, :, u] = w1[:, p]
        out["dense_0"]["bias"][m, u] = b1[p]
    base = 0
    for g, gs in zip(packed["groups"], plan.shape.groups):
        for k in range(gs.capacity):
            m = t.slot_member_T[base + k]
            if m < 0:
                continue
            for l in range(1, gs.depth):
                lay = g["layers"][l - 1]
                out[f"dense_{l}"]["kernel"][m, : gs.widths[l - 1], : gs.widths[l]] = np.asarray(lay["kernel"][k])
                out[f"dense_{l}"]["bias"][m, : gs.widths[l]] = np.asarray(lay["bias"][k])
            out["out"]["kernel"][m, : gs.widths[-1]] = np.asarray(g["out"]["kernel"][k])
            out["out"]["bias"][m] = np.asarray(g["out"]["bias"][k])
        base += gs.capacity
    return out


def _drop(u, h, rate):
    """Inverted dropout as `layers.dropout` applies it: keep where the uniform ``u >= rate`` (all broadcast)."""
    return jnp.where(u >= rate, h / (1.0 - rate), 0.0)


def _uniforms(keys, shape, dtype):
    """One ``uniform(key, shape)`` draw per key (units first, as `layers.dropout` draws): keys ``[S]``, or
    ``[S, K]`` for a batch drawn in K chunks (`train.chunk_key`), each chunk's ``shape[:-1] + (B / K,)``
    draw side by side along the batch, as the network drawing one chunk at a time does."""
    if keys.ndim == 1:
        return jax.vmap(lambda k: jax.random.uniform(k, shape, dtype))(keys)
    part = shape[:-1] + (shape[-1] // keys.shape[1],)
    u_SxKx_ = jax.vmap(jax.vmap(lambda k: jax.random.uniform(k, part, dtype)))(keys)
    return jnp.moveaxis(u_SxKx_, 1, -2).reshape(keys.shape[:1] + tuple(shape))


def _fold_in(keys, layer: int):
    """``fold_in(key, layer)`` of every key of `keys` (any shape)."""
    return jax.vmap(lambda k: jax.random.fold_in(k, layer))(keys.reshape(-1)).reshape(keys.shape)


def _forward(params, stats, x_BxF, ctx: _Context, tables: PlanTables, shape: PlanShape, act_names,
             train: bool = False, drop_keys_S=None, max_units: int = 0):
    """Logits of every slot, one array [K_g, C, B] per group, and the new batch stats.

    ``stats`` is `_pack`'s (``{}`` without batch norm); `train` normalizes with
    batch statistics and updates the running ones, else uses the running ones.
    ``drop_keys_S`` (train only): each member's key of this step (``[S]``),
    or its keys of the step's K chunks (``[S, K]``, per-member batch sizes);
    layer l drops units with ``fold_in(key, l)`` exactly as the member's own
    network does (a first-layer column reads row ``unit`` of its member's
    ``[max_units, B]`` draw, the prefix property of `layers.dropout`).
    """
    first = params["first"]
    if isinstance(first, list):  # blocked by optimizer (`_split_first`): a matmul per block
        z_PxB = jnp.concatenate([jnp.einsum("fp,bf->pb", b["kernel"], x_BxF) for b in first])
        first = {k: jnp.concatenate([b[k] for b in first]) for k in first[0] if k != "kernel"}
    else:
        z_PxB = jnp.einsum("fp,bf->pb", first["kernel"], x_BxF)
    z_PxB = z_PxB + first["bias"][:, None]
    new_stats = {}
    if stats:
        z_PxB, new_first = _normalize(z_PxB, first, stats["first"], ctx.col_bn_P, 1, train)
        new_stats = {"first": new_first, "groups": []}
    h_PxB = jnp.where(ctx.col_valid_P[:, None], _activate_columns(ctx.col_act_P[:, None], z_PxB, act_names), 0.0)
    if drop_keys_S is not None:
        keys_0 = _fold_in(drop_keys_S, 0)
        u_SxUxB = _uniforms(keys_0, (max_units, x_BxF.shape[0]), h_PxB.dtype)
        u_PxB = u_SxUxB[jnp.maximum(tables.col_member_P, 0), tables.col_unit_P]
        h_PxB = _drop(u_PxB, h_PxB, ctx.col_rate_P[:, None])
    rows_RxB = _gather_rows(h_PxB, tables.gather_R, tables.inverse_P)
    sizes = [g.capacity * g.widths[0] for g in shape.groups]
    splits = jax.lax.split(rows_RxB, sizes, axis=0) if len(sizes) > 1 else [rows_RxB]
    B = x_BxF.shape[0]
    logits = []
    for i, (rows, group, p, slots) in enumerate(zip(splits, shape.groups, params["groups"], ctx.groups)):
        h = rows.reshape(group.capacity, group.widths[0], B)
        layer_stats = []
        for l in range(1, group.depth):
            lay = p["layers"][l - 1]
            z = jnp.einsum("kio,kib->kob", lay["kernel"], h) + lay["bias"][:, :, None]
            if stats:
                z, new = _normalize(z, lay, stats["groups"][i][l - 1], slots.bn_K[:, None], 2, train)
                layer_stats.append(new)
            h = jnp.where(slots.masks[l][:, :, None],
                          _activate_columns(slots.act_KxL[:, l, None, None], z, act_names), 0.0)
            if drop_keys_S is not None:
                keys_l = _fold_in(drop_keys_S[slots.member_K], l)
                h = _drop(_uniforms(keys_l, h.shape[1:], h.dtype), h, slots.rate_K[:, None, None])
        if stats:
            new_stats["groups"].append(layer_stats)
        logits.append(jnp.einsum("kic,kib->kcb", p["out"]["kernel"], h) + p["out"]["bias"][:, :, None])
    return logits, new_stats


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _span_metrics(curves, members: int, start: int, num_epochs: int, fitness: str) -> train.Metrics:
    """`train.Metrics` of the first `members` over a span's epochs, from a span program's full-length curves."""
    return train.metrics_of(*(c[:members, start:start + num_epochs] for c in curves), fitness)


def _slot_losses(logits, y_B):
    """Mean cross-entropy and correct counts per slot, concatenated over groups ([T])."""
    losses, correct = [], []
    for lg in logits:
        logp = jax.nn.log_softmax(lg, axis=1)
        nll_KxB = -jnp.take_along_axis(logp, y_B[None, None, :], axis=1)[:, 0, :]
        losses.append(nll_KxB)
        correct.append(jnp.argmax(lg, axis=1) == y_B[None, :])
    return jnp.concatenate(losses), jnp.concatenate(correct)


# --------------------------------------------------------------------------
# One packed program: a fold's training as functions over named state
# --------------------------------------------------------------------------


class _Setup(NamedTuple):
    """What every program of one trainer reads (static: one per batch size's trainer)."""

    config: train.TrainConfig
    model: mlp.MLPConfig  # the max-size network the masked layout would use
    hparams: Callable  # position -> (mlp.Arch, optim.OptHParams), traceable
    act_names: tuple[str, ...]  # the activations the space offers
    opt_names: tuple[str, ...]  # the optimizers the space offers; `OptHParams.optimizer` indexes it
    adam_names: tuple[str, ...]  # `optim.adam_hparams(space)`
    bn: bool  # some member may use batch norm: carry its parameters and statistics
    drops: bool  # some member may drop units


def _setup(space: SearchSpace, config: train.TrainConfig, in_features: int, num_classes: int) -> _Setup:
    model = mlp.config(space, in_features, num_classes)
    rate = space.params.get("dropout")
    return _Setup(config, model, mlp.decode(space, model), mlp.activation_names(space), optim.optimizer_names(space),
                  optim.adam_hparams(space), True in _names_in(space, "batch_norm", False),
                  rate is not None and not (isinstance(rate, Fixed) and rate.value == 0))


class _Optimizers(NamedTuple):
    """A program's optimizers (`optim.make_optimizer`), over one run's schedule length."""

    every: Any  # every optimizer of the space, the member's chosen by index (tails, unblocked first layer)
    blocks: tuple  # with `PlanShape.blocks`: block o's optimizer alone, o indexing `_Setup.opt_names`


def _optimizers(setup: _Setup, shape: PlanShape, n_train: int) -> _Optimizers:
    steps = train.total_steps(setup.config, n_train)
    every = optim.make_optimizer(setup.opt_names, steps, setup.adam_names)
    blocks = tuple(optim.make_optimizer((name,), steps, setup.adam_names) for name in setup.opt_names)
    return _Optimizers(every, blocks if shape.blocks else ())


class LoopState(NamedTuple):
    """A packed program's training state between two steps."""

    params: dict  # {"first": a dict per optimizer block (a dict when unblocked), "groups": a dict per tail group}
    bn_stats: dict  # `_pack`'s running statistics ({} without batch norm)
    opt_state: dict  # {"first": as params, "groups": each tail group's state over its `_flat` params}


class _Fold(NamedTuple):
    """Everything one fold's steps read besides the loop state."""

    setup: _Setup
    shape: PlanShape
    tables: PlanTables
    ctx: _Context
    optimizers: _Optimizers
    data: train.Data


class _Span(NamedTuple):
    """A schedule's rung: the members' states and the epochs ``first .. first + count - 1`` to train."""

    states: train.TrainState  # max-size member states (leading S)
    first: jax.Array  # int32
    count: jax.Array  # int32


def _total_loss(params, bn_stats, fold: _Fold, x_BxF, y_B, drop_keys_S=None):
    """The sum of the slots' mean cross-entropies (what one step differentiates) and ``(loss_T, new stats)``."""
    setup = fold.setup
    logits, bn_stats = _forward(params, bn_stats, x_BxF, fold.ctx, fold.tables, fold.shape, setup.act_names, True,
                                drop_keys_S if setup.drops else None, setup.model.max_units)
    nll_TxB, _ = _slot_losses(logits, y_B)
    loss_T = nll_TxB.mean(axis=1)
    valid_T = fold.tables.slot_member_T >= 0
    return jnp.sum(jnp.where(valid_T, loss_T, 0.0)), (loss_T, bn_stats)


def _start(fold: _Fold, start_S: dict, resume_opt=None) -> tuple[LoopState, Any]:
    """The loop state of members starting from their max-size variables `start_S` (with `resume_opt`, their
    optimizer states), and the first layer's every-optimizer state that `_joined` rebuilds it from."""
    shape, opts = fold.shape, fold.optimizers
    params, bn_stats = _pack(start_S, fold.tables, shape, fold.setup.bn)
    # Every column follows its own member's optimizer: the hyperparameters broadcast against the columns.
    opt_state = {"first": opts.every.init(params["first"], fold.ctx.col_hp),
                 "groups": [jax.vmap(opts.every.init)(p, slots.hp_K)
                            for p, slots in zip(params["groups"], fold.ctx.groups)]}
    if resume_opt is not None:  # the members' optimizer states, packed like their params
        opt_state = _pack_opt(resume_opt, opt_state, start_S["batch_stats"], fold.tables, shape, fold.setup.bn)
    first_state = opt_state["first"]
    if shape.blocks:  # the first layer as one array per optimizer block, each with its own optimizer
        blocks, block_states = _split_first(params["first"], first_state, opts.blocks, shape.blocks)
        params, opt_state = {**params, "first": blocks}, {**opt_state, "first": block_states}
    # Each tail group's optimizer runs on one [slots, n] array: a few fusions per optimizer, not a few per leaf.
    opt_state = {**opt_state, "groups": [_flat_state(s) for s in opt_state["groups"]]}
    return LoopState(params, bn_stats, opt_state), first_state


def _joined_params(shape: PlanShape, params: dict) -> dict:
    """The loop's params as `_unpack` reads them (the first layer's blocks side by side)."""
    return {**params, "first": _join_columns(params["first"])} if shape.blocks else params


def _joined_opt_state(shape: PlanShape, state: LoopState, first_state) -> dict:
    """The loop's optimizer state as `_unpack_opt` reads it (`first_state`: `_start`'s)."""
    opt_state = {**state.opt_state, "groups": [_unflat_state(s, p) for s, p in
                                               zip(state.opt_state["groups"], state.params["groups"])]}
    if not shape.blocks:
        return opt_state
    _, first = _join_first(state.params["first"], opt_state["first"], first_state, shape.blocks)
    return {**opt_state, "first": first}


def _update(fold: _Fold, grads: dict, opt_state: dict, params: dict) -> tuple[dict, dict]:
    """Every block's and tail group's optimizer update."""
    opts = fold.optimizers
    if fold.shape.blocks:
        first_updates, first_state = map(list, zip(*(tx.update(g, s, p) for tx, g, s, p in zip(
            opts.blocks, grads["first"], opt_state["first"], params["first"]))))
    else:
        first_updates, first_state = opts.every.update(grads["first"], opt_state["first"], params["first"])
    tail_updates, tail_states = [], []
    for grad_K, state_K, params_K in zip(grads["groups"], opt_state["groups"], params["groups"]):
        flat_updates, state_K = jax.vmap(opts.every.update)(_flat(grad_K), state_K, _flat(params_K))
        tail_updates.append(_unflat(flat_updates, grad_K))
        tail_states.append(state_K)
    return {"first": first_updates, "groups": tail_updates}, {"first": first_state, "groups": tail_states}


def _step(fold: _Fold, state: LoopState, inputs) -> tuple[LoopState, jax.Array]:
    """One minibatch for every member: ``(state, (idx_B, drop_keys_S)) -> (state, loss_T)``."""
    idx_B, drop_keys_S = inputs
    grads, (loss_T, bn_stats) = jax.grad(_total_loss, has_aux=True)(
        state.params, state.bn_stats, fold, fold.data.x_train[idx_B], fold.data.y_train[idx_B], drop_keys_S)
    updates, opt_state = _update(fold, grads, state.opt_state, state.params)
    return LoopState(optax.apply_updates(state.params, updates), bn_stats, opt_state), loss_T


def _evaluate(fold: _Fold, params: dict, bn_stats: dict) -> tuple[jax.Array, jax.Array]:
    """Every slot's validation accuracy and mean loss ([T] each), in `train.eval_chunks`' chunks."""
    data, shape, tables = fold.data, fold.shape, fold.tables
    x, y, valid = train.eval_chunks(data, fold.setup.config)

    def body(totals, inputs):
        x_R, y_R, valid_R = inputs
        logits = _forward(params, bn_stats, x_R, fold.ctx, tables, shape, fold.setup.act_names)[0]
        nll, correct = _slot_losses(logits, y_R)
        return (totals[0] + (correct & valid_R).sum(1), totals[1] + jnp.where(valid_R, nll, 0.0).sum(1)), None

    T = tables.slot_member_T.shape[0]
    zeros = (jnp.zeros((T,), jnp.int32), jnp.zeros((T,), jnp.float32))
    (correct, vloss), _ = jax.lax.scan(body, zeros, (x, y, valid))
    m = data.x_val.shape[0]
    return correct / m, vloss / m


def _epoch(fold: _Fold, state: LoopState, inputs) -> tuple[LoopState, tuple]:
    """One epoch of shuffled minibatches, then the evaluation: ``(state, (shuffle key, drop keys_S)) ->
    (state, (train loss_T, val accuracy_T, val loss_T))``."""
    k_perm, k_drop_S = inputs
    config, n = fold.setup.config, fold.data.x_train.shape[0]
    batch = min(config.batch_size, n)
    steps = n // batch
    idx_NxB = jax.random.permutation(k_perm, n)[: steps * batch].reshape(steps, batch)
    if config.batch_sizes:  # a batch-size group: each batch's chunks draw as `train.fit_span`'s do
        chunks = batch // train.chunk_size(config.batch_sizes, n)
        step_keys_NxS = jax.vmap(lambda u: jax.vmap(lambda k: train.chunk_keys(k, u, chunks))(k_drop_S))(
            jnp.arange(steps))
    else:
        step_keys_NxS = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, steps))(k_drop_S), 0, 1)
    state, loss_NxT = jax.lax.scan(functools.partial(_step, fold), state, (idx_NxB, step_keys_NxS))
    accuracy_T, vloss_T = _evaluate(fold, state.params, state.bn_stats)
    return state, (loss_NxT.mean(0), accuracy_T, vloss_T)


def _epoch_keys(config: train.TrainConfig, keys_S, shuffle_key) -> tuple[jax.Array, jax.Array]:
    """Each epoch's shuffle key [E] and each member's dropout key [E, S], as `train.fit` derives them."""
    k_epochs_S = jax.vmap(lambda k: jax.random.split(k, 3)[1])(keys_S)
    return (jax.random.split(shuffle_key, config.epochs),
            jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, config.epochs))(k_epochs_S), 0, 1))


def _train_fold(setup: _Setup, shape: PlanShape, keys_S, positions_SxD, data: train.Data, shuffle_key,
                tables: PlanTables, warm=None, span: _Span | None = None):
    """One split's training: `train.Metrics` [S] (with `warm` ``(variables_S, keep_S)``, and the members'
    variables after it); with `span`, the curves of its epochs and the members' `train.TrainState`s."""
    arch_S, hp_S = jax.vmap(setup.hparams)(positions_SxD)
    fold = _Fold(setup, shape, tables, _context(arch_S, hp_S, tables, shape),
                 _optimizers(setup, shape, data.x_train.shape[0]), data)
    if span is not None:
        start_S = {"params": span.states.params, "batch_stats": span.states.batch_stats}
    else:
        start_S = _init_variables(setup, keys_S, positions_SxD)
    if warm is not None:  # kept members continue from their variables (optimizer state is new)
        variables_S, keep_S = warm
        start_S = jax.tree.map(
            lambda v, f: jnp.where(keep_S.reshape((-1,) + (1,) * (v.ndim - 1)), v, f), variables_S, start_S)
    state, first_state = _start(fold, start_S, None if span is None else span.states.opt_state)
    shuffle_keys, epoch_keys_ExS = _epoch_keys(setup.config, keys_S, shuffle_key)
    if span is not None:
        return _train_span(fold, state, first_state, start_S, span, shuffle_keys, epoch_keys_ExS)
    state, curves_ExT = jax.lax.scan(functools.partial(_epoch, fold), state, (shuffle_keys, epoch_keys_ExS))
    train_loss_SxE, accuracy_SxE, vloss_SxE = (a[:, tables.member_slot_S].T for a in curves_ExT)
    metrics = train.metrics_of(train_loss_SxE, accuracy_SxE, vloss_SxE, setup.config.fitness)
    if warm is None:
        return metrics
    return metrics, _unpack(start_S, _joined_params(shape, state.params), state.bn_stats, tables, shape, setup.bn)


def _train_span(fold: _Fold, state: LoopState, first_state, start_S: dict, span: _Span, shuffle_keys,
                epoch_keys_ExS):
    """`span`'s epochs of the whole run's keys (`train.fit_span`): ``((train loss, val accuracy, val loss)
    curves [S, epochs], NaN outside the span; the members' `train.TrainState`s)``."""
    def one_epoch(e, loop):
        state, curves = loop
        state, row = _epoch(fold, state, (shuffle_keys[e], epoch_keys_ExS[e]))
        return state, tuple(c.at[e].set(v) for c, v in zip(curves, row))

    tables, shape, bn = fold.tables, fold.shape, fold.setup.bn
    blank_ExT = jnp.full((fold.setup.config.epochs, tables.slot_member_T.shape[0]), jnp.nan)
    state, curves_ExT = jax.lax.fori_loop(span.first, span.first + span.count, one_epoch, (state, (blank_ExT,) * 3))
    variables = _unpack(start_S, _joined_params(shape, state.params), state.bn_stats, tables, shape, bn)
    opt_state = _joined_opt_state(shape, state, first_state)
    return tuple(a[:, tables.member_slot_S].T for a in curves_ExT), train.TrainState(
        variables["params"], variables["batch_stats"],
        _unpack_opt(span.states.opt_state, opt_state, start_S, state.bn_stats, tables, shape, bn))


def _train(setup: _Setup, shape: PlanShape, keys_S, positions_SxD, data, shuffle_key, tables: PlanTables,
           warm=None):
    """`_train_fold` on a hold-out split, or on k `train.FoldData` folds one after another on the same plan."""
    if not isinstance(data, train.FoldData):
        return _train_fold(setup, shape, keys_S, positions_SxD, data, shuffle_key, tables, warm)
    if warm is not None:
        raise ValueError("warm members train on one hold-out split, not on k folds")
    folds = data.train_idx.shape[0]
    keys_KxS = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, folds))(keys_S), 0, 1)

    def one_fold(args):
        k_S, i, train_idx, val_idx = args
        split = train.Data(data.x[train_idx], data.y[train_idx], data.x[val_idx], data.y[val_idx])
        return _train_fold(setup, shape, k_S, positions_SxD, split, jax.random.fold_in(shuffle_key, i), tables)

    return train.combine_folds(jax.lax.map(one_fold, (keys_KxS, jnp.arange(folds), data.train_idx, data.val_idx)))


# --------------------------------------------------------------------------
# Members as the masked layout holds them (max-size variables)
# --------------------------------------------------------------------------


def _init_variables(setup: _Setup, keys_S, positions_SxD) -> dict:
    """Every member's max-size variables as its training starts (`train.fit`'s init key)."""
    arch_S, _ = jax.vmap(setup.hparams)(positions_SxD)
    k_init = jax.vmap(lambda k: jax.random.split(k, 3)[0])(keys_S)
    return jax.vmap(mlp.init_mlp, in_axes=(0, 0, None))(k_init, arch_S, setup.model)


def _init(setup: _Setup, keys_S, positions_SxD, plan: Plan):
    """``(packed params, packed batch stats)`` as training starts."""
    return _pack(_init_variables(setup, keys_S, positions_SxD), plan.tables, plan.shape, setup.bn)


def _apply(setup: _Setup, variables, positions_SxD, x_BxF, plan: Plan, train_mode: bool = False):
    """``(logits_SxBxC, new stats)`` of packed ``variables = (params, stats)``."""
    arch_S, hp_S = jax.vmap(setup.hparams)(positions_SxD)
    ctx = _context(arch_S, hp_S, plan.tables, plan.shape)
    logits, stats = _forward(*variables, x_BxF, ctx, plan.tables, plan.shape, setup.act_names, train_mode)
    return jnp.swapaxes(jnp.concatenate(logits)[plan.tables.member_slot_S], 1, 2), stats


def _loss(setup: _Setup, variables, positions_SxD, x_BxF, y_B, plan: Plan, drop_keys_S=None):
    """Sum of the members' mean training losses of packed ``(params, stats)`` (batch statistics; dropout with
    each member's key ``drop_keys_S`` where the space has dropout)."""
    arch_S, hp_S = jax.vmap(setup.hparams)(positions_SxD)
    fold = _Fold(setup, plan.shape, plan.tables, _context(arch_S, hp_S, plan.tables, plan.shape), None, None)
    return _total_loss(*variables, fold, x_BxF, y_B, drop_keys_S)[0]


def _start_member(setup: _Setup, key, position, n_train: int, variables=None, keep=None) -> train.TrainState:
    hp = setup.hparams(position)[1]
    optimizer = optim.make_optimizer(setup.opt_names, train.total_steps(setup.config, n_train), setup.adam_names)
    return train.start_state(key, lambda k: mlp.init_mlp(k, setup.hparams(position)[0], setup.model), optimizer,
                             hp, variables, keep)


# --------------------------------------------------------------------------
# The trainer (host side): plans, a program cache, one device or many
# --------------------------------------------------------------------------


class PackedTrainer(NamedTuple):
    """The packed layout's entry points (see `make_packed_train`).

    Attributes:
        train_swarm: ``(keys_S, positions_SxD, data, shuffle_key=None) -> Metrics[S]``
            (all members see the same minibatches, from the shared shuffle key).
            Host function: decodes the swarm, plans it, runs a cached program.
            Warm: ``train_swarm(..., variables_S=v, keep_S=keep) -> (Metrics[S], variables_S)``
            where ``v`` are max-size member variables (`init_variables`, or
            the last round's) and members with ``keep`` continue from theirs.
        plan: ``(positions_SxD) -> Plan`` (cached shapes are reused; over several devices
            its tables have a leading device axis and ``order`` holds the member at each place).
        compile: ``(keys_S, positions_SxD, data, shuffle_key) -> (compiled, plan)``
            ahead of time; on one device call ``compiled(keys_S, positions_SxD, data, shuffle_key, plan.tables)``.
        program: ``(PlanShape) -> jitted fn`` with that same signature (cached; one device).
        init: ``(keys_S, positions_SxD, plan) -> (packed params, packed batch stats)`` as training starts.
        apply: ``((params, stats), positions_SxD, x_BxF, plan, train_mode=False) -> (logits_SxBxC, stats)``.
        loss: ``((params, stats), positions_SxD, x_BxF, y_B, plan, drop_keys_S=None)`` -> the sum of
            the members' mean training losses.
        stats: dict with "traces" (programs traced so far), "shapes" (known shapes) and "compile_s"
            (the seconds each span program took to compile, in order).
        model_config: the max-size `mlp.MLPConfig` the masked layout would use.
        init_variables: ``(keys_S, positions_SxD) -> max-size variables`` as training starts.
        place: ``(data) -> data`` where the programs read it (replicated over the trainer's devices).
        start_states: ``(keys_S, positions_SxD, n_train, variables=None, keep_S=None) -> TrainState[S]``
            before the first epoch (max-size member networks and their optimizer states, as the masked
            layout's; warm members with ``keep_S`` start from their `variables`).
        train_span: ``(keys_S, positions_SxD, data, shuffle_key, states_S, start, num_epochs) ->
            (Metrics[S], states_S)``: epochs ``start ..`` of a schedule's rung (`train.fit_span`), one device.
            One program per plan shape serves every rung it fits: the span's start and length are
            traced and the members are padded to the shape's slots.
        by_batch: a ``batch_size`` choice's trainers, one per size (`_by_batch_size`; their `plan`,
            `compile`, `program`, `init`, `apply` and `loss` serve that size's members); None otherwise.
        split: with `by_batch`, ``positions_SxD -> {batch size: member indices}`` for the sizes the
            members draw (in `by_batch`'s order): which members each size's trainer trains.
    """

    train_swarm: Callable
    plan: Callable
    compile: Callable
    program: Callable
    init: Callable
    apply: Callable
    loss: Callable
    stats: dict
    model_config: mlp.MLPConfig
    init_variables: Callable
    place: Callable
    start_states: Callable
    train_span: Callable
    by_batch: dict | None = None
    split: Callable | None = None


def make_packed_train(
    space: SearchSpace,
    config: train.TrainConfig,
    in_features: int,
    num_classes: int,
    groups: int = 8,
    examples: int | None = None,
    devices: Sequence | None = None,
    cost_model: CostModel = BUILTIN,
) -> PackedTrainer:
    """Builds the packed-layout trainer for `space` (same objective as `train.make_train`).

    Args:
        space: the search space; ``supports(space)`` must hold.
        config: the same `train.TrainConfig` the masked trainer takes.
        in_features, num_classes: F and C of the data.
        groups: the most tail groups of a fresh plan.
        examples: training examples per member and round that the plan rules
            weigh compiles against (default: the data's rows x epochs x folds;
            a bench that times a cut epoch passes the full one's).
        devices: devices to deal the members to (e.g. `jax.devices()`, every
            process's); None: one device. With several, the swarm is padded
            to a multiple of them (copies of its first members), members of
            like architectures are dealt out in turn, every device trains its
            share in one `jax.shard_map` program on one plan shape with its
            own tables, and the metrics come back replicated in the members'
            order.
        cost_model: what a compile and training cost (`costs.CostModel`): a
            known plan shape is reused whenever its extra padding costs less
            training than compiling a fresh plan would.

    Returns:
        `PackedTrainer`. A ``batch_size`` choice trains one packed trainer per
        size (`_by_batch_size`), each member in its own size's, on batches of
        its real size.
    """
    if not supports(space):
        raise ValueError(f"the packed layout trains MLP spaces, not this {family_of(space).name!r} space; "
                         "use the masked or serial layout")
    train.check_config(config)
    config = train.batch_config(space, config, family_of(space))
    args = (in_features, num_classes, groups, examples, devices, cost_model)
    if not config.batch_sizes:
        return _make_packed(space, config, *args)
    return _by_batch_size(space, {b: _make_packed(space, config._replace(batch_size=b), *args)
                                  for b in config.batch_sizes})


def _planner(setup: _Setup, in_features: int, num_classes: int, groups: int, parts: int, cost_model: CostModel,
             known: list) -> Callable:
    """``plan(positions_SxD, round_examples=None, compile_s=cost_model.packed_compile_s) -> Plan`` of a
    trainer: its members padded to a multiple of `parts`, `known` the shapes it has compiled."""
    decode = jax.jit(jax.vmap(setup.hparams))

    def archs_of(positions_SxD):
        """Each member's ``(depth, widths)`` and its optimizer's index in `setup.opt_names`."""
        arch_S, hp_S = decode(jnp.asarray(positions_SxD, jnp.float32))
        n, u = np.asarray(arch_S.n_layers), np.asarray(arch_S.units)
        opts = np.clip(np.asarray(hp_S.optimizer), 0, len(setup.opt_names) - 1)
        return [(int(n[i]), tuple(int(v) for v in u[i, : n[i]])) for i in range(len(n))], [int(o) for o in opts]

    def plan(positions_SxD, round_examples: int | None = None, compile_s: float = cost_model.packed_compile_s):
        switch = merge = None
        if round_examples is not None:  # a multiply-add per example costs 6 FLOPs per trained example
            merge = cost_model.group_compile_s * cost_model.train_flops / (6 * round_examples)
            switch = compile_s * cost_model.train_flops / (6 * round_examples)
        archs, opts = archs_of(positions_SxD)
        pad = [i % len(archs) for i in range(-(-len(archs) // parts) * parts)]
        p = make_plan([archs[i] for i in pad], setup.model.max_units, num_classes, in_features, groups, known,
                      switch_cost=switch, free_merge=merge, parts=parts, optimizers=[opts[i] for i in pad],
                      n_optimizers=len(setup.opt_names))
        order = None if p.order is None else p.order % len(archs)  # a pad place holds a copy of a member
        return Plan(p.shape, jax.tree.map(jnp.asarray, p.tables), order)

    return plan


def _sharded(setup: _Setup, shape: PlanShape, stats: dict, mesh, impl: str):
    """`_train` of `shape` on every device of `mesh`, each on its dealt members and its own tables."""
    spread, whole = PartitionSpec(execute.PARTICLE_AXIS), PartitionSpec()  # per member (dealt), shared

    def local(key_data, positions, data, shuffle_data, tables, *warm):
        stats["traces"] += 1
        keys, shuffle_key = (jax.random.wrap_key_data(k, impl=impl) for k in (key_data, shuffle_data))
        return _train(setup, shape, keys, positions, data, shuffle_key, jax.tree.map(lambda t: t[0], tables),
                      warm or None)

    def swarm(key_data_S, positions_SxD, data, shuffle_data, tables, order, place_of, *warm):
        deal = lambda x: jax.lax.with_sharding_constraint(x[order], NamedSharding(mesh, spread))
        warm = tuple(jax.tree.map(deal, w) for w in warm)
        specs = (spread, spread, whole, whole, spread) + (spread,) * len(warm)
        out = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=spread, check_vma=False)(
            deal(key_data_S), deal(positions_SxD), data, shuffle_data, tables, *warm)
        return jax.tree.map(lambda x: x[place_of], out)

    return jax.jit(swarm, out_shardings=NamedSharding(mesh, whole))


def _programs(setup: _Setup, stats: dict, mesh) -> Callable:
    """``program(shape, impl=None, span=False)``: the cached program of a plan shape (over `mesh`: for keys of
    `impl`); with `span`, ``(keys, positions, data, shuffle_key, tables, states, first, count) ->
    (curves, states)`` trains epochs ``first .. first + count - 1`` (both traced: one program for every span)."""
    cache: dict = {}

    def run(shape, keys_S, positions_SxD, data, shuffle_key, tables, warm=None):
        stats["traces"] += 1
        return _train(setup, shape, keys_S, positions_SxD, data, shuffle_key, tables, warm)

    def run_span(shape, keys_S, positions_SxD, data, shuffle_key, tables, states_S, first, count):
        stats["traces"] += 1
        return _train_fold(setup, shape, keys_S, positions_SxD, data, shuffle_key, tables,
                           span=_Span(states_S, first, count))

    def program(shape: PlanShape, impl: str | None = None, span: bool = False):
        if (shape, impl, span) not in cache:
            if span:
                cache[shape, impl, span] = jax.jit(functools.partial(run_span, shape))
            elif mesh is None:
                cache[shape, impl, span] = jax.jit(functools.partial(run, shape))
            else:
                cache[shape, impl, span] = _sharded(setup, shape, stats, mesh, impl)
            if shape not in stats["shapes"]:
                stats["shapes"].append(shape)
        return cache[shape, impl, span]

    return program


def _make_packed(space: SearchSpace, config: train.TrainConfig, in_features: int, num_classes: int, groups: int,
                 examples: int | None, devices: Sequence | None, cost_model: CostModel) -> PackedTrainer:
    """`make_packed_train`'s trainer of members that share ``config.batch_size`` (``config`` as
    `train.batch_config` left it; with ``config.batch_sizes``, its dropout draws per chunk)."""
    setup = _setup(space, config, in_features, num_classes)
    stats = {"traces": 0, "shapes": [], "compile_s": []}  # compile_s: each span program's, measured
    mesh = None if devices is None or len(devices) < 2 else execute.particle_mesh(devices)
    replicated = None if mesh is None else NamedSharding(mesh, PartitionSpec())
    plan = _planner(setup, in_features, num_classes, groups, 1 if mesh is None else mesh.devices.size, cost_model,
                    stats["shapes"])
    program = _programs(setup, stats, mesh)

    def place(data):
        """The data where the programs read it: as it is on one device, replicated over `devices`."""
        return data if mesh is None else jax.tree.map(lambda x: execute.put(x, replicated), data)

    def examples_of(data) -> int:
        """Training examples one member sees in a round (every fold's, every epoch's), or `examples`."""
        if examples is not None:
            return examples
        rows = data.train_idx.size if isinstance(data, train.FoldData) else data.x_train.shape[0]
        return rows * config.epochs

    def call(keys_S, positions_SxD, data, shuffle_key, warm):
        """``(program, its arguments, plan)`` for this swarm, planned now."""
        p = plan(positions_SxD, examples_of(data))
        if mesh is None:  # warm left out when None: the signature `compile`'s callers call
            return program(p.shape), (keys_S, positions_SxD, data, shuffle_key, p.tables) + (
                () if warm is None else (warm,)), p
        place_of = np.empty(positions_SxD.shape[0], np.int32)
        place_of[p.order[::-1]] = np.arange(len(p.order) - 1, -1, -1)  # each member's first place
        put = lambda x: execute.put(x, replicated)
        args = (put(jax.random.key_data(keys_S)), put(positions_SxD), place(data),
                put(jax.random.key_data(shuffle_key)),
                jax.tree.map(lambda t: execute.put(t, NamedSharding(mesh, PartitionSpec(execute.PARTICLE_AXIS))),
                             p.tables), put(p.order), put(place_of))
        if warm is not None:
            args += (jax.tree.map(put, warm[0]), put(warm[1]))
        return program(p.shape, str(jax.random.key_impl(keys_S))), args, p

    def train_swarm(keys_S, positions_SxD, data, shuffle_key=None, variables_S=None, keep_S=None):
        if shuffle_key is None:
            shuffle_key = jax.random.fold_in(keys_S[0], 0x5EED)
        warm = None if variables_S is None else (variables_S, jnp.asarray(keep_S, jnp.bool_))
        fn, args, _ = call(keys_S, positions_SxD, data, shuffle_key, warm)
        return fn(*args)

    def compile_(keys_S, positions_SxD, data, shuffle_key):
        fn, args, p = call(keys_S, positions_SxD, data, shuffle_key, None)
        return fn.lower(*args).compile(), p

    # variables and keep None (fresh members) are empty pytrees to vmap: one function, a trace for each case.
    start_members = jax.jit(jax.vmap(functools.partial(_start_member, setup), in_axes=(0, 0, None, 0, 0)),
                            static_argnums=2)

    def start_states(keys_S, positions_SxD, n_train: int, variables=None, keep_S=None):
        """Every member's `train.TrainState` before its first epoch (the masked layout's, max-size).

        Warm: members with `keep_S` true start from their `variables` (member order, as `init_variables`).
        """
        return start_members(keys_S, positions_SxD, int(n_train), variables, keep_S)

    span = _span_trainer(config, mesh, plan, program, stats, examples_of, cost_model)
    return PackedTrainer(train_swarm, plan, compile_, program, functools.partial(_init, setup),
                         functools.partial(_apply, setup), functools.partial(_loss, setup), stats, setup.model,
                         functools.partial(_init_variables, setup), place, start_states, span)


def _span_trainer(config: train.TrainConfig, mesh, plan: Callable, program: Callable, stats: dict,
                  examples_of: Callable, cost_model: CostModel) -> Callable:
    """A trainer's `PackedTrainer.train_span`, its compiled span programs cached by plan and argument shapes."""
    spans: dict = {}

    def train_span(keys_S, positions_SxD, data, shuffle_key, states_S, start, num_epochs: int):
        """`num_epochs` epochs from epoch `start` of the members' states: ``(Metrics[S], states_S)`` (one device)."""
        if mesh is not None:
            raise ValueError("the packed layout trains spans of epochs (a schedule's rungs) on one device only")
        start, num_epochs = int(start), int(num_epochs)
        if num_epochs < 1 or not 0 <= start <= config.epochs - num_epochs:
            raise ValueError(f"a span of epochs needs 0 <= start and start + num_epochs <= {config.epochs}, "
                             f"got start {start}, num_epochs {num_epochs}")
        p = plan(positions_SxD, examples_of(data) * num_epochs // config.epochs, cost_model.span_compile_s)
        # The members are padded to the shape's slots (copies of the first, in no slot): a program then
        # serves every rung its shape fits, whatever its size.
        S, T = keys_S.shape[0], sum(g.capacity for g in p.shape.groups)
        pad = np.concatenate([np.arange(S), np.zeros(T - S, np.int64)])
        tables = p.tables._replace(member_slot_S=p.tables.member_slot_S[pad])
        keys_T, positions_TxD, states_T = train.take_members((keys_S, positions_SxD, states_S), pad)
        args = (keys_T, positions_TxD, data, shuffle_key, tables, states_T, jnp.int32(start), jnp.int32(num_epochs))
        key = (p.shape, tuple((a.shape, a.dtype) for a in jax.tree.leaves(args)))
        if key not in spans:  # compiled ahead, timed (stats["compile_s"])
            t0 = time.perf_counter()
            spans[key] = program(p.shape, span=True).lower(*args).compile()
            stats["compile_s"].append(time.perf_counter() - t0)
        curves, states_T = spans[key](*args)
        metrics = _span_metrics(curves, S, start, num_epochs, config.fitness)
        return metrics, train.take_members(states_T, np.arange(S))

    return train_span


def _by_batch_size(space: SearchSpace, trainers: dict[int, PackedTrainer]) -> PackedTrainer:
    """One `PackedTrainer` over `trainers` (batch size -> the trainer of members of that size): each call
    splits the swarm by its members' batch sizes, every group trains in its own size's programs (the
    shared shuffle key: the same permutation for all), and the results come back in the members' order."""
    sizes = tuple(trainers)
    read = jax.jit(jax.vmap(train.batch_reader(space)))
    stats = {"traces": 0, "shapes": [], "compile_s": []}

    def split(positions_SxD) -> dict[int, np.ndarray]:
        b_S = np.asarray(read(jnp.asarray(positions_SxD, jnp.float32)))
        return {b: np.flatnonzero(b_S == b) for b in sizes if (b_S == b).any()}

    def each(positions_SxD, call):
        """``call(trainer, member indices)`` for every batch size present, merged back in member order."""
        parts = [(idx, call(trainers[b], idx)) for b, idx in split(positions_SxD).items()]
        stats["traces"] = sum(t.stats["traces"] for t in trainers.values())  # the groups' counters, summed
        stats["shapes"] = [shape for t in trainers.values() for shape in t.stats["shapes"]]
        stats["compile_s"] = [s for t in trainers.values() for s in t.stats["compile_s"]]
        if len(parts) == 1:
            return parts[0][1]
        inverse = np.argsort(np.concatenate([idx for idx, _ in parts]))
        return jax.tree.map(lambda *a: jnp.concatenate(a)[inverse], *(out for _, out in parts))

    def train_swarm(keys_S, positions_SxD, data, shuffle_key=None, variables_S=None, keep_S=None):
        if shuffle_key is None:  # the whole swarm's (`_make_packed`'s), whichever groups it splits into
            shuffle_key = jax.random.fold_in(keys_S[0], 0x5EED)
        if variables_S is None:
            return each(positions_SxD, lambda t, i: t.train_swarm(keys_S[i], positions_SxD[i], data, shuffle_key))
        return each(positions_SxD, lambda t, i: t.train_swarm(
            keys_S[i], positions_SxD[i], data, shuffle_key, train.take_members(variables_S, i),
            np.asarray(keep_S)[i]))

    def start_states(keys_S, positions_SxD, n_train: int, variables=None, keep_S=None):
        return each(positions_SxD, lambda t, i: t.start_states(
            keys_S[i], positions_SxD[i], n_train, None if variables is None else train.take_members(variables, i),
            None if keep_S is None else np.asarray(keep_S)[i]))

    def train_span(keys_S, positions_SxD, data, shuffle_key, states_S, start, num_epochs: int):
        return each(positions_SxD, lambda t, i: t.train_span(
            keys_S[i], positions_SxD[i], data, shuffle_key, train.take_members(states_S, i), start, num_epochs))

    def per_size(name: str) -> Callable:
        def refuse(*args, **kwargs):
            raise ValueError(f"this space's members train in one packed trainer per batch size {list(sizes)}; "
                             f"call {name} on that size's, trainer.by_batch[b]")
        return refuse

    any_ = trainers[sizes[0]]
    return PackedTrainer(train_swarm, per_size("plan"), per_size("compile"), per_size("program"),
                         per_size("init"), per_size("apply"), per_size("loss"), stats, any_.model_config,
                         any_.init_variables, any_.place, start_states, train_span, dict(trainers), split)


# --------------------------------------------------------------------------
# The layout record's functions (layouts/__init__.py)
# --------------------------------------------------------------------------


def supports_study(family: ModelFamily, space: SearchSpace, config: Any) -> str | None:
    """Why the packed layout cannot train this study, or None."""
    if family.name != "mlp":
        return f"layout 'packed' trains MLP spaces only, not {family.name!r}; use layout 'masked' or 'serial'"
    if getattr(config, "schedule", "none") != "none" and len(jax.devices()) > 1:
        return (f"layout 'packed' trains a schedule's rungs (schedule {config.schedule!r}) on one device only, "
                f"not {len(jax.devices())}; use layout 'masked'")
    return None


def build(family: ModelFamily, space: SearchSpace, train_config: train.TrainConfig, data_shape: DataShape,
          config: Any, estimate: dict, log: Callable) -> SwarmProgram:
    """The packed layout's `SwarmProgram`: programs compile per plan shape during the rounds.

    The members are dealt to every device (`jax.devices()`, all processes').
    Each device trains them in chunks of ``config.chunk_size`` one after
    another, or of what its memory (``config.memory_cap_gb``) holds by
    `estimate` (the masked layout's, an upper bound of the packed one's);
    each chunk is planned on its own (known plan shapes are reused where
    they fit).
    """
    devices = jax.devices()
    trainer = make_packed_train(space, train_config, data_shape.in_features, data_shape.num_classes,
                                devices=devices, cost_model=costs.of(config))
    S, D = config.swarm_size, len(devices)
    chunk = config.chunk_size
    if chunk is None:
        capacity = execute.device_memory_bytes()
        if config.memory_cap_gb is not None:
            capacity = min(capacity, int(config.memory_cap_gb * 2**30))
        chunk = execute.plan_chunks(estimate, capacity, S, D)
    step = min(int(chunk) * D, S)  # members of one call: a chunk on every device

    def run(keys_S, positions_SxD, data, state=None, keep_S=None):
        # One shuffle key for the whole swarm: every member sees the same minibatches.
        shuffle_key = jax.random.fold_in(keys_S[0], 1)
        parts = []
        for lo in range(0, S, step):
            part = slice(lo, lo + step)
            if state is None:
                parts.append((trainer.train_swarm(keys_S[part], positions_SxD[part], data, shuffle_key), None))
            else:
                parts.append(trainer.train_swarm(keys_S[part], positions_SxD[part], data, shuffle_key,
                                                 jax.tree.map(lambda a: a[part], state), keep_S[part]))
        if len(parts) == 1:
            return parts[0]
        metrics = jax.tree.map(lambda *a: jnp.concatenate(a), *(m for m, _ in parts))
        variables = None if state is None else jax.tree.map(lambda *a: jnp.concatenate(a), *(v for _, v in parts))
        return metrics, variables

    def start_span(keys_S, positions_SxD, data, variables=None, keep_S=None):
        return trainer.start_states(keys_S, positions_SxD, data.x_train.shape[0], variables, keep_S)

    def span(keys_S, positions_SxD, data, states, start, num_epochs: int, shuffle_key=None):
        # The round's shuffle key, the same for every rung (every member sees the same minibatches).
        shuffle_key = jax.random.fold_in(keys_S[0], 1) if shuffle_key is None else shuffle_key
        parts = [trainer.train_span(keys_S[lo:lo + step], positions_SxD[lo:lo + step], data, shuffle_key,
                                    jax.tree.map(lambda a: a[lo:lo + step], states), start, num_epochs)
                 for lo in range(0, keys_S.shape[0], step)]
        return jax.tree.map(lambda *a: jnp.concatenate(a), *parts) if len(parts) > 1 else parts[0]

    def describe(num_particles: int) -> str:
        chunks = -(-num_particles // step)
        return (f"packed layout: {num_particles} members over {D} device(s), {chunks} chunk(s) of up to "
                f"{-(-step // D)} per device; programs compile per plan shape during rounds")

    return SwarmProgram(lambda *args: 0.0, run, trainer.place, jax.jit(trainer.init_variables),
                        lambda state: state, describe, mlp.decode(space, trainer.model_config), start_span, span)
