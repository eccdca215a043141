"""A faster swarm layout: first layers packed into one matmul, tails in a few width groups.

The masked layout (`jaxswarm.layouts.masked`) gives every member max-size weights,
so with widths 16..256 and depth 1..3 only about a quarter of the computed
FLOPs are useful (DESIGN.md, "Measured layouts"). This module trains the SAME
objective (same decoding, initialization, minibatches, optimizers, loss and
`train.Metrics`) with far less waste:

* All members see the same minibatches (one `shuffle_key` per round), so the
  first hidden layer of every member is ONE matmul
  ``z_PxB = W1[F, P]^T x_BxF^T`` over the members' real first-layer widths
  concatenated (P, the column budget, pads the sum a little). Each column
  keeps its member's activation (a per-column select) and its member's
  optimizer hyperparameters (arrays of shape [P] broadcast over the kernel).
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
  put into a known shape whenever that costs at most `reuse_tolerance` times
  a fresh plan, so recompiles stay few as particles move.

Equivalence: a member trained here follows the masked member's trajectory
(same init: `mlp.init_mlp` with the same key, then packed; same
minibatches when the masked trainer gets the same `shuffle_key`) up to
float32 rounding of differently shaped matmuls. Everything is per column or
per slot, so a diverging member never disturbs the others.

Not supported (use the masked layout: `supports(space)` says which): batch
norm and dropout (their per-member statistics / masks would need per-column
segment reductions), and k-fold `FoldData`.

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

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxswarm import optim, train
from jaxswarm.layouts.masked import DataShape, SwarmProgram
from jaxswarm.models import ModelFamily, mlp
from jaxswarm.models.layers import ACTIVATION_NAMES, ACTIVATIONS
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
    parts = [f"P={shape.columns}"] + [f"d{g.depth} {g.widths}x{g.capacity}" for g in shape.groups]
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


def _assign(archs, groups: Sequence[GroupShape]) -> list[int] | None:
    """Puts each member into a slot of `groups` (tightest fitting group first); None if impossible."""
    free = [g.capacity for g in groups]
    slot_cost = [_tail_cost(g.depth, g.widths, 1) for g in groups]
    order = sorted(range(len(archs)), key=lambda m: -_tail_cost(archs[m][0], archs[m][1], 1))
    where = [None] * len(archs)
    for m in order:
        depth, units = archs[m]
        fits = [i for i, g in enumerate(groups)
                if g.depth == depth and free[i] > 0 and all(u <= w for u, w in zip(units, g.widths))]
        if not fits:
            return None
        i = min(fits, key=lambda i: slot_cost[i])
        free[i] -= 1
        where[m] = i
    return where


def _tables(archs, shape: PlanShape, group_of: Sequence[int]) -> PlanTables:
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
    col, row = 0, 0
    for g, gs in enumerate(shape.groups):
        for k in range(gs.capacity):
            m = slot_member[slot_base[g] + k]
            if m >= 0:
                u0 = archs[m][1][0]
                col_member[col:col + u0] = m
                col_unit[col:col + u0] = np.arange(u0)
                gather[row:row + u0] = np.arange(col, col + u0)
                inverse[col:col + u0] = np.arange(row, row + u0)
                col += u0
            row += gs.widths[0]
    assert col <= P and row == R
    return PlanTables(col_member, col_unit, gather, inverse, slot_member, member_slot)


def make_plan(
    archs: Sequence[tuple[int, Sequence[int]]],
    max_units: int,
    num_classes: int,
    in_features: int,
    groups: int = 8,
    known: Sequence[PlanShape] = (),
    reuse_tolerance: float = 1.5,
    headroom: float = 0.25,
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
        headroom: spare fraction of a fresh plan's columns and group slots, so
            that the swarm's next rounds fit it too.

    Returns:
        `Plan` (static shape + runtime tables).

    Example:
        >>> p = make_plan([(1, [20]), (2, [30, 10])], 256, 10, 64)
        >>> p.shape.columns >= 50, len(p.shape.groups)
        (True, 2)
    """
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    archs = [(int(d), tuple(int(u) for u in us[: int(d)])) for d, us in archs]
    if not archs:
        raise ValueError("make_plan needs at least one member, got 0")
    need = sum(a[1][0] for a in archs)
    fresh = PlanShape(
        ladder_up(math.ceil(need * (1 + headroom / 2)), steps_per_octave=8),
        tuple(_fresh_groups(archs, groups, max_units, num_classes, 0.01 * need * in_features, headroom)))
    fresh_cost = _shape_cost(fresh, in_features, num_classes)
    best = None
    for shape in known:
        if shape.columns < need:
            continue
        c = _shape_cost(shape, in_features, num_classes)
        if c > reuse_tolerance * fresh_cost or (best is not None and c >= best[0]):
            continue
        where = _assign(archs, shape.groups)
        if where is not None:
            best = (c, shape, where)
    if best is None:
        where = _assign(archs, fresh.groups)
        assert where is not None, "a fresh plan always fits"
        best = (fresh_cost, fresh, where)
    _, shape, where = best
    return Plan(shape, _tables(archs, shape, where))


