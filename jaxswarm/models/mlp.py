"""The swarm's networks, written for ONE member; add the swarm axis with vmap.

Every member owns weights of the *maximum* shape (``MLPConfig``); its real
architecture arrives as arrays (``Arch``): a depth, a width per layer, an
activation index, a dropout rate and a batch-norm switch. Masks switch off
units and whole layers, so members with different architectures share one
compiled program (docs/design.md, decision 1) and moving a particle never
recompiles (decision 3).

Central property: a masked member computes exactly the function of the dense
network of its real size (``apply_dense`` on ``dense_params``), with the same
gradients with respect to the active weights:

* Hidden layer ``l`` is active iff ``l < n_layers``; active layers form a
  prefix. An active layer computes ``h = act(bn?(h @ W_l + b_l))`` and zeroes
  the units ``j >= units[l]``; an inactive layer passes ``h`` through. The
  output layer reads the last hidden state.
* Rows of ``W_l`` beyond ``units[l-1]`` multiply inputs that are exactly zero,
  columns beyond ``units[l]`` are zeroed by the unit mask after the
  activation, and inactive layers are discarded by ``jnp.where``. Therefore
  **every parameter outside the real network has no effect on the output and
  receives an exactly zero gradient.** ``init_mlp`` also initializes those
  entries to zero, so the max-size parameters are the real network's
  parameters zero-padded (weight decay keeps zeros at zero, so this holds
  during training as well; adding an L2 penalty of all params equals the
  dense network's).
* Initialization uses each member's *active* fan-in: layer 0 has fan-in
  ``in_features``, layer ``l > 0`` has ``units[l-1]``, the output layer
  ``units[n_layers-1]``. Kernels are unit-variance truncated normals (the
  same draw as ``jax.nn.initializers.variance_scaling``) scaled by
  ``sqrt(gain2 / fan_in)``: He (``gain2 = 2``) for relu, elu, leaky_relu,
  gelu and swish, LeCun (``gain2 = 1``) for tanh and sigmoid and for the
  output layer. Biases start at zero, batch-norm scales at one.

Cost notes. Under ``vmap`` the activation index is batched, so every
activation in ``MLPConfig.activations`` runs on the ``[B, max_units]``
pre-activation and one is selected: list only those the space uses. Batch
norm runs for every layer and is selected with ``jnp.where``. Inactive layers
still run their full matmul; ``computed_flops`` counts that, ``useful_flops``
counts the real network. All kernels come from ONE truncated-normal draw,
sliced (one RNG op to compile instead of one per layer).

Entries outside the real network may even hold arbitrary *finite* values
(tested with noise): they still have no effect and get zero gradients.
Non-finite values there (inf/NaN) would leak NaN into gradients through
``0 * inf``; nothing in training puts them there.

Dropout uses inverted dropout with ``keep = u >= rate`` on uniforms drawn
with shape ``[units, B]`` (transposed), one key per layer
(``jax.random.fold_in(key, l)``). With JAX's default partitionable
Threefry (``jax_threefry_partitionable=True``) the first ``u`` rows of a
``[max_units, B]`` draw equal a ``[u, B]`` draw, so ``apply_mlp`` and
``apply_dense`` drop exactly the same units for the same key.

Example:
    >>> import jax, jax.numpy as jnp
    >>> cfg = MLPConfig(in_features=8, num_classes=3, max_layers=3, max_units=16)
    >>> archs = stack_archs([dict(n_layers=1, units=[4]),
    ...                      dict(n_layers=3, units=[16, 2, 7], activation="tanh")], cfg)
    >>> keys = jax.random.split(jax.random.key(0), 2)
    >>> variables_S = jax.vmap(init_mlp, in_axes=(0, 0, None))(keys, archs, cfg)
    >>> x_BxF = jnp.ones((5, 8))
    >>> logits_SxBxC, _ = jax.vmap(
    ...     lambda v, a: apply_mlp(v, x_BxF, a, cfg, train=False))(variables_S, archs)
    >>> logits_SxBxC.shape
    (2, 5, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm import optim
from jaxswarm.models.layers import (
    ACTIVATION_NAMES,
    MemoryTerms,
    ACTIVATIONS,
    INIT_GAIN2,
    INIT_SCHEMES,
    MAX_DROPOUT,
    OUT_GAIN2,
    activate,
    batch_norm_eval,
    batch_norm_train,
    dropout,
    init_std,
    unit_normal,
    unit_uniform,
    uses_uniform,
)
from jaxswarm.space import AtLeast, Choice, Fixed, Float, Int, SearchSpace, as_int, range_arg, real_range, value_reader

__all__ = [
    "MLPConfig",
    "Arch",
    "make_arch",
    "stack_archs",
    "arch_to_python",
    "init_mlp",
    "apply_mlp",
    "dense_params",
    "init_dense",
    "apply_dense",
    "useful_flops",
    "computed_flops",
    "mlp_space",
    "limits",
    "config",
    "decode",
    "init_names",
    "layer_activations",
    "memory_terms",
    "signature",
]

class MLPConfig(NamedTuple):
    """Static shape of the max-size MLP (hashable: pass it as a static arg).

    Attributes:
        in_features: F, width of the input.
        num_classes: C, width of the output logits.
        max_layers: L, the most hidden layers any member may use.
        max_units: U, the most units any hidden layer may use.
        activations: the activations members may use (names from
            ``ACTIVATIONS``; default all). Only these are evaluated under
            vmap, so a smaller set is cheaper (every listed activation runs
            on every member's pre-activations). ``Arch.activation`` still
            indexes ``ACTIVATION_NAMES``; an index outside this set falls
            back to its first entry (``make_arch`` rejects it). A per-layer
            space lists the activations of all its layers here.
        inits: the kernel initialization schemes members may use (names
            from ``INIT_SCHEMES``; default "auto" only). Where one of them
            is uniform, every member draws uniforms too (one more RNG op).
    """

    in_features: int
    num_classes: int
    max_layers: int
    max_units: int
    activations: tuple[str, ...] = ACTIVATION_NAMES
    inits: tuple[str, ...] = ("auto",)


class Arch(NamedTuple):
    """One member's architecture as arrays (vmap adds a leading S axis).

    Attributes:
        n_layers: i32[] active hidden layers, 1..max_layers (clipped).
        units: i32[L] active units per hidden layer, 1..max_units (clipped);
            entries of inactive layers are ignored.
        activation: i32[L] index into ``ACTIVATION_NAMES`` per hidden layer
            (the same in every layer unless the space tunes ``activation_k``).
        dropout: f32[] dropout rate in [0, 1); 0 disables it.
        batch_norm: bool[] batch norm before each activation.
        init: i32[] index into ``INIT_SCHEMES``: how the kernels start.
    """

    n_layers: jax.Array
    units: jax.Array
    activation: jax.Array
    dropout: jax.Array
    batch_norm: jax.Array
    init: jax.Array


# --------------------------------------------------------------------------
# Host-side architecture helpers
# --------------------------------------------------------------------------


def _check_cfg(cfg: MLPConfig) -> None:
    for name in ("in_features", "num_classes", "max_layers", "max_units"):
        value = getattr(cfg, name)
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"MLPConfig.{name} must be a positive int, got {value!r}")
    acts = cfg.activations
    if (
        not isinstance(acts, tuple)
        or not acts
        or len(set(acts)) != len(acts)
        or any(a not in ACTIVATIONS for a in acts)
    ):
        raise ValueError(
            f"MLPConfig.activations must be a non-empty tuple of distinct names from "
            f"{ACTIVATION_NAMES}, got {acts!r}"
        )
    inits = cfg.inits
    if not isinstance(inits, tuple) or not inits or len(set(inits)) != len(inits) or any(
            i not in INIT_SCHEMES for i in inits):
        raise ValueError(f"MLPConfig.inits must be a non-empty tuple of distinct names from {INIT_SCHEMES}, "
                         f"got {inits!r}")


def _activation_index(activation: Any) -> int:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; expected one of {ACTIVATION_NAMES}"
            )
        return ACTIVATION_NAMES.index(activation)
    index = int(activation)
    if not 0 <= index < len(ACTIVATION_NAMES):
        raise ValueError(
            f"activation index {index} out of range 0..{len(ACTIVATION_NAMES) - 1}"
        )
    return index


def _normalize_arch(
    arch: Mapping[str, Any], max_layers: int | None = None, max_units: int | None = None
) -> dict[str, Any]:
    """Validates a host-side architecture dict and returns a canonical copy.

    Canonical form: ``n_layers`` int, ``units`` tuple of exactly ``n_layers``
    ints, ``activation`` a name (every layer's) or a tuple of ``n_layers``
    names when the layers differ, ``dropout`` float, ``batch_norm`` bool, ``init`` name.
    """
    if "n_layers" not in arch or "units" not in arch:
        raise ValueError(f"architecture needs 'n_layers' and 'units', got keys {sorted(arch)}")
    unknown = set(arch) - {"n_layers", "units", "activation", "dropout", "batch_norm", "init"}
    if unknown:
        raise ValueError(f"unknown architecture keys {sorted(unknown)}")
    n_layers = int(arch["n_layers"])
    if n_layers < 1 or (max_layers is not None and n_layers > max_layers):
        raise ValueError(f"n_layers={n_layers} outside 1..{max_layers or 'inf'}")
    units = [int(u) for u in np.asarray(arch["units"]).reshape(-1)]
    if len(units) < n_layers:
        raise ValueError(f"units={units} has fewer than n_layers={n_layers} entries")
    units = units[:n_layers]
    for u in units:
        if u < 1 or (max_units is not None and u > max_units):
            raise ValueError(f"units={units}: each must lie in 1..{max_units or 'inf'}")
    dropout = float(arch.get("dropout", 0.0))
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} outside [0, 1)")
    activation = arch.get("activation", "relu")
    if isinstance(activation, (str, int, np.integer)) or np.ndim(activation) == 0:
        activation = [activation]
    names = [ACTIVATION_NAMES[_activation_index(a)] for a in activation]
    if len(names) > 1 and len(names) < n_layers:
        raise ValueError(f"activation={list(activation)} has fewer than n_layers={n_layers} entries")
    names = names[:n_layers] if len(names) > 1 else names
    init = arch.get("init", "auto")
    if not isinstance(init, str):  # an index, as `arch_to_python` reads it
        init = INIT_SCHEMES[int(init)] if 0 <= int(init) < len(INIT_SCHEMES) else str(init)
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown init {init!r}; expected one of {INIT_SCHEMES}")
    return {
        "n_layers": n_layers,
        "units": tuple(units),
        "activation": names[0] if len(set(names)) == 1 else tuple(names),
        "dropout": dropout,
        "batch_norm": bool(arch.get("batch_norm", False)),
        "init": init,
    }


def layer_activations(arch_python: Mapping[str, Any]) -> tuple[str, ...]:
    """The activation of each hidden layer of a (canonical) architecture dict.

    Example:
        >>> layer_activations(dict(n_layers=2, units=[3, 4], activation="tanh"))
        ('tanh', 'tanh')
    """
    a = arch_python
    act = a["activation"]
    return (act,) * a["n_layers"] if isinstance(act, str) else tuple(act)


def make_arch(arch_python: Mapping[str, Any], cfg: MLPConfig) -> Arch:
    """Builds the array form of one architecture (host side, validated).

    Args:
        arch_python: dict with ``n_layers`` (int), ``units`` (at least
            ``n_layers`` ints) and optionally ``activation`` (name or index,
            or one per layer, default "relu"), ``dropout`` (default 0.0), ``batch_norm``
            (default False), ``init`` (a name of ``INIT_SCHEMES``, default "auto").
        cfg: the max-size shape config.

    Returns:
        ``Arch`` with ``units`` padded to ``cfg.max_layers`` (with ones).

    Example:
        >>> cfg = MLPConfig(4, 2, 3, 8)
        >>> make_arch(dict(n_layers=2, units=[8, 3]), cfg).units.tolist()
        [8, 3, 1]
    """
    _check_cfg(cfg)
    a = _normalize_arch(arch_python, cfg.max_layers, cfg.max_units)
    acts = layer_activations(a)
    for act in acts:
        if act not in cfg.activations:
            raise ValueError(f"activation {act!r} not in MLPConfig.activations {cfg.activations}")
    if a["init"] not in cfg.inits:
        raise ValueError(f"init {a['init']!r} not in MLPConfig.inits {cfg.inits}")
    units = list(a["units"]) + [1] * (cfg.max_layers - a["n_layers"])
    return Arch(
        n_layers=jnp.asarray(a["n_layers"], jnp.int32),
        units=jnp.asarray(units, jnp.int32),
        activation=jnp.asarray([ACTIVATION_NAMES.index(n) for n in acts + (acts[-1],) * (cfg.max_layers - len(acts))],
                               jnp.int32),
        dropout=jnp.asarray(a["dropout"], jnp.float32),
        batch_norm=jnp.asarray(a["batch_norm"], jnp.bool_),
        init=jnp.asarray(INIT_SCHEMES.index(a["init"]), jnp.int32),
    )


def stack_archs(archs_python: Sequence[Mapping[str, Any]], cfg: MLPConfig) -> Arch:
    """Stacks host-side architectures into one ``Arch`` with a leading S axis.

    Args:
        archs_python: S architecture dicts (see ``make_arch``).
        cfg: the max-size shape config.

    Returns:
        ``Arch`` whose leaves have a leading axis of size S.

    Example:
        >>> cfg = MLPConfig(4, 2, 2, 8)
        >>> stack_archs([dict(n_layers=1, units=[3]), dict(n_layers=2, units=[8, 8])],
        ...             cfg).n_layers.tolist()
        [1, 2]
    """
    if len(archs_python) == 0:
        raise ValueError("stack_archs needs at least one architecture, got 0")
    archs = [make_arch(a, cfg) for a in archs_python]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *archs)


def arch_to_python(arch: Arch) -> dict[str, Any]:
    """Converts one (unbatched) ``Arch`` back to its canonical host-side dict.

    Args:
        arch: one member's ``Arch`` (concrete arrays, no leading S axis).

    Returns:
        dict with ``n_layers``, ``units`` (tuple of the active widths),
        ``activation`` (a name, or one per layer where they differ), ``dropout``, ``batch_norm``
        and ``init`` (name).

    Example:
        >>> cfg = MLPConfig(4, 2, 3, 8)
        >>> arch_to_python(make_arch(dict(n_layers=2, units=[5, 6, 7]), cfg))["units"]
        (5, 6)
    """
    n_layers = int(arch.n_layers)
    return _normalize_arch(
        {
            "n_layers": n_layers,
            "units": np.asarray(arch.units).tolist(),
            "activation": np.asarray(arch.activation).reshape(-1)[:n_layers].tolist(),
            "dropout": float(arch.dropout),
            "batch_norm": bool(arch.batch_norm),
            "init": int(arch.init),
        }
    )


# --------------------------------------------------------------------------
# Max-size masked network (one member)
# --------------------------------------------------------------------------


def _clipped(arch: Arch, cfg: MLPConfig):
    n_layers = jnp.clip(jnp.asarray(arch.n_layers, jnp.int32), 1, cfg.max_layers)
    units_L = jnp.clip(jnp.asarray(arch.units, jnp.int32), 1, cfg.max_units)
    if units_L.shape != (cfg.max_layers,):
        raise ValueError(
            f"arch.units has shape {units_L.shape}, expected ({cfg.max_layers},) "
            "(vmap over members, or build it with make_arch)"
        )
    return n_layers, units_L


def init_mlp(key: jax.Array, arch: Arch, cfg: MLPConfig) -> dict:
    """Initializes one member's max-size variables for its architecture.

    Kernels use the member's ACTIVE fan-in (see module docstring); every entry
    outside the real network is zero. vmap-able over ``key`` and ``arch``.

    Args:
        key: PRNG key.
        arch: the member's ``Arch`` (traced arrays are fine).
        cfg: static max-size shape config.

    Returns:
        ``{"params": {"dense_l": {"kernel" [F or U, U], "bias" [U]},
        "bn_l": {"scale" [U], "bias" [U]}, ..., "out": {"kernel" [U, C],
        "bias" [C]}}, "batch_stats": {"bn_l": {"mean" [U], "var" [U]}}}``
        for l in 0..L-1.

    Example:
        >>> cfg = MLPConfig(4, 2, 2, 8)
        >>> v = init_mlp(jax.random.key(0), make_arch(dict(n_layers=1, units=[3]), cfg), cfg)
        >>> v["params"]["dense_0"]["kernel"].shape
        (4, 8)
    """
    _check_cfg(cfg)
    n_layers, units_L = _clipped(arch, cfg)
    F, C, L, U = cfg.in_features, cfg.num_classes, cfg.max_layers, cfg.max_units
    gain2_L = jnp.asarray([INIT_GAIN2[n] for n in ACTIVATION_NAMES], jnp.float32)[
        jnp.clip(jnp.broadcast_to(arch.activation, (L,)), 0, len(ACTIVATIONS) - 1)
    ]
    # One draw for all kernels (one RNG op to compile), split by slicing; a space with uniform
    # schemes draws uniforms too and each member keeps the kind its scheme asks for.
    shapes = [(F, U)] + [(U, U)] * (L - 1) + [(U, C)]
    sizes = [r * c for r, c in shapes]

    def unit_draws(draw, k):
        return [d.reshape(shape) for d, shape in
                zip(jnp.split(draw(k, (sum(sizes),), jnp.float32), np.cumsum(sizes)[:-1]), shapes)]

    normals = unit_draws(unit_normal, key)
    mixed = uses_uniform(cfg.inits)
    uniforms = unit_draws(unit_uniform, jax.random.fold_in(key, 1)) if mixed else None

    def kernel_of(l, auto_gain2, fan_in, fan_out):
        std, uniform = init_std(arch.init, auto_gain2, fan_in, fan_out)
        return (jnp.where(uniform, uniforms[l], normals[l]) if mixed else normals[l]) * std

    unit_ids = jnp.arange(U)
    params, stats = {}, {}
    row_mask, in_dim, fan_in = jnp.ones((F,), jnp.bool_), F, jnp.asarray(F, jnp.float32)
    for l in range(L):
        col_mask_U = (unit_ids < units_L[l]) & (l < n_layers)
        kernel = kernel_of(l, gain2_L[l], fan_in, units_L[l].astype(jnp.float32))
        kernel = jnp.where(row_mask[:, None] & col_mask_U[None, :], kernel, 0.0)
        params[f"dense_{l}"] = {"kernel": kernel, "bias": jnp.zeros((U,), jnp.float32)}
        bn_on_U = col_mask_U & jnp.asarray(arch.batch_norm, jnp.bool_)
        params[f"bn_{l}"] = {
            "scale": bn_on_U.astype(jnp.float32),
            "bias": jnp.zeros((U,), jnp.float32),
        }
        stats[f"bn_{l}"] = {
            "mean": jnp.zeros((U,), jnp.float32),
            "var": jnp.ones((U,), jnp.float32),
        }
        row_mask, in_dim, fan_in = col_mask_U, U, units_L[l].astype(jnp.float32)
    last_units = units_L[n_layers - 1]
    kernel_out = kernel_of(L, OUT_GAIN2, last_units.astype(jnp.float32), jnp.float32(C))
    kernel_out = jnp.where((unit_ids < last_units)[:, None], kernel_out, 0.0)
    params["out"] = {"kernel": kernel_out, "bias": jnp.zeros((C,), jnp.float32)}
    return {"params": params, "batch_stats": stats}


def apply_mlp(
    variables: dict,
    x_BxF: jax.Array,
    arch: Arch,
    cfg: MLPConfig,
    *,
    train: bool,
    key: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """Runs one member's masked max-size MLP.

    Args:
        variables: ``{"params", "batch_stats"}`` from ``init_mlp``.
        x_BxF: inputs, ``[B, in_features]``.
        arch: the member's ``Arch``; values are clipped to valid ranges.
        cfg: static max-size shape config.
        train: static; True uses batch statistics for batch norm (and
            updates the running ones) and applies dropout.
        key: PRNG key for dropout; required when ``train`` (the rate is
            traced, so it cannot be known whether dropout is off).

    Returns:
        ``(logits_BxC, new_batch_stats)``; running stats change only for
        members with batch norm on, in active layers, in train mode.

    Example:
        >>> cfg = MLPConfig(4, 2, 2, 8)
        >>> arch = make_arch(dict(n_layers=2, units=[3, 5], dropout=0.5), cfg)
        >>> v = init_mlp(jax.random.key(0), arch, cfg)
        >>> logits, stats = apply_mlp(v, jnp.ones((6, 4)), arch, cfg, train=True,
        ...                           key=jax.random.key(1))
        >>> logits.shape
        (6, 2)
    """
    _check_cfg(cfg)
    if train and key is None:
        raise ValueError("apply_mlp(train=True) needs a PRNG `key` for dropout, got None")
    if x_BxF.ndim != 2 or x_BxF.shape[1] != cfg.in_features:
        raise ValueError(f"x_BxF has shape {x_BxF.shape}, expected (B, {cfg.in_features})")
    params, stats = variables["params"], variables["batch_stats"]
    n_layers, units_L = _clipped(arch, cfg)
    act_L = jnp.broadcast_to(arch.activation, (cfg.max_layers,))
    batch_norm = jnp.asarray(arch.batch_norm, jnp.bool_)
    rate = jnp.clip(jnp.asarray(arch.dropout, jnp.float32), 0.0, MAX_DROPOUT)
    unit_ids = jnp.arange(cfg.max_units)
    h = x_BxF
    new_stats = {}
    for l in range(cfg.max_layers):
        active = l < n_layers
        dense, bn, bn_stats = params[f"dense_{l}"], params[f"bn_{l}"], stats[f"bn_{l}"]
        z_BxU = h @ dense["kernel"] + dense["bias"]
        if train:
            z_bn, new_mean, new_var = batch_norm_train(
                z_BxU, bn["scale"], bn["bias"], bn_stats["mean"], bn_stats["var"]
            )
            update = batch_norm & active
            new_stats[f"bn_{l}"] = {
                "mean": jnp.where(update, new_mean, bn_stats["mean"]),
                "var": jnp.where(update, new_var, bn_stats["var"]),
            }
        else:
            z_bn = batch_norm_eval(
                z_BxU, bn["scale"], bn["bias"], bn_stats["mean"], bn_stats["var"]
            )
            new_stats[f"bn_{l}"] = bn_stats
        z_BxU = jnp.where(batch_norm, z_bn, z_BxU)
        a_BxU = activate(act_L[l], z_BxU, cfg.activations)
        a_BxU = jnp.where(unit_ids < units_L[l], a_BxU, 0.0)
        if train:
            a_BxU = dropout(jax.random.fold_in(key, l), a_BxU, rate)
        h = a_BxU if l == 0 else jnp.where(active, a_BxU, h)  # layer 0 always active
    logits_BxC = h @ params["out"]["kernel"] + params["out"]["bias"]
    return logits_BxC, new_stats


# --------------------------------------------------------------------------
# Dense reference network of the real size
# --------------------------------------------------------------------------


def _slice_tree(tree: dict, a: dict, cfg: MLPConfig, collection: str) -> dict:
    """Cuts the real network out of a max-size ``params``/``batch_stats`` tree."""
    out = {}
    in_dim = cfg.in_features
    for l in range(a["n_layers"]):
        u = a["units"][l]
        if collection == "params":
            out[f"dense_{l}"] = {
                "kernel": tree[f"dense_{l}"]["kernel"][:in_dim, :u],
                "bias": tree[f"dense_{l}"]["bias"][:u],
            }
            if a["batch_norm"]:
                out[f"bn_{l}"] = {
                    "scale": tree[f"bn_{l}"]["scale"][:u],
                    "bias": tree[f"bn_{l}"]["bias"][:u],
                }
        elif a["batch_norm"]:
            out[f"bn_{l}"] = {k: v[:u] for k, v in tree[f"bn_{l}"].items()}
        in_dim = u
    if collection == "params":
        out["out"] = {"kernel": tree["out"]["kernel"][:in_dim], "bias": tree["out"]["bias"]}
    return out


def dense_params(variables: dict, arch_python: Mapping[str, Any], cfg: MLPConfig) -> dict:
    """Slices one member's real-size network out of its max-size variables.

    Works on any tree with the structure of ``init_mlp``'s output (e.g.
    gradients ``{"params": grads, "batch_stats": ...}``); host side.

    Args:
        variables: one member's ``{"params", "batch_stats"}`` (no S axis).
        arch_python: the member's architecture dict (see ``make_arch``).
        cfg: the max-size shape config.

    Returns:
        Dense variables ``{"params": {"dense_l": {"kernel" [fan_in, u_l],
        "bias"}, "bn_l" (only with batch norm), "out"}, "batch_stats":
        {"bn_l": ...} or {}}`` for l < n_layers, as used by ``apply_dense``.

    Example:
        >>> cfg = MLPConfig(4, 2, 3, 8)
        >>> arch = dict(n_layers=2, units=[3, 5])
        >>> v = init_mlp(jax.random.key(0), make_arch(arch, cfg), cfg)
        >>> dense_params(v, arch, cfg)["params"]["dense_1"]["kernel"].shape
        (3, 5)
    """
    _check_cfg(cfg)
    a = _normalize_arch(arch_python, cfg.max_layers, cfg.max_units)
    return {
        "params": _slice_tree(variables["params"], a, cfg, "params"),
        "batch_stats": _slice_tree(variables["batch_stats"], a, cfg, "batch_stats"),
    }


def init_dense(
    key: jax.Array, arch_python: Mapping[str, Any], in_features: int, num_classes: int
) -> dict:
    """Initializes a dense network of the real size (for sequential baselines).

    Same distribution as ``init_mlp``'s active entries: a unit draw (truncated
    normal, or uniform for the uniform schemes) times the scheme's std
    (``layers.init_std``) with the real fans, zero biases, unit batch-norm scales.

    Args:
        key: PRNG key.
        arch_python: architecture dict (see ``make_arch``).
        in_features: F.
        num_classes: C.

    Returns:
        Dense variables in ``dense_params``'s format.

    Example:
        >>> v = init_dense(jax.random.key(0), dict(n_layers=2, units=[3, 5]), 4, 2)
        >>> v["params"]["out"]["kernel"].shape
        (5, 2)
    """
    a = _normalize_arch(arch_python)
    if in_features < 1 or num_classes < 1:
        raise ValueError(f"in_features={in_features}, num_classes={num_classes} must be >= 1")
    dims = [in_features, *a["units"], num_classes]
    sizes = [i * o for i, o in zip(dims[:-1], dims[1:])]
    draw, k = (unit_uniform, jax.random.fold_in(key, 1)) if uses_uniform((a["init"],)) else (unit_normal, key)
    draws = jnp.split(draw(k, (sum(sizes),), jnp.float32), np.cumsum(sizes)[:-1])
    acts = layer_activations(a)
    params, stats = {}, {}
    in_dim = in_features
    for l, u in enumerate(a["units"]):
        kernel = draws[l].reshape(in_dim, u) * init_std(a["init"], INIT_GAIN2[acts[l]], in_dim, u)[0]
        params[f"dense_{l}"] = {"kernel": kernel, "bias": jnp.zeros((u,), jnp.float32)}
        if a["batch_norm"]:
            ones, zeros = jnp.ones((u,), jnp.float32), jnp.zeros((u,), jnp.float32)
            params[f"bn_{l}"] = {"scale": ones, "bias": zeros}
            stats[f"bn_{l}"] = {"mean": zeros, "var": ones}
        in_dim = u
    kernel_out = draws[-1].reshape(in_dim, num_classes) * init_std(a["init"], OUT_GAIN2, in_dim, num_classes)[0]
    params["out"] = {"kernel": kernel_out, "bias": jnp.zeros((num_classes,), jnp.float32)}
    return {"params": params, "batch_stats": stats}


def apply_dense(
    variables: dict,
    x_BxF: jax.Array,
    arch_python: Mapping[str, Any],
    *,
    train: bool = False,
    key: jax.Array | None = None,
    return_batch_stats: bool = False,
):
    """Runs the dense reference network of the real size (no masks).

    Args:
        variables: dense variables from ``dense_params`` or ``init_dense``.
        x_BxF: inputs ``[B, F]``.
        arch_python: architecture dict (static).
        train: batch statistics for batch norm and dropout when True.
        key: PRNG key, required when ``train`` and dropout > 0.
        return_batch_stats: also return the updated running statistics
            (needed to train a batch-norm network with this function).

    Returns:
        ``logits_BxC``, or ``(logits_BxC, new_batch_stats)`` when
        ``return_batch_stats``.

    Example:
        >>> arch = dict(n_layers=1, units=[3])
        >>> v = init_dense(jax.random.key(0), arch, 4, 2)
        >>> apply_dense(v, jnp.ones((6, 4)), arch).shape
        (6, 2)
    """
    a = _normalize_arch(arch_python)
    if train and a["dropout"] > 0 and key is None:
        raise ValueError(f"apply_dense(train=True) with dropout={a['dropout']} needs a PRNG `key`")
    params, stats = variables["params"], variables["batch_stats"]
    acts = layer_activations(a)
    h = x_BxF
    new_stats = {}
    for l in range(a["n_layers"]):
        z = h @ params[f"dense_{l}"]["kernel"] + params[f"dense_{l}"]["bias"]
        if a["batch_norm"]:
            bn, s = params[f"bn_{l}"], stats[f"bn_{l}"]
            if train:
                z, mean, var = batch_norm_train(z, bn["scale"], bn["bias"], s["mean"], s["var"])
                new_stats[f"bn_{l}"] = {"mean": mean, "var": var}
            else:
                z = batch_norm_eval(z, bn["scale"], bn["bias"], s["mean"], s["var"])
                new_stats[f"bn_{l}"] = s
        h = ACTIVATIONS[acts[l]](z)
        if train and a["dropout"] > 0:
            h = dropout(jax.random.fold_in(key, l), h, jnp.asarray(a["dropout"], h.dtype))
    logits = h @ params["out"]["kernel"] + params["out"]["bias"]
    return (logits, new_stats) if return_batch_stats else logits


# --------------------------------------------------------------------------
# FLOP accounting
# --------------------------------------------------------------------------


def useful_flops(arch_python: Mapping[str, Any], in_features: int, num_classes: int) -> int:
    """Forward FLOPs per example of the member's REAL network (2 per multiply-add).

    Counts the matmuls only (biases, activations, batch norm are O(units)).
    A training step costs about 3x this per example (forward, plus the
    backward's two matmuls per layer: input and weight gradients).

    Args:
        arch_python: architecture dict.
        in_features: F.
        num_classes: C.

    Returns:
        ``2 * (F*u_0 + sum_l u_{l-1}*u_l + u_last*C)``.

    Example:
        >>> useful_flops(dict(n_layers=2, units=[3, 5]), 4, 2)
        74
    """
    a = _normalize_arch(arch_python)
    dims = [in_features, *a["units"], num_classes]
    return int(sum(2 * i * o for i, o in zip(dims[:-1], dims[1:])))


def computed_flops(cfg: MLPConfig) -> int:
    """Forward FLOPs per example of the max-size masked network (see ``useful_flops``).

    Inactive layers still run their full matmul, so every member costs this.

    Args:
        cfg: the max-size shape config.

    Returns:
        ``2 * (F*U + (L-1)*U*U + U*C)``.

    Example:
        >>> computed_flops(MLPConfig(4, 2, 2, 8))
        224
    """
    _check_cfg(cfg)
    F, C, L, U = cfg.in_features, cfg.num_classes, cfg.max_layers, cfg.max_units
    return int(2 * (F * U + (L - 1) * U * U + U * C))


# --------------------------------------------------------------------------
# The family record's functions (models/__init__.py)
# --------------------------------------------------------------------------


def mlp_space(max_layers: int = 3,
              units: tuple[int, int] = (16, 256),
              activations: Sequence[str] = ("relu", "tanh", "sigmoid", "elu"),
              learning_rate: tuple[float, float] = optim.LEARNING_RATE_RANGE,
              optimizers: Sequence[str] | None = None,
              momentum: tuple[float, float] | None = None,
              weight_decay: tuple[float, float] | None = None,
              dropout: tuple[float, float] | None = None,
              batch_norm: bool = False,
              lr_decay: tuple[float, float] | None = None,
              beta2: tuple[float, float] | None = None,
              eps: tuple[float, float] | None = None,
              init_schemes: Sequence[str] | None = None,
              per_layer_activation: bool = False,
              batch_sizes: Sequence[int] | None = None) -> SearchSpace:
    """The MLP search space of the original study, with optional extras.

    Params, in order: ``n_layers`` Int(1, max_layers) (Fixed(1) if
    max_layers == 1); ``units_1`` .. ``units_{max_layers}`` Int(units,
    log=True), ``units_k`` active when ``n_layers >= k``; ``activation``
    Choice(activations) (or, per layer, ``activation_1`` ..
    ``activation_{max_layers}``); ``learning_rate`` Float(log=True); then, only when
    given: ``optimizer`` Choice(optimizers), ``momentum`` Float,
    ``weight_decay`` Float(log=True), ``beta2`` Float, ``eps``
    Float(log=True), ``dropout`` Float, ``batch_norm``
    Choice([False, True]), ``lr_decay`` Float(log=True) (final learning rate
    as a fraction of the initial one, cosine schedule), ``init``
    Choice(init_schemes) (how the kernels start, ``layers.INIT_SCHEMES``),
    ``batch_size`` Choice(batch_sizes) (each member's own, `train.fit_span`).

    Args:
        max_layers: maximum number of hidden layers (>= 1).
        units: (lo, hi) hidden width, log scale.
        activations: activation names.
        learning_rate: (lo, hi), log scale.
        optimizers: optimizer names, or None to leave the choice out.
        momentum: (lo, hi) linear, or None.
        weight_decay: (lo, hi) log scale (lo > 0), or None.
        dropout: (lo, hi) linear, or None.
        batch_norm: add a ``batch_norm`` on/off choice.
        lr_decay: (lo, hi) log scale (lo > 0, hi <= 1), or None for a constant rate.
        beta2: (lo, hi) in [0, 1) linear, or None (Adam's 0.999): adam, adamw and nadam's ``b2``.
        eps: (lo, hi) log scale (lo > 0), or None (1e-8): their ``eps``.
        per_layer_activation: tune ``activation_1`` .. ``activation_{max_layers}``
            (``activation_k`` active when ``n_layers >= k``, each a
            Choice(activations)) instead of one ``activation`` for every layer.
        init_schemes: kernel initialization schemes to choose from (e.g.
            ``("he_normal", "glorot_uniform")``), or None: "auto" (He for
            rectifiers, LeCun for tanh/sigmoid and the output layer).
        batch_sizes: minibatch sizes to choose from (e.g. ``(32, 64, 128)``),
            or None: the study's one ``batch_size``. Not with ``batch_norm``
            (its statistics would come from chunks of the sizes' gcd).

    Returns:
        The :class:`SearchSpace`.

    Example:
        >>> mlp_space().names
        ('n_layers', 'units_1', 'units_2', 'units_3', 'activation', 'learning_rate')
    """
    max_layers = as_int(max_layers, "max_layers")
    if max_layers < 1:
        raise ValueError(f"max_layers must be >= 1, got {max_layers}")
    def named(name, make):
        # The parameter's own complaint (bounds not numbers, lo == hi, ...) with the setting's name in front.
        try:
            return make()
        except ValueError as e:
            raise ValueError(str(e) if str(e).startswith(name) else f"{name}: {e}") from None

    u_lo, u_hi = range_arg(units, "units")
    params: dict[str, Any] = {"n_layers": Fixed(1) if max_layers == 1 else Int(1, max_layers)}
    for k in range(1, max_layers + 1):
        params[f"units_{k}"] = named("units", lambda k=k: Int(u_lo, u_hi, log=True,
                                                             when=None if k == 1 else AtLeast("n_layers", k)))
    if isinstance(activations, str):  # Choice("relu") would offer "r", "e", "l", "u"
        raise ValueError(f"activations must be a list of names from {list(ACTIVATION_NAMES)}, got {activations!r}")
    if not isinstance(per_layer_activation, (bool, np.bool_)):
        raise ValueError(f"per_layer_activation must be True or False, got {per_layer_activation!r}")
    if per_layer_activation:
        for k in range(1, max_layers + 1):
            params[f"activation_{k}"] = named("activations", lambda k=k: Choice(
                activations, when=None if k == 1 else AtLeast("n_layers", k)))
    else:
        params["activation"] = named("activations", lambda: Choice(activations))
    unknown = [a for a in activations if a not in ACTIVATIONS]
    if unknown:
        raise ValueError(f"activations {unknown} are not among the supported {list(ACTIVATION_NAMES)}")
    params["learning_rate"] = named("learning_rate",
                                    lambda: real_range(learning_rate, "learning_rate", log=True))
    params.update(optim.optimizer_params(optimizers, momentum, weight_decay, beta2, eps))
    if dropout is not None:
        params["dropout"] = named("dropout", lambda: real_range(dropout, "dropout"))
        if not (0 <= params["dropout"].lo and params["dropout"].hi < 1):  # a rate of 1 drops every unit
            raise ValueError(f"dropout must lie in [0, 1), got ({params['dropout'].lo:g}, {params['dropout'].hi:g})")
    if not isinstance(batch_norm, (bool, np.bool_)):  # "no" would switch it on
        raise ValueError(f"batch_norm must be True or False, got {batch_norm!r}")
    if batch_norm:
        params["batch_norm"] = Choice([False, True])
    if lr_decay is not None:
        decay = named("lr_decay", lambda: real_range(lr_decay, "lr_decay"))
        if not (0 < decay.lo and decay.hi <= 1):  # final / initial learning rate, on a log scale
            raise ValueError(f"lr_decay must lie in (0, 1], got ({decay.lo:g}, {decay.hi:g})")
    params.update(optim.lr_decay_param(lr_decay))
    if init_schemes is not None:
        if isinstance(init_schemes, str):  # Choice("he_normal") would offer its letters
            raise ValueError(f"init_schemes must be a list of names from {list(INIT_SCHEMES)}, got {init_schemes!r}")
        unknown = [i for i in init_schemes if i not in INIT_SCHEMES]
        if unknown:
            raise ValueError(f"init_schemes {unknown} are not among the supported {list(INIT_SCHEMES)}")
        params["init"] = named("init_schemes", lambda: Choice(init_schemes))
    params.update(optim.batch_size_param(batch_sizes, batch_norm))
    return SearchSpace(params)


def limits(space: SearchSpace) -> tuple[int, int]:
    """``(max_layers, max_units)`` the space can ask for: the masked network's size.

    Example:
        >>> limits(mlp_space(max_layers=2, units=(4, 32)))
        (2, 32)
    """
    layers = units = 1
    for name, p in space.params.items():
        hi = getattr(p, "hi", getattr(p, "value", 1))
        if name == "n_layers":
            layers = int(hi)
        elif name.startswith("units_"):
            layers = max(layers, int(name.split("_")[1]))
            units = max(units, int(hi))
    return layers, units


def _options(p) -> tuple:
    """The values a `Choice` offers, or a `Fixed` one's value."""
    return tuple(p.options) if isinstance(p, Choice) else (p.value,)


def _activation_params(space: SearchSpace) -> list:
    """The space's ``activation`` and ``activation_k`` parameters."""
    return [p for name, p in space.params.items() if name == "activation" or _layer_of(name, "activation_")]


def _layer_of(name: str, prefix: str) -> int | None:
    """k of a name ``{prefix}{k}`` (k >= 1, no leading zeros), else None."""
    k = name[len(prefix):] if name.startswith(prefix) else ""
    return int(k) if k.isdigit() and k == str(int(k)) and int(k) >= 1 else None


def activation_names(space: SearchSpace) -> tuple[str, ...]:
    """The activations members of `space` may use (every layer's): only these are computed under vmap."""
    names: dict = {}
    for p in _activation_params(space):
        names.update(dict.fromkeys(_options(p)))
    return tuple(names) or ("relu",)


def init_names(space: SearchSpace) -> tuple[str, ...]:
    """The initialization schemes members of `space` may use (``("auto",)`` without an ``init`` choice)."""
    p = space.params.get("init")
    return ("auto",) if p is None else _options(p)


def config(space: SearchSpace, in_features: int, num_classes: int, input_shape=None,
           branching: bool = False) -> MLPConfig:
    """The max-size `MLPConfig` of `space` (``input_shape`` and ``branching`` are not used)."""
    max_layers, max_units = limits(space)
    return MLPConfig(in_features, num_classes, max_layers, max_units, activations=activation_names(space),
                     inits=init_names(space))


def decode(space: SearchSpace, cfg: MLPConfig) -> Callable:
    """Returns ``hparams(position_D) -> (Arch, OptHParams)``, traceable.

    Names follow :func:`mlp_space`. A name the space lacks takes its default
    (max depth and width, relu, the optimizer defaults of `optim`, no dropout,
    no batch norm). Per-layer ``activation_k`` (with ``activation_1``, and not
    with ``activation``) gives layer k its own; a layer past the last
    ``activation_k`` takes the one before it.

    Raises:
        ValueError: a name the family does not read (e.g. ``learnin_rate``), a
            ``units_k`` that ``n_layers`` never reaches or without every
            ``units_j`` (j < k), or a parameter of the wrong kind.

    Example:
        >>> space = mlp_space(max_layers=2, units=(4, 16))
        >>> arch, hp = decode(space, config(space, 8, 2))(jnp.full((space.num_dims,), 0.5))
        >>> arch.units.shape
        (2,)
    """
    known = ("n_layers", "activation", "learning_rate", "optimizer", "momentum", "weight_decay", "dropout",
             "batch_norm", "lr_decay", "init", *optim.ADAM_HPARAMS,
             "batch_size")  # batch_size: the training loop's (`train.batch_config`), not the network's
    layers = {}  # k -> the name units_k
    acts = {}  # k -> the name activation_k
    for name, p in space.params.items():
        if _layer_of(name, "units_"):
            layers[_layer_of(name, "units_")] = name
        elif _layer_of(name, "activation_"):
            acts[_layer_of(name, "activation_")] = name
        elif name not in known:
            # A misspelt name would otherwise be tuned for nothing while its default trains.
            raise ValueError(f"unknown parameter {name!r} for the MLP family; it reads n_layers, units_1, "
                             f"units_2, ..., activation_1, activation_2, ..., {', '.join(known[1:])}")
        values = p.options if isinstance(p, Choice) else [p.value] if isinstance(p, Fixed) else []
        if name == "n_layers" or name in layers.values():
            if isinstance(p, Float) or not all(isinstance(o, (int, np.integer)) and not isinstance(o, bool)
                                               for o in values):
                raise ValueError(f"{name} must be an Int, or a Choice or Fixed of integers, got {p!r}")
        elif name in ("learning_rate", "momentum", "weight_decay", "dropout", "lr_decay", *optim.ADAM_HPARAMS):
            if not all(isinstance(o, (int, float, np.integer, np.floating)) and not isinstance(o, bool)
                       for o in values):
                raise ValueError(f"{name} must be a Float, or a Choice or Fixed of numbers, got {p!r}")
    n = space.params.get("n_layers")
    reach = (cfg.max_layers if n is None else int(n.hi) if isinstance(n, Int)
             else int(n.value) if isinstance(n, Fixed) else int(max(n.options)))
    for k, name in sorted(layers.items()):
        if k > cfg.max_layers:
            raise ValueError(f"space has {name} but max_layers={cfg.max_layers}")
        if k > reach:
            raise ValueError(f"{name} is never used: n_layers reaches at most {reach} ({n!r})")
        missing = [f"units_{j}" for j in range(1, k) if j not in layers]
        if missing:
            raise ValueError(f"{name} needs the layers before it too; the space lacks {', '.join(missing)}")
    if acts and "activation" in space.params:
        raise ValueError("a space has either one activation for every layer or activation_1, activation_2, ...; "
                         "this one has both")
    for k, name in sorted(acts.items()):
        if k > min(reach, cfg.max_layers):
            raise ValueError(f"{name} is never used: n_layers reaches at most {min(reach, cfg.max_layers)}")
        missing = [f"activation_{j}" for j in range(1, k) if j not in acts]
        if missing:
            raise ValueError(f"{name} needs the layers before it too; the space lacks {', '.join(missing)}")
    for name in ("activation", "optimizer", "batch_norm", "init", *acts.values()):
        if name in space.names and not isinstance(space.params[name], Choice):
            raise ValueError(f"{name} must be a Choice, got {space.params[name]!r}")
    L, H = cfg.max_layers, cfg.max_units
    value = value_reader(space, {"activation": ACTIVATION_NAMES, "optimizer": optim.optimizer_names(space),
                                 "init": INIT_SCHEMES, **{name: ACTIVATION_NAMES for name in acts.values()}})
    last_act = {k: acts[max(j for j in acts if j <= k)] for k in range(1, L + 1)} if acts else {}
    relu = ACTIVATION_NAMES.index("relu")

    def hparams(position_D):
        v = space.decode(position_D)
        n_layers = jnp.clip(value(v, "n_layers", L), 1, L).astype(jnp.int32)
        units = jnp.stack([value(v, f"units_{k + 1}", H) for k in range(L)])
        arch = Arch(
            n_layers=n_layers,
            units=jnp.clip(units, 1, H).astype(jnp.int32),
            activation=(jnp.stack([jnp.asarray(value(v, last_act[k], relu), jnp.int32) for k in range(1, L + 1)])
                        if acts else jnp.full((L,), value(v, "activation", relu), jnp.int32)),
            dropout=jnp.asarray(value(v, "dropout", 0.0), jnp.float32),
            batch_norm=jnp.asarray(value(v, "batch_norm", False), bool),
            init=jnp.asarray(value(v, "init", 0), jnp.int32),
        )
        return arch, optim.opt_hparams(value, v)

    return hparams


def init_dense_of(key, arch_python: Mapping[str, Any], cfg: MLPConfig) -> dict:
    """`init_dense` with F and C read from the config."""
    return init_dense(key, arch_python, cfg.in_features, cfg.num_classes)


def apply_dense_of(variables, x_BxF, arch_python: Mapping[str, Any], cfg: MLPConfig, *, train: bool,
                   key=None):
    """`apply_dense` returning ``(logits_BxC, batch_stats)``, the masked network's call shape."""
    return apply_dense(variables, x_BxF, arch_python, train=train, key=key, return_batch_stats=True)


# Calibration against compiled.memory_analysis() of the masked swarm program
# on CPU (bench/results/scaling_cpu.md). Training: XLA keeps about 10 float32
# values per row, unit and hidden layer of one minibatch alive for the forward
# + backward pass (pre-activation, the activation branches that vmap evaluates
# and selects, masks, cotangents) next to one gradient. Evaluation (no
# gradient, `eval_batch_size` rows): about 1.5 values per row and unit for one
# hidden layer, about 8 for two or more.
_TRAIN_FLOATS_PER_UNIT_LAYER = 10
_EVAL_FLOATS_PER_UNIT = (1.5, 8.0)  # max_layers == 1, max_layers >= 2
_F32 = 4


def memory_terms(cfg: MLPConfig, batch: int, eval_batch: int) -> MemoryTerms:
    """One masked member's variables (shapes), minibatch activations and evaluation chunk, in bytes.

    Example:
        >>> memory_terms(MLPConfig(64, 10, 2, 64), 32, 100).activations > 0
        True
    """
    _check_cfg(cfg)
    F, C, L, U = cfg.in_features, cfg.num_classes, cfg.max_layers, cfg.max_units
    arch = Arch(jnp.int32(L), jnp.full((L,), U, jnp.int32), jnp.int32(0), jnp.float32(0), jnp.bool_(False),
                jnp.int32(0))
    variables = jax.eval_shape(lambda k: init_mlp(k, arch, cfg), jax.random.key(0))
    activations = _F32 * (batch * F + L * batch * U * _TRAIN_FLOATS_PER_UNIT_LAYER + 4 * batch * C)
    eval_chunk = int(_F32 * (eval_batch * U * _EVAL_FLOATS_PER_UNIT[L > 1] + 4 * eval_batch * C))
    return MemoryTerms(variables, activations, eval_chunk, F)


def signature(arch_S: Arch) -> np.ndarray:
    """``int[S, 1 + L]``: depth and the widths of the active layers (0 beyond the depth).

    Two members with equal rows have weights of the same real shapes.

    Example:
        >>> cfg = MLPConfig(4, 2, 3, 8)
        >>> signature(stack_archs([dict(n_layers=1, units=[3])], cfg)).tolist()
        [[1, 3, 0, 0]]
    """
    n_S1 = np.asarray(arch_S.n_layers)[:, None]
    layers = np.arange(np.shape(arch_S.units)[1])[None, :]
    return np.concatenate([n_S1, np.where(layers < n_S1, np.asarray(arch_S.units), 0)], axis=1)