# --------------------------------------------------------------------------
# The packed program (traced)
# --------------------------------------------------------------------------


def supports(space: SearchSpace) -> bool:
    """Whether the packed layout can train `space` (else use the masked layout).

    False when the space can turn on batch norm or dropout.

    Example:
        >>> from jaxswarm.models import mlp_space
        >>> supports(mlp_space()), supports(mlp_space(dropout=(0.0, 0.5)))
        (True, False)
    """
    for name, off in (("batch_norm", False), ("dropout", 0.0)):
        p = space.params.get(name)
        if p is None:
            continue
        if isinstance(p, Fixed) and p.value == off:
            continue
        return False
    return True


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


class _MultiOpt(NamedTuple):
    init: Callable
    update: Callable


def _multi_optimizer(names: tuple[str, ...], total_steps: int) -> _MultiOpt:
    """All named optimizers run on the same gradients; the update of `index` (into `names`) is kept.

    The same rule as `optim.make_optimizer`, but the index (and every
    hyperparameter) may be an array broadcasting against the leaves, so a
    packed kernel's columns can each follow their own member.
    """
    opts = [optim.make_optimizer((n,), total_steps) for n in names]
    ids = list(range(len(names)))

    def init(params, hp: optim.OptHParams):
        hp = hp._replace(optimizer=jnp.zeros_like(hp.optimizer))
        return tuple(o.init(params, hp) for o in opts)

    def update(grads, states, params, index):
        outs = [o.update(grads, s, params) for o, s in zip(opts, states)]
        chosen = outs[0][0]
        for (u, _), i in zip(outs[1:], ids[1:]):
            chosen = jax.tree.map(lambda c, v, i=i: jnp.where(index == i, v, c), chosen, u)
        return chosen, tuple(s for _, s in outs)

    return _MultiOpt(init, update)


class _Context(NamedTuple):
    """Per-column and per-slot data derived inside the program from positions and tables."""

    col_valid_P: jax.Array
    col_act_P: jax.Array
    col_hp: optim.OptHParams  # fields [P]
    groups: tuple  # per group: (valid_K, act_K, unit masks per layer [K, w_l], OptHParams [K])


def _context(arch_S: mlp.Arch, hp_S: optim.OptHParams, tables: PlanTables, shape: PlanShape) -> _Context:
    cm = jnp.maximum(tables.col_member_P, 0)
    col_hp = jax.tree.map(lambda a: a[cm], hp_S)
    groups, base = [], 0
    for g in shape.groups:
        sm = tables.slot_member_T[base:base + g.capacity]
        base += g.capacity
        m = jnp.maximum(sm, 0)
        units = arch_S.units[m]  # [K, L]
        masks = tuple(jnp.arange(g.widths[l])[None, :] < units[:, l:l + 1] for l in range(g.depth))
        groups.append((sm >= 0, arch_S.activation[m], masks, jax.tree.map(lambda a: a[m], hp_S)))
    return _Context(tables.col_member_P >= 0, arch_S.activation[cm], col_hp, tuple(groups))


def _pack(params_S: dict, tables: PlanTables, shape: PlanShape) -> dict:
    """Max-size per-member params (leading S axis) -> packed params."""
    valid = tables.col_member_P >= 0
    cm = jnp.maximum(tables.col_member_P, 0)
    k0 = params_S["dense_0"]["kernel"]  # [S, F, U]
    w1_FxP = jnp.where(valid[None, :], k0[cm, :, tables.col_unit_P].T, 0.0)
    b1_P = jnp.where(valid, params_S["dense_0"]["bias"][cm, tables.col_unit_P], 0.0)
    groups, base = [], 0
    for g in shape.groups:
        sm = tables.slot_member_T[base:base + g.capacity]
        base += g.capacity
        m, ok = jnp.maximum(sm, 0), sm >= 0
        layers = []
        for l in range(1, g.depth):
            k = params_S[f"dense_{l}"]["kernel"][m][:, : g.widths[l - 1], : g.widths[l]]
            b = params_S[f"dense_{l}"]["bias"][m][:, : g.widths[l]]
            layers.append({"kernel": jnp.where(ok[:, None, None], k, 0.0),
                           "bias": jnp.where(ok[:, None], b, 0.0)})
        k = params_S["out"]["kernel"][m][:, : g.widths[-1], :]
        b = params_S["out"]["bias"][m]
        out = {"kernel": jnp.where(ok[:, None, None], k, 0.0), "bias": jnp.where(ok[:, None], b, 0.0)}
        groups.append({"layers": layers, "out": out})
    return {"first": {"kernel": w1_FxP, "bias": b1_P}, "groups": groups}


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


def _forward(params, x_BxF, ctx: _Context, tables: PlanTables, shape: PlanShape, act_names):
    """Logits of every slot, one array [K_g, C, B] per group."""
    first = params["first"]
    z_PxB = jnp.einsum("fp,bf->pb", first["kernel"], x_BxF) + first["bias"][:, None]
    h_PxB = jnp.where(ctx.col_valid_P[:, None], _activate_columns(ctx.col_act_P[:, None], z_PxB, act_names), 0.0)
    rows_RxB = _gather_rows(h_PxB, tables.gather_R, tables.inverse_P)
    sizes = [g.capacity * g.widths[0] for g in shape.groups]
    splits = jax.lax.split(rows_RxB, sizes, axis=0) if len(sizes) > 1 else [rows_RxB]
    B = x_BxF.shape[0]
    logits = []
    for rows, g, p, (_, act_K, masks, _) in zip(splits, shape.groups, params["groups"], ctx.groups):
        h = rows.reshape(g.capacity, g.widths[0], B)
        for l in range(1, g.depth):
            lay = p["layers"][l - 1]
            z = jnp.einsum("kio,kib->kob", lay["kernel"], h) + lay["bias"][:, :, None]
            h = jnp.where(masks[l][:, :, None], _activate_columns(act_K[:, None, None], z, act_names), 0.0)
        logits.append(jnp.einsum("kic,kib->kcb", p["out"]["kernel"], h) + p["out"]["bias"][:, :, None])
    return logits


def _slot_losses(logits, y_B):
    """Mean cross-entropy and correct counts per slot, concatenated over groups ([T])."""
    losses, correct = [], []
    for lg in logits:
        logp = jax.nn.log_softmax(lg, axis=1)
        nll_KxB = -jnp.take_along_axis(logp, y_B[None, None, :], axis=1)[:, 0, :]
        losses.append(nll_KxB)
        correct.append(jnp.argmax(lg, axis=1) == y_B[None, :])
    return jnp.concatenate(losses), jnp.concatenate(correct)


class PackedTrainer(NamedTuple):
    """The packed layout's entry points (see `make_packed_train`).

    Attributes:
        train_swarm: ``(keys_S, positions_SxD, data, shuffle_key=None) -> Metrics[S]``,
            the masked ``train_swarm``'s call shape (plus the shared shuffle key).
            Host function: decodes the swarm, plans it, runs a cached program.
        plan: ``(positions_SxD) -> Plan`` (cached shapes are reused).
        compile: ``(keys_S, positions_SxD, data, shuffle_key) -> (compiled, plan)``
            ahead of time; call ``compiled(keys_S, positions_SxD, data, shuffle_key, plan.tables)``.
        program: ``(PlanShape) -> jitted fn`` with that same signature (cached).
        init: ``(keys_S, positions_SxD, plan) -> packed params`` (as training starts).
        apply: ``(params, positions_SxD, x_BxF, plan) -> logits_SxBxC``.
        loss: ``(params, positions_SxD, x_BxF, y_B, plan) -> sum of members' mean losses``.
        stats: dict with "traces" (programs traced so far) and "shapes" (known shapes).
        model_config: the max-size `mlp.MLPConfig` the masked layout would use.
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


def make_packed_train(
    space: SearchSpace,
    config: train.TrainConfig,
    in_features: int,
    num_classes: int,
    groups: int = 8,
    reuse_tolerance: float = 1.5,
) -> PackedTrainer:
    """Builds the packed-layout trainer for `space` (same objective as `train.make_train`).

    Args:
        space: the search space; ``supports(space)`` must hold.
        config: the same `train.TrainConfig` the masked trainer takes.
        in_features, num_classes: F and C of the data.
        groups: the most tail groups of a fresh plan.
        reuse_tolerance: reuse a compiled shape when it costs at most this
            many times a fresh plan (bounds recompiles as particles move).

    Returns:
        `PackedTrainer`.
    """
    if not supports(space):
        raise ValueError("the packed layout does not support batch_norm / dropout; "
                         "use the masked layout (packed.supports(space) is False)")
    train.check_config(config)
    mcfg = mlp.config(space, in_features, num_classes)
    hparams = mlp.decode(space, mcfg)
    act_names = _names_in(space, "activation", "relu")
    opt_names = optim.optimizer_names(space)  # OptHParams.optimizer indexes this tuple
    decode = jax.jit(jax.vmap(hparams))
    stats = {"traces": 0, "shapes": []}
    programs: dict = {}

    def archs_of(positions_SxD):
        arch_S, _ = decode(jnp.asarray(positions_SxD, jnp.float32))
        n, u = np.asarray(arch_S.n_layers), np.asarray(arch_S.units)
        return [(int(n[i]), tuple(int(v) for v in u[i, : n[i]])) for i in range(len(n))]

    def plan(positions_SxD) -> Plan:
        p = make_plan(archs_of(positions_SxD), mcfg.max_units, num_classes, in_features,
                      groups, stats["shapes"], reuse_tolerance)
        return Plan(p.shape, jax.tree.map(jnp.asarray, p.tables))

    def init(keys_S, positions_SxD, plan_: Plan):
        arch_S, _ = jax.vmap(hparams)(positions_SxD)
        k_init = jax.vmap(lambda k: jax.random.split(k, 3)[0])(keys_S)  # as train.fit
        variables = jax.vmap(mlp.init_mlp, in_axes=(0, 0, None))(k_init, arch_S, mcfg)
        return _pack(variables["params"], plan_.tables, plan_.shape)

    def apply(params, positions_SxD, x_BxF, plan_: Plan):
        arch_S, hp_S = jax.vmap(hparams)(positions_SxD)
        ctx = _context(arch_S, hp_S, plan_.tables, plan_.shape)
        logits = jnp.concatenate(_forward(params, x_BxF, ctx, plan_.tables, plan_.shape, act_names))
        return jnp.swapaxes(logits[plan_.tables.member_slot_S], 1, 2)

    def total_loss(params, ctx, x_BxF, y_B, tables, shape):
        nll_TxB, _ = _slot_losses(_forward(params, x_BxF, ctx, tables, shape, act_names), y_B)
        loss_T = nll_TxB.mean(axis=1)
        valid_T = tables.slot_member_T >= 0
        return jnp.sum(jnp.where(valid_T, loss_T, 0.0)), loss_T

    def loss(params, positions_SxD, x_BxF, y_B, plan_: Plan):
        arch_S, hp_S = jax.vmap(hparams)(positions_SxD)
        ctx = _context(arch_S, hp_S, plan_.tables, plan_.shape)
        return total_loss(params, ctx, x_BxF, y_B, plan_.tables, plan_.shape)[0]

    def build(shape: PlanShape):
        def run(keys_S, positions_SxD, data: train.Data, shuffle_key, tables: PlanTables):
            stats["traces"] += 1
            n = data.x_train.shape[0]
            batch = min(config.batch_size, n)
            steps = n // batch
            arch_S, hp_S = jax.vmap(hparams)(positions_SxD)
            ctx = _context(arch_S, hp_S, tables, shape)
            params = init(keys_S, positions_SxD, Plan(shape, tables))
            opt = _multi_optimizer(opt_names, train.total_steps(config, n))
            opt_state = {
                "first": opt.init(params["first"], ctx.col_hp),
                "groups": [jax.vmap(opt.init)(p, c[3]) for p, c in zip(params["groups"], ctx.groups)],
            }

            def update(grads, opt_state, params):
                u1, s1 = opt.update(grads["first"], opt_state["first"], params["first"], ctx.col_hp.optimizer)
                ug, sg = [], []
                for g, s, p, c in zip(grads["groups"], opt_state["groups"], params["groups"], ctx.groups):
                    u, s = jax.vmap(opt.update)(g, s, p, c[3].optimizer)
                    ug.append(u)
                    sg.append(s)
                return {"first": u1, "groups": ug}, {"first": s1, "groups": sg}

            def step(carry, idx_B):
                params, opt_state = carry
                grads, loss_T = jax.grad(total_loss, has_aux=True)(
                    params, ctx, data.x_train[idx_B], data.y_train[idx_B], tables, shape)
                updates, opt_state = update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), loss_T

            def evaluate(params):
                m = data.x_val.shape[0]
                x, y, valid = train.eval_chunks(data, config)

                def body(totals, inputs):
                    x_R, y_R, valid_R = inputs
                    nll, correct = _slot_losses(_forward(params, x_R, ctx, tables, shape, act_names), y_R)
                    return (totals[0] + (correct & valid_R).sum(1),
                            totals[1] + jnp.where(valid_R, nll, 0.0).sum(1)), None

                T = tables.slot_member_T.shape[0]
                zeros = (jnp.zeros((T,), jnp.int32), jnp.zeros((T,), jnp.float32))
                (correct, vloss), _ = jax.lax.scan(body, zeros, (x, y, valid))
                return correct / m, vloss / m

            def epoch(carry, k_perm):
                idx_TxB = jax.random.permutation(k_perm, n)[: steps * batch].reshape(steps, batch)
                carry, loss_NxT = jax.lax.scan(step, carry, idx_TxB)
                acc, vloss = evaluate(carry[0])
                return carry, (loss_NxT.mean(0), acc, vloss)

            shuffle_keys = jax.random.split(shuffle_key, config.epochs)
            _, (loss_ExT, acc_ExT, vloss_ExT) = jax.lax.scan(epoch, (params, opt_state), shuffle_keys)
            slot = tables.member_slot_S
            train_loss_SxE, acc_SxE, vloss_SxE = (a[:, slot].T for a in (loss_ExT, acc_ExT, vloss_ExT))
            return train.metrics_of(train_loss_SxE, acc_SxE, vloss_SxE, config.fitness)

        return jax.jit(run)

    def program(shape: PlanShape):
        if shape not in programs:
            programs[shape] = build(shape)
            stats["shapes"].append(shape)
        return programs[shape]

    def _check(data):
        if isinstance(data, train.FoldData):
            raise ValueError("the packed layout does not support k-fold FoldData; use the masked layout")

    def train_swarm(keys_S, positions_SxD, data: train.Data, shuffle_key=None) -> train.Metrics:
        _check(data)
        if shuffle_key is None:
            shuffle_key = jax.random.fold_in(keys_S[0], 0x5EED)
        p = plan(positions_SxD)
        return program(p.shape)(keys_S, positions_SxD, data, shuffle_key, p.tables)

    def compile_(keys_S, positions_SxD, data, shuffle_key):
        _check(data)
        p = plan(positions_SxD)
        return program(p.shape).lower(keys_S, positions_SxD, data, shuffle_key, p.tables).compile(), p

    return PackedTrainer(train_swarm, plan, compile_, program, init, apply, loss, stats, mcfg)


# --------------------------------------------------------------------------
# The layout record's functions (layouts/__init__.py)
# --------------------------------------------------------------------------


def supports_study(family: ModelFamily, space: SearchSpace, config: Any) -> str | None:
    """Why the packed layout cannot train this study, or None."""
    if family.name != "mlp":
        return f"layout 'packed' trains MLP spaces only, not {family.name!r}; use layout 'masked' or 'serial'"
    if config.mode != "fresh" or config.folds > 1:
        return ("layout 'packed' trains fresh members on one hold-out split: "
                "use mode 'fresh' and folds 1, or layout 'masked'")
    if not supports(space):
        return "layout 'packed' does not support spaces with batch_norm or dropout; use layout 'masked'"
    return None


def build(family: ModelFamily, space: SearchSpace, train_config: train.TrainConfig, data_shape: DataShape,
          config: Any, estimate: dict, log: Callable) -> SwarmProgram:
    """The packed layout's `SwarmProgram`: programs compile per plan shape during the rounds."""
    trainer = make_packed_train(space, train_config, data_shape.in_features, data_shape.num_classes)

    def run(keys_S, positions_SxD, data, state=None, keep_S=None):
        # One shuffle key for the whole swarm: every member sees the same minibatches.
        return trainer.train_swarm(keys_S, positions_SxD, data, jax.random.fold_in(keys_S[0], 1)), None

    def describe(num_particles: int) -> str:
        return f"packed layout: {num_particles} members; programs compile per plan shape during rounds"

    return SwarmProgram(lambda *args: 0.0, run, lambda data: data, None, lambda state: state, describe,
                        mlp.decode(space, trainer.model_config))
