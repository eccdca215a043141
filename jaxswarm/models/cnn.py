"""A masked convolutional network for ONE swarm member; add the swarm axis with vmap.

The CNN counterpart of ``models.py`` (same conventions, same activations,
batch norm and dropout helpers). Every member owns weights of the maximum
shape (``CNNConfig``); its real architecture arrives as arrays (``CNNArch``):
the number of conv blocks, filters and kernel size per block, pooling type,
dense-head width, activation, dropout rate and batch-norm switch. Members
with different architectures share one compiled program, and moving a
particle never recompiles.

The real ("dense") network of an architecture, ``apply_dense_cnn``::

    for b < n_blocks:   h = pool(act(bn?(conv_kxk(h; filters[b]) + bias)))   then dropout
    flatten h [B, H_n, W_n, filters[n-1]] -> [B, H_n * W_n * filters[n-1]]
    h = act(bn?(h @ W_dense + b)) with dense_units units, then dropout
    logits = h @ W_out + b_out

Convolutions are stride 1 with 'SAME' zero padding (odd kernels only);
pooling is 2x2 with stride 2 and 'VALID' padding (28 -> 14 -> 7 -> 3, as
Keras' default ``MaxPooling2D``), max or average per member (``POOLINGS``),
after every block. Batch norm (per channel, statistics over batch and
space) sits before each activation of the blocks and of the dense layer.
Dropout (inverted, one rate per member) follows every block and the dense
layer, as in the classic Keras MNIST CNN.

How the max-size member computes exactly that network (central property,
tested in ``tests/test_cnn.py``, outputs and gradients):

* **Channels.** Block ``b`` has ``max_filters`` output channels; those
  ``>= filters[b]`` are zeroed after the activation (before pooling), so the
  next block's kernel rows for them multiply exact zeros.
* **Kernels.** Each slot holds a ``max_kernel x max_kernel`` kernel; the
  forward pass multiplies it by a mask that keeps the centred ``k x k``
  window. With 'SAME' padding a ``K x K`` convolution whose kernel is zero
  outside the centred ``k x k`` window IS the ``k x k`` 'SAME' convolution.
  Because the mask is applied in the forward pass, masked-out kernel entries
  get exactly zero gradient.
* **Depth and pooling.** Pooling changes the spatial shape, so an inactive
  block cannot "pass through" with static shapes. Instead every block slot
  runs (slot ``b`` sees a ``H / 2**b`` map), and the dense head reads the
  output of the member's LAST ACTIVE block: each slot's pooled map is
  flattened, zero-padded to the length of slot 0's (``P = H_1 * W_1 *
  max_filters``) and one ``jnp.where`` picks slot ``n_blocks - 1``. The head
  kernel is one ``[P, max_dense]`` matrix; for a member with ``n`` blocks only
  its first ``H_n * W_n * max_filters`` rows (and of those the rows of real
  channels) meet non-zero inputs. Slots after the last active one compute
  values that are discarded (``where``), so their parameters get exactly
  zero gradient.
* **Dense head.** Units ``>= dense_units`` are zeroed after the activation.

Hence every parameter outside the real network has no effect on the output
and gets an exactly zero gradient, and ``init_cnn`` zeroes them, so the
max-size parameters are the real network's, zero-padded (``dense_cnn_params``
slices them back).

Initialization uses the member's ACTIVE fan-in: ``k_b**2 * cin_b`` for conv
``b`` (``cin_0`` = input channels, then ``filters[b-1]``), ``H_n * W_n *
filters[n-1]`` for the dense layer, ``dense_units`` for the output layer;
He/LeCun gain per activation as in ``models.INIT_GAIN2`` (LeCun for the
output layer), unit truncated normals, zero biases, unit batch-norm scales.
A member's ``init`` scheme (``layers.INIT_SCHEMES``, as the MLP's) replaces
that gain and fan by variance scaling with the real fans (fan-out ``k_b**2 *
filters[b]`` for a conv, the units for a dense layer); where the space has a
uniform scheme, every kernel also draws uniforms (from ``fold_in`` of its key
by 1) and a member keeps the kind its scheme asks for.

Dropout draws its uniforms channel-first (``[F, B, H, W]`` for maps, ``[U,
B]`` for the dense layer, keys ``fold_in(key, b)`` and ``fold_in(key,
2**16)``): with JAX's partitionable Threefry the first ``f`` channels of
a max-size draw equal the real network's draw, so both drop the same units.

Cost (``computed_flops_cnn`` vs ``useful_flops_cnn``): every slot runs its
full ``max_kernel**2 * max_filters`` convolution, including slots after the
last active one, and the head matmul always has ``P`` rows; activation
(``lax.switch`` over all branches under vmap), both poolings, batch norm and
the head select are elementwise extras not counted. A 3x3 kernel in a 5x5
slot is 9/25 useful.

Example:
    >>> import jax, jax.numpy as jnp
    >>> cfg = CNNConfig(input_shape=(8, 8, 1), num_classes=3, max_blocks=2,
    ...                 max_filters=8, max_kernel=5, max_dense=16)
    >>> archs = stack_cnn_archs([dict(n_blocks=1, filters=[4], kernel=[3], dense_units=8),
    ...                          dict(n_blocks=2, filters=[8, 2], kernel=[5, 3],
    ...                               dense_units=16, pooling="avg")], cfg)
    >>> keys = jax.random.split(jax.random.key(0), 2)
    >>> variables_S = jax.vmap(init_cnn, in_axes=(0, 0, None))(keys, archs, cfg)
    >>> x = jnp.ones((5, 8, 8, 1))
    >>> logits_SxBxC, _ = jax.vmap(
    ...     lambda v, a: apply_cnn(v, x, a, cfg, train=False))(variables_S, archs)
    >>> logits_SxBxC.shape
    (2, 5, 3)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxswarm import optim
from jaxswarm.models.layers import (
    ACTIVATION_NAMES,
    ACTIVATIONS,
    INIT_GAIN2,
    INIT_SCHEMES,
    MAX_DROPOUT,
    OUT_GAIN2,
    MemoryTerms,
    activate,
    batch_norm_eval,
    batch_norm_train,
    dropout,
    init_std,
    unit_normal,
    unit_uniform,
    uses_uniform,
)
from jaxswarm.ops import CONV_IMPLS, conv2d, conv_impl
from jaxswarm.ops import pool2x2 as _pool
from jaxswarm.space import AtLeast, Choice, Fixed, Float, Int, SearchSpace, range_arg, real_range, value_reader

__all__ = [
    "POOLINGS",
    "CONV_IMPLS",
    "CNNConfig",
    "CNNArch",
    "make_cnn_arch",
    "stack_cnn_archs",
    "cnn_arch_to_python",
    "init_cnn",
    "apply_cnn",
    "dense_cnn_params",
    "init_dense_cnn",
    "apply_dense_cnn",
    "conv_impl",
    "conv2d",
    "filter_buckets",
    "kernel_sizes",
    "useful_flops_cnn",
    "computed_flops_cnn",
    "cnn_space",
    "cnn_limits",
    "cnn_hparams",
    "config",
    "decode",
    "memory_terms",
]

POOLINGS: tuple[str, ...] = ("max", "avg")
_DENSE_DROPOUT_SLOT = 1 << 16  # fold_in index of the dense layer's dropout key (blocks use b)


class CNNConfig(NamedTuple):
    """Static shape of the max-size CNN (hashable: pass it as a static arg).

    Attributes:
        input_shape: ``(H, W, C)`` of one example.
        num_classes: width of the logits.
        max_blocks: the most conv blocks a member may use (each pools by 2,
            so ``H`` and ``W`` must be at least ``2**max_blocks``).
        max_filters: the most channels a block may use.
        max_kernel: largest (odd) kernel size; smaller odd kernels are masks.
        max_dense: the most units of the dense hidden layer.
        activations: the activations members may use (as ``MLPConfig``):
            under vmap every listed one runs on every map, so list only the
            space's. ``CNNArch.activation`` still indexes
            ``ACTIVATION_NAMES``; an unlisted index falls back to the first.
        branching: run each member's own blocks, kernel window and head only
            (``lax.cond`` / ``lax.switch`` on its architecture) instead of
            masking the max-size network. For members trained one at a time
            (``train.make_train(layout="serial")``): there a conditional runs
            one branch. Under vmap every branch would run, so the masked form
            (False) is the cheaper one there. Same function either way.
        filter_buckets: branching only: channel counts a block may run at; a
            block of ``f`` filters runs at the smallest bucket ``>= f`` (its
            input at its predecessor's bucket), the rest stays zero. Default:
            powers of two from 8 below ``max_filters``, then ``max_filters``.
        kernels: branching only: the odd kernel sizes members use (one
            branch each; default every odd size up to ``max_kernel``).
        inits: the kernel initialization schemes members may use (as ``MLPConfig.inits``;
            default "auto" only). Where one is uniform, every kernel draws uniforms too.
        conv: how convolutions run: "xla" (``lax.conv_general_dilated``),
            "matmul" (shifted copies times the kernel; XLA:CPU runs it far faster
            inside training loops, bench/results/cnn_bench.md) or "auto" (matmul on
            CPU, xla elsewhere).
    """

    input_shape: tuple
    num_classes: int
    max_blocks: int = 3
    max_filters: int = 64
    max_kernel: int = 5
    max_dense: int = 256
    activations: tuple = ACTIVATION_NAMES
    branching: bool = False
    conv: str = "auto"
    filter_buckets: tuple = ()
    kernels: tuple = ()
    inits: tuple = ("auto",)


class CNNArch(NamedTuple):
    """One member's CNN architecture as arrays (vmap adds a leading S axis).

    Attributes:
        n_blocks: i32[] active conv blocks, 1..max_blocks (clipped).
        filters: i32[max_blocks] channels per block, 1..max_filters (clipped);
            entries of inactive blocks are ignored.
        kernel: i32[max_blocks] odd kernel size per block, 1..max_kernel
            (an even value acts as the next odd one).
        pooling: i32[] index into ``POOLINGS`` (2x2, stride 2, every block).
        dense_units: i32[] units of the dense hidden layer, 1..max_dense.
        activation: i32[] index into ``models.ACTIVATION_NAMES`` (every layer's), or
            i32[max_blocks + 1]: block b's at ``[b]``, the dense layer's at ``[max_blocks]``.
        dropout: f32[] dropout rate in [0, 1) after every block and the dense layer.
        batch_norm: bool[] batch norm before every activation.
        init: i32[] index into ``layers.INIT_SCHEMES``: how the kernels start.
    """

    n_blocks: jax.Array
    filters: jax.Array
    kernel: jax.Array
    pooling: jax.Array
    dense_units: jax.Array
    activation: jax.Array
    dropout: jax.Array
    batch_norm: jax.Array
    init: jax.Array


# --------------------------------------------------------------------------
# Static shapes and host-side architecture helpers
# --------------------------------------------------------------------------


def _check_cfg(cfg: CNNConfig) -> None:
    shape = tuple(cfg.input_shape) if isinstance(cfg.input_shape, (tuple, list)) else None
    if shape is None or len(shape) != 3 or not all(
        isinstance(d, (int, np.integer)) and d >= 1 for d in shape
    ):
        raise ValueError(f"CNNConfig.input_shape must be (H, W, C) positive ints, got {cfg.input_shape!r}")
    for name in ("num_classes", "max_blocks", "max_filters", "max_kernel", "max_dense"):
        value = getattr(cfg, name)
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"CNNConfig.{name} must be a positive int, got {value!r}")
    acts = tuple(cfg.activations) if isinstance(cfg.activations, (tuple, list)) else ()
    if not acts or len(set(acts)) != len(acts) or any(a not in ACTIVATIONS for a in acts):
        raise ValueError(
            f"CNNConfig.activations must be distinct names from {ACTIVATION_NAMES}, got {cfg.activations!r}"
        )
    inits = cfg.inits
    if not isinstance(inits, tuple) or not inits or len(set(inits)) != len(inits) or any(
            i not in INIT_SCHEMES for i in inits):
        raise ValueError(f"CNNConfig.inits must be a non-empty tuple of distinct names from {INIT_SCHEMES}, "
                         f"got {inits!r}")
    if cfg.max_kernel % 2 == 0:
        raise ValueError(f"CNNConfig.max_kernel must be odd ('SAME' centred kernels), got {cfg.max_kernel}")
    conv_impl(cfg.conv)
    h, w, _ = shape
    if min(h, w) >> cfg.max_blocks < 1:
        raise ValueError(
            f"input_shape {shape} is too small for max_blocks={cfg.max_blocks}: "
            f"each block pools by 2, so H and W must be >= {2 ** cfg.max_blocks}"
        )


def _spatial(cfg_or_shape, n_pools: int) -> tuple[int, int]:
    """(H, W) after ``n_pools`` 2x2 'VALID' poolings."""
    shape = cfg_or_shape.input_shape if isinstance(cfg_or_shape, CNNConfig) else cfg_or_shape
    h, w = int(shape[0]), int(shape[1])
    for _ in range(n_pools):
        h, w = h // 2, w // 2
    return h, w


def _index(value: Any, names: Sequence[str], what: str) -> int:
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"unknown {what} {value!r}; expected one of {tuple(names)}")
        return list(names).index(value)
    index = int(value)
    if not 0 <= index < len(names):
        raise ValueError(f"{what} index {index} out of range 0..{len(names) - 1}")
    return index


_ARCH_KEYS = {"n_blocks", "filters", "kernel", "pooling", "dense_units", "activation", "dropout", "batch_norm",
              "init"}


def _normalize_arch(arch: Mapping[str, Any], cfg: CNNConfig | None = None) -> dict[str, Any]:
    """Validates a host-side CNN architecture dict and returns a canonical copy.

    Canonical form: ``n_blocks`` int, ``filters`` and ``kernel`` tuples of
    exactly ``n_blocks`` ints, ``pooling`` and ``init`` names, ``activation`` a
    name (every layer's) or, when the layers differ, a tuple of ``n_blocks + 1``
    names (each block's, then the dense layer's), ``dense_units`` int,
    ``dropout`` float, ``batch_norm`` bool.
    """
    missing = {"n_blocks", "filters", "dense_units"} - set(arch)
    if missing:
        raise ValueError(f"CNN architecture needs {sorted(missing)}, got keys {sorted(arch)}")
    unknown = set(arch) - _ARCH_KEYS
    if unknown:
        raise ValueError(f"unknown CNN architecture keys {sorted(unknown)}")
    max_blocks = cfg.max_blocks if cfg else None
    n = int(arch["n_blocks"])
    if n < 1 or (max_blocks is not None and n > max_blocks):
        raise ValueError(f"n_blocks={n} outside 1..{max_blocks or 'inf'}")
    filters = [int(f) for f in np.asarray(arch["filters"]).reshape(-1)]
    if len(filters) < n:
        raise ValueError(f"filters={filters} has fewer than n_blocks={n} entries")
    filters = filters[:n]
    for f in filters:
        if f < 1 or (cfg is not None and f > cfg.max_filters):
            raise ValueError(f"filters={filters}: each must lie in 1..{cfg.max_filters if cfg else 'inf'}")
    kernel = np.asarray(arch.get("kernel", 3)).reshape(-1)
    kernel = [int(kernel[0])] * n if kernel.size == 1 else [int(k) for k in kernel]
    if len(kernel) < n:
        raise ValueError(f"kernel={kernel} has fewer than n_blocks={n} entries")
    kernel = kernel[:n]
    for k in kernel:
        if k < 1 or k % 2 == 0 or (cfg is not None and k > cfg.max_kernel):
            raise ValueError(
                f"kernel={kernel}: each must be odd and in 1..{cfg.max_kernel if cfg else 'inf'}"
            )
    dense_units = int(arch["dense_units"])
    if dense_units < 1 or (cfg is not None and dense_units > cfg.max_dense):
        raise ValueError(f"dense_units={dense_units} outside 1..{cfg.max_dense if cfg else 'inf'}")
    dropout = float(arch.get("dropout", 0.0))
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} outside [0, 1)")
    activation = arch.get("activation", "relu")
    if isinstance(activation, (str, int, np.integer)) or np.ndim(activation) == 0:
        activation = [activation]
    acts = [ACTIVATION_NAMES[_index(x, ACTIVATION_NAMES, "activation")] for x in activation]
    if len(acts) > 1 and len(acts) != n + 1:
        raise ValueError(f"activation={list(activation)} must be one name or n_blocks + 1 = {n + 1} "
                         "(each block's, then the dense layer's)")
    return {
        "n_blocks": n,
        "filters": tuple(filters),
        "kernel": tuple(kernel),
        "pooling": POOLINGS[_index(arch.get("pooling", "max"), POOLINGS, "pooling")],
        "dense_units": dense_units,
        "activation": acts[0] if len(set(acts)) == 1 else tuple(acts),
        "dropout": dropout,
        "batch_norm": bool(arch.get("batch_norm", False)),
        "init": INIT_SCHEMES[_index(arch.get("init", "auto"), INIT_SCHEMES, "init")],
    }


def layer_activations(arch_python: Mapping[str, Any]) -> tuple[str, ...]:
    """Each block's activation, then the dense layer's, of a (canonical) architecture dict.

    Example:
        >>> layer_activations(dict(n_blocks=2, filters=[3, 4], dense_units=8, activation="tanh"))
        ('tanh', 'tanh', 'tanh')
    """
    act = arch_python["activation"]
    return (act,) * (arch_python["n_blocks"] + 1) if isinstance(act, str) else tuple(act)


def _layer_acts(arch: CNNArch, cfg: CNNConfig):
    """i32[max_blocks + 1]: each block's activation index, then the dense layer's (traced)."""
    return jnp.broadcast_to(jnp.asarray(arch.activation, jnp.int32).reshape(-1), (cfg.max_blocks + 1,))


def make_cnn_arch(arch_python: Mapping[str, Any], cfg: CNNConfig) -> CNNArch:
    """Builds the array form of one CNN architecture (host side, validated).

    Args:
        arch_python: dict with ``n_blocks``, ``filters`` (at least ``n_blocks``
            ints), ``dense_units`` and optionally ``kernel`` (an odd int or one
            per block, default 3), ``pooling`` ("max" or "avg", default
            "max"), ``activation`` (default "relu"), ``dropout`` (default 0),
            ``batch_norm`` (default False), ``init`` (a name of ``INIT_SCHEMES``, default "auto").
        cfg: the max-size shape config.

    Returns:
        ``CNNArch`` with per-block entries padded to ``cfg.max_blocks``.

    Example:
        >>> cfg = CNNConfig((8, 8, 1), 2, max_blocks=3, max_filters=8)
        >>> make_cnn_arch(dict(n_blocks=2, filters=[8, 3], dense_units=4), cfg).filters.tolist()
        [8, 3, 1]
    """
    _check_cfg(cfg)
    a = _normalize_arch(arch_python, cfg)
    acts = layer_activations(a)
    for act in acts:
        if act not in tuple(cfg.activations):
            raise ValueError(f"activation {act!r} not in CNNConfig.activations {tuple(cfg.activations)}")
    if a["init"] not in cfg.inits:
        raise ValueError(f"init {a['init']!r} not in CNNConfig.inits {cfg.inits}")
    pad = cfg.max_blocks - a["n_blocks"]
    return CNNArch(
        n_blocks=jnp.asarray(a["n_blocks"], jnp.int32),
        filters=jnp.asarray(list(a["filters"]) + [1] * pad, jnp.int32),
        kernel=jnp.asarray(list(a["kernel"]) + [1] * pad, jnp.int32),
        pooling=jnp.asarray(POOLINGS.index(a["pooling"]), jnp.int32),
        dense_units=jnp.asarray(a["dense_units"], jnp.int32),
        # Each block's, the last one's again for inactive blocks, then the dense layer's.
        activation=jnp.asarray([ACTIVATION_NAMES.index(x) for x in acts[:-1] + acts[-2:-1] * pad + acts[-1:]],
                               jnp.int32),
        dropout=jnp.asarray(a["dropout"], jnp.float32),
        batch_norm=jnp.asarray(a["batch_norm"], jnp.bool_),
        init=jnp.asarray(INIT_SCHEMES.index(a["init"]), jnp.int32),
    )


def stack_cnn_archs(archs_python: Sequence[Mapping[str, Any]], cfg: CNNConfig) -> CNNArch:
    """Stacks host-side architectures into one ``CNNArch`` with a leading S axis.

    Example:
        >>> cfg = CNNConfig((8, 8, 1), 2, max_blocks=2, max_filters=8)
        >>> stack_cnn_archs([dict(n_blocks=1, filters=[3], dense_units=4),
        ...                  dict(n_blocks=2, filters=[8, 8], dense_units=4)], cfg).n_blocks.tolist()
        [1, 2]
    """
    if len(archs_python) == 0:
        raise ValueError("stack_cnn_archs needs at least one architecture, got 0")
    archs = [make_cnn_arch(a, cfg) for a in archs_python]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *archs)


def cnn_arch_to_python(arch: CNNArch) -> dict[str, Any]:
    """Converts one (unbatched, concrete) ``CNNArch`` to its canonical dict.

    Example:
        >>> cfg = CNNConfig((8, 8, 1), 2, max_blocks=2, max_filters=8)
        >>> cnn_arch_to_python(make_cnn_arch(dict(n_blocks=1, filters=[5, 6],
        ...                                       dense_units=4), cfg))["filters"]
        (5,)
    """
    kernel = [int(k) | 1 for k in np.asarray(arch.kernel).tolist()]  # even k acts as k + 1
    n = int(np.clip(int(arch.n_blocks), 1, len(kernel)))
    acts = np.broadcast_to(np.asarray(arch.activation).reshape(-1), (len(kernel) + 1,))
    return _normalize_arch(
        {
            "n_blocks": int(arch.n_blocks),
            "filters": np.asarray(arch.filters).tolist(),
            "kernel": kernel,
            "pooling": int(arch.pooling),
            "dense_units": int(arch.dense_units),
            "activation": [int(x) for x in acts[:n]] + [int(acts[-1])],
            "dropout": float(arch.dropout),
            "batch_norm": bool(arch.batch_norm),
            "init": int(arch.init),
        }
    )


# --------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------


def _bn_maps_train(z_BxHxWxF, scale, bias, mean, var):
    f = z_BxHxWxF.shape[-1]
    y, new_mean, new_var = batch_norm_train(z_BxHxWxF.reshape(-1, f), scale, bias, mean, var)
    return y.reshape(z_BxHxWxF.shape), new_mean, new_var


def _dropout_maps(key, h_BxHxWxF, rate):
    """Inverted dropout on maps; uniforms drawn [F, B, H, W] so fewer channels are a prefix."""
    b, h, w, f = h_BxHxWxF.shape
    u_FxBxHxW = jax.random.uniform(key, (f, b, h, w), h_BxHxWxF.dtype)
    keep = jnp.transpose(u_FxBxHxW, (1, 2, 3, 0)) >= rate
    return jnp.where(keep, h_BxHxWxF / (1.0 - rate), 0.0)


def _gain2(activation):
    table = jnp.asarray([INIT_GAIN2[n] for n in ACTIVATION_NAMES], jnp.float32)
    return table[jnp.clip(activation, 0, len(ACTIVATION_NAMES) - 1)]


def _clipped(arch: CNNArch, cfg: CNNConfig):
    n = jnp.clip(jnp.asarray(arch.n_blocks, jnp.int32), 1, cfg.max_blocks)
    filters = jnp.clip(jnp.asarray(arch.filters, jnp.int32), 1, cfg.max_filters)
    kernel = jnp.clip(jnp.asarray(arch.kernel, jnp.int32), 1, cfg.max_kernel)
    if filters.shape != (cfg.max_blocks,) or kernel.shape != (cfg.max_blocks,):
        raise ValueError(
            f"arch.filters / arch.kernel have shapes {filters.shape} / {kernel.shape}, expected "
            f"({cfg.max_blocks},) (vmap over members, or build it with make_cnn_arch)"
        )
    dense = jnp.clip(jnp.asarray(arch.dense_units, jnp.int32), 1, cfg.max_dense)
    return n, filters, kernel, dense


def _kernel_mask(k, cfg: CNNConfig):
    """bool[K, K]: the centred k x k window of a max_kernel x max_kernel slot."""
    offset_K = jnp.abs(jnp.arange(cfg.max_kernel) - cfg.max_kernel // 2)
    inside_K = offset_K <= k // 2
    return inside_K[:, None] & inside_K[None, :]


def _centre(kernel_KxKxCxF, j: int):
    """The centred (2j+1) x (2j+1) window of a K x K kernel slot."""
    o = kernel_KxKxCxF.shape[0] // 2 - j
    return kernel_KxKxCxF[o : o + 2 * j + 1, o : o + 2 * j + 1]


def _pow2_buckets(lo: int, hi: int) -> tuple[int, ...]:
    """Powers of two from the first one >= lo up to (not including) hi, then hi: (16, 32, 64) for 10..64."""
    buckets, f = [], 1
    while f < lo:
        f *= 2
    while f < hi:
        buckets.append(f)
        f *= 2
    return (*buckets, hi)


def filter_buckets(cfg: CNNConfig) -> tuple[int, ...]:
    """The channel counts branching blocks run at (``CNNConfig.filter_buckets``), ascending."""
    if cfg.filter_buckets:
        return tuple(sorted({min(int(f), cfg.max_filters) for f in cfg.filter_buckets} | {cfg.max_filters}))
    return _pow2_buckets(8, cfg.max_filters)


def kernel_sizes(cfg: CNNConfig) -> tuple[int, ...]:
    """The odd kernel sizes branching blocks run (``CNNConfig.kernels``), ascending."""
    if cfg.kernels:
        return tuple(sorted({int(k) | 1 for k in cfg.kernels if int(k) <= cfg.max_kernel} | {cfg.max_kernel}))
    return tuple(range(1, cfg.max_kernel + 1, 2))


def _first_at_least(values: tuple[int, ...], x):
    """Index of the first entry of ascending `values` that is >= x (the last one if none)."""
    return jnp.minimum(jnp.sum(jnp.asarray(values) < x), len(values) - 1)


def _pooled_zeros(h_BxHxWxF):
    b, h, w, f = h_BxHxWxF.shape
    return jnp.zeros((b, h // 2, w // 2, f), h_BxHxWxF.dtype)


def _head_rows(cfg: CNNConfig) -> int:
    h, w = _spatial(cfg, 1)
    return h * w * cfg.max_filters


# --------------------------------------------------------------------------
# Max-size masked network (one member)
# --------------------------------------------------------------------------


def init_cnn(key: jax.Array, arch: CNNArch, cfg: CNNConfig) -> dict:
    """Initializes one member's max-size CNN variables for its architecture.

    Kernels use the member's ACTIVE fan-in; every entry outside the real
    network is zero. vmap-able over ``key`` and ``arch``.

    Args:
        key: PRNG key.
        arch: the member's ``CNNArch`` (traced arrays are fine).
        cfg: static max-size config.

    Returns:
        ``{"params": {"conv_b": {"kernel" [K, K, Cin_b, F], "bias" [F]},
        "bn_b": {"scale", "bias"} [F], "dense": {"kernel" [P, U], "bias" [U]},
        "bn_dense": {...} [U], "out": {"kernel" [U, C], "bias" [C]}},
        "batch_stats": {"bn_b" / "bn_dense": {"mean", "var"}}}`` with
        ``Cin_0 = C_in``, ``Cin_b = F`` after, ``P = H/2 * W/2 * F``.

    Example:
        >>> cfg = CNNConfig((8, 8, 1), 2, max_blocks=2, max_filters=8, max_dense=16)
        >>> arch = make_cnn_arch(dict(n_blocks=1, filters=[3], dense_units=4), cfg)
        >>> init_cnn(jax.random.key(0), arch, cfg)["params"]["dense"]["kernel"].shape
        (128, 16)
    """
    _check_cfg(cfg)
    n, filters, kernel, dense = _clipped(arch, cfg)
    K, F, U, C = cfg.max_kernel, cfg.max_filters, cfg.max_dense, cfg.num_classes
    c_in = cfg.input_shape[2]
    gain2_L = _gain2(_layer_acts(arch, cfg))  # each block's, then the dense layer's
    bn_on = jnp.asarray(arch.batch_norm, jnp.bool_)
    keys = jax.random.split(key, cfg.max_blocks + 2)
    mixed = uses_uniform(cfg.inits)

    def kernel_of(k, shape, auto_gain2, fan_in, fan_out):
        # The scheme's std times a unit draw: normal, or uniform (its own key) where the scheme asks.
        std, uniform = init_std(arch.init, auto_gain2, fan_in, fan_out)
        normal = unit_normal(k, shape, jnp.float32)
        return (jnp.where(uniform, unit_uniform(jax.random.fold_in(k, 1), shape), normal) if mixed else normal) * std

    chan_F = jnp.arange(F)
    params, stats = {}, {}
    in_mask, in_dim, cin_active = jnp.ones((c_in,), jnp.bool_), c_in, jnp.asarray(c_in, jnp.int32)
    for b in range(cfg.max_blocks):
        out_mask = (chan_F < filters[b]) & (b < n)
        k = kernel[b] | 1
        fan_in = (k * k * cin_active).astype(jnp.float32)
        w = kernel_of(keys[b], (K, K, in_dim, F), gain2_L[b], fan_in, (k * k * filters[b]).astype(jnp.float32))
        mask = _kernel_mask(k, cfg)[:, :, None, None] & in_mask[None, None, :, None] & out_mask
        params[f"conv_{b}"] = {"kernel": jnp.where(mask, w, 0.0), "bias": jnp.zeros((F,), jnp.float32)}
        params[f"bn_{b}"] = {"scale": (out_mask & bn_on).astype(jnp.float32), "bias": jnp.zeros((F,), jnp.float32)}
        stats[f"bn_{b}"] = {"mean": jnp.zeros((F,), jnp.float32), "var": jnp.ones((F,), jnp.float32)}
        in_mask, in_dim, cin_active = out_mask, F, filters[b]
    # Dense head: reads slot n-1's map [H_n, W_n, F] flattened (row-major), zero-padded to P rows.
    P = _head_rows(cfg)
    sizes_B = jnp.asarray([np.prod(_spatial(cfg, b + 1)) for b in range(cfg.max_blocks)], jnp.int32)
    last_filters = filters[n - 1]
    rows_P = jnp.arange(P)
    row_ok = (rows_P < sizes_B[n - 1] * F) & (rows_P % F < last_filters)
    col_ok = jnp.arange(U) < dense
    fan_in = (sizes_B[n - 1] * last_filters).astype(jnp.float32)
    w = kernel_of(keys[-2], (P, U), gain2_L[-1], fan_in, dense.astype(jnp.float32))
    params["dense"] = {"kernel": jnp.where(row_ok[:, None] & col_ok, w, 0.0), "bias": jnp.zeros((U,), jnp.float32)}
    params["bn_dense"] = {"scale": (col_ok & bn_on).astype(jnp.float32), "bias": jnp.zeros((U,), jnp.float32)}
    stats["bn_dense"] = {"mean": jnp.zeros((U,), jnp.float32), "var": jnp.ones((U,), jnp.float32)}
    w = kernel_of(keys[-1], (U, C), OUT_GAIN2, dense.astype(jnp.float32), jnp.float32(C))
    params["out"] = {"kernel": jnp.where(col_ok[:, None], w, 0.0), "bias": jnp.zeros((C,), jnp.float32)}
    return {"params": params, "batch_stats": stats}


def _norm(z, bn, s, train, update, batch_norm, maps):
    """Batch norm selected by the member's switch; returns (z, new running stats)."""
    if train:
        fn = _bn_maps_train if maps else batch_norm_train
        z_bn, mean, var = fn(z, bn["scale"], bn["bias"], s["mean"], s["var"])
        new = {"mean": jnp.where(update, mean, s["mean"]), "var": jnp.where(update, var, s["var"])}
    else:
        z_bn, new = batch_norm_eval(z, bn["scale"], bn["bias"], s["mean"], s["var"]), s
    return jnp.where(batch_norm, z_bn, z), new


def apply_cnn(
    variables: dict,
    x_BxHxWxC: jax.Array,
    arch: CNNArch,
    cfg: CNNConfig,
    *,
    train: bool,
    key: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """Runs one member's masked max-size CNN.

    Args:
        variables: ``{"params", "batch_stats"}`` from ``init_cnn``.
        x_BxHxWxC: images ``[B, H, W, C]`` (``[B, H*W*C]`` is reshaped).
        arch: the member's ``CNNArch``; values are clipped to valid ranges.
        cfg: static max-size config.
        train: static; batch statistics (and running-stat updates) and dropout.
        key: PRNG key for dropout; required when ``train``.

    Returns:
        ``(logits_BxC, new_batch_stats)``.

    Example:
        >>> cfg = CNNConfig((8, 8, 1), 2, max_blocks=2, max_filters=8, max_dense=16)
        >>> arch = make_cnn_arch(dict(n_blocks=2, filters=[3, 5], kernel=[5, 3],
        ...                           dense_units=4, dropout=0.5), cfg)
        >>> v = init_cnn(jax.random.key(0), arch, cfg)
        >>> logits, _ = apply_cnn(v, jnp.ones((6, 8, 8, 1)), arch, cfg, train=True,
        ...                       key=jax.random.key(1))
        >>> logits.shape
        (6, 2)
    """
    _check_cfg(cfg)
    if train and key is None:
        raise ValueError("apply_cnn(train=True) needs a PRNG `key` for dropout, got None")
    shape = tuple(cfg.input_shape)
    if x_BxHxWxC.ndim == 2 and x_BxHxWxC.shape[1] == int(np.prod(shape)):
        x_BxHxWxC = x_BxHxWxC.reshape(-1, *shape)
    if x_BxHxWxC.ndim != 4 or tuple(x_BxHxWxC.shape[1:]) != shape:
        raise ValueError(f"x has shape {x_BxHxWxC.shape}, expected (B, {', '.join(map(str, shape))})")
    params, stats = variables["params"], variables["batch_stats"]
    n, filters, kernel, dense = _clipped(arch, cfg)
    batch_norm = jnp.asarray(arch.batch_norm, jnp.bool_)
    rate = jnp.clip(jnp.asarray(arch.dropout, x_BxHxWxC.dtype), 0.0, MAX_DROPOUT)
    pooling = jnp.asarray(arch.pooling, jnp.int32)
    acts_L, names = _layer_acts(arch, cfg), tuple(cfg.activations)
    chan_F = jnp.arange(cfg.max_filters)
    P = _head_rows(cfg)
    h = x_BxHxWxC
    batch = h.shape[0]
    new_stats = {}
    head_in_BxP = None
    block_out = []
    buckets, kernels = filter_buckets(cfg), kernel_sizes(cfg)
    for b in range(cfg.max_blocks):
        conv, bn, s = params[f"conv_{b}"], params[f"bn_{b}"], stats[f"bn_{b}"]

        def block(h, conv=conv, bn=bn, s=s, b=b):
            w = jnp.where(_kernel_mask(kernel[b] | 1, cfg)[:, :, None, None], conv["kernel"], 0.0)
            z = conv2d(h, w, conv["bias"], cfg.conv)
            z, new = _norm(z, bn, s, train, batch_norm & (b < n), batch_norm, True)
            a = jnp.where(chan_F < filters[b], activate(acts_L[b], z, names), 0.0)
            h = jnp.where(pooling == 0, _pool(a, "max"), _pool(a, "avg"))
            if train:
                h = _dropout_maps(jax.random.fold_in(key, b), h, rate)
            return h, new

        def branch(h, cin, cout, k, conv=conv, bn=bn, s=s, b=b):
            """Block b at its bucket: input channels [:cin], output [:cout], k x k window; padded back to F."""
            z = conv2d(h[..., :cin], _centre(conv["kernel"], k // 2)[:, :, :cin, :cout], conv["bias"][:cout], cfg.conv)
            z, new = _norm(z, {q: v[:cout] for q, v in bn.items()}, {q: v[:cout] for q, v in s.items()},
                           train, batch_norm, batch_norm, True)
            new = {q: jnp.concatenate([new[q], s[q][cout:]]) for q in s}
            a = jnp.where(chan_F[:cout] < filters[b], activate(acts_L[b], z, names), 0.0)
            h = lax.cond(pooling == 0, lambda a: _pool(a, "max"), lambda a: _pool(a, "avg"), a)
            if train:
                h = _dropout_maps(jax.random.fold_in(key, b), h, rate)  # a prefix of the max-size draw
            return jnp.pad(h, ((0, 0), (0, 0), (0, 0), (0, cfg.max_filters - cout))), new

        if cfg.branching:  # one branch per (input bucket, output bucket, kernel size)
            cins = (h.shape[-1],) if b == 0 else buckets
            cases = [(ci, co, k) for ci in cins for co in buckets for k in kernels]
            cin_i = 0 if b == 0 else _first_at_least(buckets, filters[b - 1])
            index = (cin_i * len(buckets) + _first_at_least(buckets, filters[b])) * len(kernels) + \
                _first_at_least(kernels, kernel[b] | 1)
            block = lambda h, cases=cases, index=index, branch=branch: lax.switch(
                index, [lambda h, c=c: branch(h, *c) for c in cases], h)

        if cfg.branching and b > 0:  # slots after the member's last block are skipped
            h, new_stats[f"bn_{b}"] = lax.cond(
                b < n, block, lambda h, b=b, s=s: (_pooled_zeros(h), s), h)
        else:
            h, new_stats[f"bn_{b}"] = block(h)
        flat = h.reshape(batch, -1)
        block_out.append(flat)
        if not cfg.branching:
            flat = jnp.pad(flat, ((0, 0), (0, P - flat.shape[1])))
            head_in_BxP = flat if b == 0 else jnp.where(n - 1 == b, flat, head_in_BxP)
    d = params["dense"]
    if cfg.branching:  # the head reads the last block's map, at its bucket, through its own rows of the kernel
        def head(outs, b, c):
            hb, wb = _spatial(cfg, b + 1)
            x = outs[b].reshape(batch, hb, wb, cfg.max_filters)[..., :c].reshape(batch, -1)
            rows = d["kernel"][: hb * wb * cfg.max_filters].reshape(hb, wb, cfg.max_filters, -1)[:, :, :c]
            return x @ rows.reshape(hb * wb * c, -1)

        last = (n - 1) * len(buckets) + _first_at_least(buckets, filters[n - 1])
        z = lax.switch(last, [lambda outs, b=b, c=c: head(outs, b, c)
                              for b in range(cfg.max_blocks) for c in buckets], block_out) + d["bias"]
    else:
        z = head_in_BxP @ d["kernel"] + d["bias"]
    z, new_stats["bn_dense"] = _norm(z, params["bn_dense"], stats["bn_dense"], train, batch_norm, batch_norm, False)
    a = jnp.where(jnp.arange(cfg.max_dense) < dense, activate(acts_L[-1], z, names), 0.0)
    if train:
        a = dropout(jax.random.fold_in(key, _DENSE_DROPOUT_SLOT), a, rate)
    logits_BxC = a @ params["out"]["kernel"] + params["out"]["bias"]
    return logits_BxC, new_stats


# --------------------------------------------------------------------------
# Dense reference network of the real size
# --------------------------------------------------------------------------


def dense_cnn_params(variables: dict, arch_python: Mapping[str, Any], cfg: CNNConfig) -> dict:
    """Slices one member's real-size CNN out of its max-size variables.

    Works on any tree shaped like ``init_cnn``'s output (gradients too); host side.

    Args:
        variables: one member's ``{"params", "batch_stats"}`` (no S axis).
        arch_python: the member's architecture dict (see ``make_cnn_arch``).
        cfg: the max-size config.

    Returns:
        Dense variables for ``apply_dense_cnn``: ``conv_b`` kernels ``[k, k,
        cin, f]``, ``dense`` kernel ``[H_n*W_n*f_last, u]``, ``bn_*`` only
        with batch norm.

    Example:
        >>> cfg = CNNConfig((8, 8, 1), 2, max_blocks=2, max_filters=8, max_dense=16)
        >>> arch = dict(n_blocks=2, filters=[3, 5], kernel=[5, 3], dense_units=4)
        >>> v = init_cnn(jax.random.key(0), make_cnn_arch(arch, cfg), cfg)
        >>> dense_cnn_params(v, arch, cfg)["params"]["conv_1"]["kernel"].shape
        (3, 3, 3, 5)
    """
    _check_cfg(cfg)
    a = _normalize_arch(arch_python, cfg)
    p, s = variables["params"], variables["batch_stats"]
    params, stats = {}, {}
    cin, K = cfg.input_shape[2], cfg.max_kernel
    for b in range(a["n_blocks"]):
        f, k = a["filters"][b], a["kernel"][b]
        o = (K - k) // 2
        params[f"conv_{b}"] = {
            "kernel": p[f"conv_{b}"]["kernel"][o : o + k, o : o + k, :cin, :f],
            "bias": p[f"conv_{b}"]["bias"][:f],
        }
        if a["batch_norm"]:
            params[f"bn_{b}"] = {k_: v[:f] for k_, v in p[f"bn_{b}"].items()}
            stats[f"bn_{b}"] = {k_: v[:f] for k_, v in s[f"bn_{b}"].items()}
        cin = f
    hn, wn = _spatial(cfg, a["n_blocks"])
    u, F = a["dense_units"], cfg.max_filters
    kernel = p["dense"]["kernel"][: hn * wn * F].reshape(hn, wn, F, -1)[:, :, :cin, :u]
    params["dense"] = {"kernel": kernel.reshape(hn * wn * cin, u), "bias": p["dense"]["bias"][:u]}
    if a["batch_norm"]:
        params["bn_dense"] = {k_: v[:u] for k_, v in p["bn_dense"].items()}
        stats["bn_dense"] = {k_: v[:u] for k_, v in s["bn_dense"].items()}
    params["out"] = {"kernel": p["out"]["kernel"][:u], "bias": p["out"]["bias"]}
    return {"params": params, "batch_stats": stats}


def init_dense_cnn(
    key: jax.Array, arch_python: Mapping[str, Any], input_shape: Sequence[int], num_classes: int
) -> dict:
    """Initializes a CNN of the real size (for sequential baselines).

    Same distribution as ``init_cnn``'s active entries (fan-in scaled
    truncated normals, zero biases, unit batch-norm scales).

    Example:
        >>> arch = dict(n_blocks=2, filters=[4, 6], kernel=[5, 3], dense_units=8)
        >>> v = init_dense_cnn(jax.random.key(0), arch, (28, 28, 1), 10)
        >>> v["params"]["dense"]["kernel"].shape
        (294, 8)
    """
    a = _normalize_arch(arch_python)
    _check_cfg(CNNConfig(tuple(input_shape), num_classes, a["n_blocks"], max(a["filters"]),
                         max(a["kernel"]), a["dense_units"]))
    gain2_L = [INIT_GAIN2[x] for x in layer_activations(a)]  # each block's, then the dense layer's
    keys = jax.random.split(key, a["n_blocks"] + 2)

    def kernel_of(k, shape, auto_gain2, fan_in, fan_out):  # `init_cnn`'s draw of the real size
        std, uniform = init_std(a["init"], auto_gain2, fan_in, fan_out)
        return (unit_uniform(jax.random.fold_in(k, 1), shape) if uniform else unit_normal(k, shape, jnp.float32)) * std

    params, stats = {}, {}
    cin = int(input_shape[2])
    for b in range(a["n_blocks"]):
        f, k = a["filters"][b], a["kernel"][b]
        w = kernel_of(keys[b], (k, k, cin, f), gain2_L[b], k * k * cin, k * k * f)
        params[f"conv_{b}"] = {"kernel": w, "bias": jnp.zeros((f,), jnp.float32)}
        if a["batch_norm"]:
            params[f"bn_{b}"] = {"scale": jnp.ones((f,), jnp.float32), "bias": jnp.zeros((f,), jnp.float32)}
            stats[f"bn_{b}"] = {"mean": jnp.zeros((f,), jnp.float32), "var": jnp.ones((f,), jnp.float32)}
        cin = f
    hn, wn = _spatial(tuple(input_shape), a["n_blocks"])
    rows, u = hn * wn * cin, a["dense_units"]
    w = kernel_of(keys[-2], (rows, u), gain2_L[-1], rows, u)
    params["dense"] = {"kernel": w, "bias": jnp.zeros((u,), jnp.float32)}
    if a["batch_norm"]:
        params["bn_dense"] = {"scale": jnp.ones((u,), jnp.float32), "bias": jnp.zeros((u,), jnp.float32)}
        stats["bn_dense"] = {"mean": jnp.zeros((u,), jnp.float32), "var": jnp.ones((u,), jnp.float32)}
    w = kernel_of(keys[-1], (u, num_classes), OUT_GAIN2, u, num_classes)
    params["out"] = {"kernel": w, "bias": jnp.zeros((num_classes,), jnp.float32)}
    return {"params": params, "batch_stats": stats}


def apply_dense_cnn(
    variables: dict,
    x_BxHxWxC: jax.Array,
    arch_python: Mapping[str, Any],
    *,
    train: bool = False,
    key: jax.Array | None = None,
    return_batch_stats: bool = False,
    conv: str = "auto",
):
    """Runs the real-size CNN (no masks): the reference ``apply_cnn`` must equal.

    Args:
        variables: from ``dense_cnn_params`` or ``init_dense_cnn``.
        x_BxHxWxC: images ``[B, H, W, C]``.
        arch_python: architecture dict (static).
        train: batch statistics for batch norm, and dropout.
        key: PRNG key, required when ``train`` and dropout > 0.
        return_batch_stats: also return the updated running statistics.
        conv: convolution implementation (``CNNConfig.conv``).

    Returns:
        ``logits_BxC``, or ``(logits_BxC, new_batch_stats)``.

    Example:
        >>> arch = dict(n_blocks=1, filters=[4], dense_units=8)
        >>> v = init_dense_cnn(jax.random.key(0), arch, (8, 8, 1), 3)
        >>> apply_dense_cnn(v, jnp.ones((2, 8, 8, 1)), arch).shape
        (2, 3)
    """
    a = _normalize_arch(arch_python)
    if train and a["dropout"] > 0 and key is None:
        raise ValueError(f"apply_dense_cnn(train=True) with dropout={a['dropout']} needs a PRNG `key`")
    if x_BxHxWxC.ndim != 4:
        raise ValueError(f"x has shape {x_BxHxWxC.shape}, expected (B, H, W, C)")
    params, stats = variables["params"], variables["batch_stats"]
    acts = [ACTIVATIONS[x] for x in layer_activations(a)]  # each block's, then the dense layer's
    rate = jnp.asarray(a["dropout"], x_BxHxWxC.dtype)
    h, new_stats = x_BxHxWxC, {}

    def norm(z, name, maps):
        bn, s = params[name], stats[name]
        if train:
            fn = _bn_maps_train if maps else batch_norm_train
            z, mean, var = fn(z, bn["scale"], bn["bias"], s["mean"], s["var"])
            new_stats[name] = {"mean": mean, "var": var}
            return z
        new_stats[name] = s
        return batch_norm_eval(z, bn["scale"], bn["bias"], s["mean"], s["var"])

    for b in range(a["n_blocks"]):
        z = conv2d(h, params[f"conv_{b}"]["kernel"], params[f"conv_{b}"]["bias"], conv)
        if a["batch_norm"]:
            z = norm(z, f"bn_{b}", True)
        h = _pool(acts[b](z), a["pooling"])
        if train and a["dropout"] > 0:
            h = _dropout_maps(jax.random.fold_in(key, b), h, rate)
    h = h.reshape(h.shape[0], -1)
    z = h @ params["dense"]["kernel"] + params["dense"]["bias"]
    if a["batch_norm"]:
        z = norm(z, "bn_dense", False)
    h = acts[-1](z)
    if train and a["dropout"] > 0:
        h = dropout(jax.random.fold_in(key, _DENSE_DROPOUT_SLOT), h, rate)
    logits = h @ params["out"]["kernel"] + params["out"]["bias"]
    return (logits, new_stats) if return_batch_stats else logits


# --------------------------------------------------------------------------
# FLOP accounting
# --------------------------------------------------------------------------


def useful_flops_cnn(arch_python: Mapping[str, Any], input_shape: Sequence[int], num_classes: int) -> int:
    """Forward FLOPs per example of the member's REAL network (2 per multiply-add).

    Counts convolutions (at their input resolution, 'SAME') and matmuls; bias,
    activation, batch norm, pooling and dropout are O(activations) and left
    out. A training step costs about 3x this per example.

    Example:
        >>> useful_flops_cnn(dict(n_blocks=1, filters=[2], kernel=[3], dense_units=4), (4, 4, 1), 3)
        664
    """
    a = _normalize_arch(arch_python)
    h, w, cin = (int(d) for d in input_shape)
    total = 0
    for f, k in zip(a["filters"], a["kernel"]):
        total += 2 * h * w * k * k * cin * f
        h, w, cin = h // 2, w // 2, f
    u = a["dense_units"]
    return int(total + 2 * h * w * cin * u + 2 * u * num_classes)


def computed_flops_cnn(cfg: CNNConfig, arch_python: Mapping[str, Any] | None = None) -> int:
    """Forward FLOPs per example of the max-size CNN a member runs (see ``useful_flops_cnn``).

    Masked (``cfg.branching`` False): every slot runs its full
    ``max_kernel**2`` convolution with ``max_filters`` channels and the head
    matmul has ``H/2 * W/2 * max_filters`` rows, so every member costs this
    whatever its architecture. Branching (give the member's ``arch_python``):
    only its ``n_blocks`` slots run, each with its own ``k x k`` window and
    its filter bucket's channels, and the head reads its last block's rows.

    Example:
        >>> computed_flops_cnn(CNNConfig((4, 4, 1), 3, max_blocks=1, max_filters=2,
        ...                              max_kernel=3, max_dense=4))
        664
    """
    _check_cfg(cfg)
    h, w, cin = (int(d) for d in cfg.input_shape)
    K, F = cfg.max_kernel, cfg.max_filters
    if cfg.branching and arch_python is not None:
        a = _normalize_arch(arch_python, cfg)
        at_least = lambda values, x: values[int(_first_at_least(values, x))]  # what apply_cnn's switch picks
        widths = [at_least(filter_buckets(cfg), f) for f in a["filters"]]
        blocks, kernels = a["n_blocks"], [at_least(kernel_sizes(cfg), k | 1) for k in a["kernel"]]
    elif cfg.branching:
        raise ValueError("computed_flops_cnn(branching config) depends on the member: pass arch_python")
    else:
        blocks, kernels, widths = cfg.max_blocks, [K] * cfg.max_blocks, [F] * cfg.max_blocks
    total = 0
    for b in range(blocks):
        total += 2 * h * w * kernels[b] ** 2 * cin * widths[b]
        h, w, cin = h // 2, w // 2, widths[b]
    rows = h * w * cin if cfg.branching else _head_rows(cfg)
    return int(total + 2 * rows * cfg.max_dense + 2 * cfg.max_dense * cfg.num_classes)


# --------------------------------------------------------------------------
# Search space and decoding
# --------------------------------------------------------------------------


def _named(name: str, make: Callable[[], Any]) -> Any:
    """``make()``, its ValueError (bounds not numbers, lo == hi, ...) prefixed with the setting's `name`."""
    try:
        return make()
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith(name) else f"{name}: {e}") from None


def _check_names(names: Any, vocabulary: Sequence[str], what: str) -> None:
    """A ValueError naming `what` unless `names` is a list of names from `vocabulary`."""
    try:  # a bare string would become one choice per letter
        ok = not isinstance(names, str) and all(isinstance(a, str) and a in vocabulary for a in names)
    except TypeError:  # not a list at all
        ok = False
    if not ok:
        raise ValueError(f"{what} must be a list of names from {list(vocabulary)}, got {names!r}")


def _odd_kernels(kernels: Any) -> tuple[int, ...]:
    """`cnn_space`'s kernel sizes as a tuple of ints; a ValueError unless they are odd integers >= 1."""
    try:  # int(3.5) would be a silent 3
        ok = not isinstance(kernels, str) and all(isinstance(k, (int, np.integer)) and not isinstance(k, bool)
                                                  for k in kernels)
    except TypeError:  # not a list at all
        ok = False
    if not ok:
        raise ValueError(f"kernels must be a list of odd integers >= 1, got {kernels!r}")
    kernels = tuple(int(k) for k in kernels)
    if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
        raise ValueError(f"kernels must be odd sizes >= 1, got {kernels!r}")
    return kernels


def _block_params(max_blocks: int, filters: tuple[int, int], kernels: tuple[int, ...]) -> dict[str, Any]:
    """``filters_k`` and ``kernel_k`` for blocks 1 .. max_blocks; block k's active when ``n_blocks >= k``."""
    params: dict[str, Any] = {}
    for k in range(1, max_blocks + 1):
        when = None if k == 1 else AtLeast("n_blocks", k)
        params[f"filters_{k}"] = _named("filters", lambda: Int(*range_arg(filters, "filters"), log=True, when=when))
        params[f"kernel_{k}"] = (Fixed(kernels[0]) if len(kernels) == 1
                                 else _named("kernels", lambda: Choice(kernels, when=when)))
    return params


def _activation_params(max_blocks: int, activations: Sequence[str], per_layer_activation: bool) -> dict[str, Any]:
    """One ``activation``, or ``activation_1`` .. ``activation_B`` (block k's active when ``n_blocks >= k``)
    and ``activation_dense``."""
    if not isinstance(per_layer_activation, (bool, np.bool_)):
        raise ValueError(f"per_layer_activation must be True or False, got {per_layer_activation!r}")
    if not per_layer_activation:
        return {"activation": _named("activations", lambda: Choice(activations))}
    params: dict[str, Any] = {}
    for k in range(1, max_blocks + 1):
        params[f"activation_{k}"] = _named("activations", lambda: Choice(
            activations, when=None if k == 1 else AtLeast("n_blocks", k)))
    params["activation_dense"] = _named("activations", lambda: Choice(activations))
    return params


def cnn_space(
    max_blocks: int = 3,
    filters: tuple[int, int] = (8, 64),
    kernels: Sequence[int] = (3, 5),
    dense_units: tuple[int, int] = (32, 256),
    activations: Sequence[str] = ("relu", "tanh", "sigmoid", "elu"),
    learning_rate: tuple[float, float] = optim.LEARNING_RATE_RANGE,
    optimizers: Sequence[str] | None = None,
    momentum: tuple[float, float] | None = None,
    weight_decay: tuple[float, float] | None = None,
    lr_decay: tuple[float, float] | None = None,
    dropout: tuple[float, float] | None = None,
    batch_norm: bool = False,
    poolings: Sequence[str] | None = None,
    beta2: tuple[float, float] | None = None,
    eps: tuple[float, float] | None = None,
    init_schemes: Sequence[str] | None = None,
    per_layer_activation: bool = False,
    batch_sizes: Sequence[int] | None = None,
) -> SearchSpace:
    """The convolutional search space ("cnn"), names as ``cnn_hparams`` reads them.

    Params, in order: ``n_blocks`` Int(1, max_blocks) (Fixed(1) if
    max_blocks == 1); ``filters_1`` .. ``filters_B`` Int(filters, log=True)
    and ``kernel_1`` .. ``kernel_B`` Choice(kernels) (Fixed if one kernel),
    block ``k``'s active when ``n_blocks >= k``; ``dense_units``
    Int(log=True); ``activation`` Choice (or, per layer, ``activation_1`` ..
    ``activation_B``, block ``k``'s active when ``n_blocks >= k``, and
    ``activation_dense`` for the dense layer); ``learning_rate`` Float(log=True);
    then, only when given: ``optimizer`` Choice, ``momentum`` Float,
    ``weight_decay`` Float(log=True), ``beta2`` Float, ``eps`` Float(log=True), ``lr_decay`` Float(log=True) (final lr /
    initial lr of the cosine schedule, as in ``mlp_space``), ``dropout`` Float, ``batch_norm``
    Choice([False, True]), ``pooling`` Choice(poolings) (of ``POOLINGS``), ``init``
    Choice(init_schemes) (of ``layers.INIT_SCHEMES``, as in ``mlp_space``), ``batch_size``
    Choice(batch_sizes) (as in ``mlp_space``).

    Args:
        max_blocks: most conv blocks (>= 1).
        filters: (lo, hi) channels per block, log scale.
        kernels: odd kernel sizes to choose from.
        dense_units: (lo, hi) dense-head width, log scale.
        activations: activation names (``models.ACTIVATION_NAMES``).
        per_layer_activation: tune one activation per block and one for the dense layer.
        learning_rate: (lo, hi), log scale.
        optimizers, momentum, weight_decay, lr_decay, dropout: optional extras.
        batch_norm: add a batch-norm on/off choice.
        poolings: e.g. ("max", "avg"); None keeps max pooling.
        beta2, eps: the Adam family's ``b2`` and ``eps`` ranges, as in ``mlp_space``.
        init_schemes: kernel initialization schemes to choose from (e.g. ``("auto", "he_uniform",
            "glorot_normal")``); None keeps "auto" (He for rectifiers, LeCun otherwise and for the output).
        batch_sizes: minibatch sizes to choose from, as in ``mlp_space`` (not with ``batch_norm``).

    Returns:
        The :class:`SearchSpace`.

    Example:
        >>> cnn_space(max_blocks=2).names
        ('n_blocks', 'filters_1', 'kernel_1', 'filters_2', 'kernel_2', 'dense_units', 'activation', 'learning_rate')
    """
    if isinstance(max_blocks, bool) or not isinstance(max_blocks, (int, np.integer)) or max_blocks < 1:
        raise ValueError(f"max_blocks must be an int >= 1, got {max_blocks!r}")
    kernels = _odd_kernels(kernels)
    _check_names(activations, ACTIVATION_NAMES, "activations")
    params: dict[str, Any] = {"n_blocks": Fixed(1) if max_blocks == 1 else Int(1, int(max_blocks))}
    params.update(_block_params(int(max_blocks), filters, kernels))
    params["dense_units"] = _named("dense_units", lambda: Int(*range_arg(dense_units, "dense_units"), log=True))
    params.update(_activation_params(int(max_blocks), activations, per_layer_activation))
    params["learning_rate"] = _named("learning_rate",
                                     lambda: real_range(learning_rate, "learning_rate", log=True))
    params.update(optim.optimizer_params(optimizers, momentum, weight_decay, beta2, eps))
    if lr_decay is not None:
        decay = _named("lr_decay", lambda: real_range(lr_decay, "lr_decay"))
        if not (0 < decay.lo and decay.hi <= 1):  # final / initial learning rate, on a log scale
            raise ValueError(f"lr_decay must lie in (0, 1], got ({decay.lo:g}, {decay.hi:g})")
    params.update(optim.lr_decay_param(lr_decay))
    if dropout is not None:
        params["dropout"] = _named("dropout", lambda: real_range(dropout, "dropout"))
        if not (0 <= params["dropout"].lo and params["dropout"].hi < 1):  # a rate of 1 drops every map
            raise ValueError(f"dropout must lie in [0, 1), got ({params['dropout'].lo:g}, {params['dropout'].hi:g})")
    if not isinstance(batch_norm, (bool, np.bool_)):  # "no" would switch it on
        raise ValueError(f"batch_norm must be True or False, got {batch_norm!r}")
    if batch_norm:
        params["batch_norm"] = Choice([False, True])
    if poolings is not None:
        _check_names(poolings, POOLINGS, "poolings")
        params["pooling"] = _named("poolings", lambda: Choice(poolings))
    if init_schemes is not None:
        _check_names(init_schemes, INIT_SCHEMES, "init_schemes")
        params["init"] = _named("init_schemes", lambda: Choice(init_schemes))
    params.update(optim.batch_size_param(batch_sizes, batch_norm))
    return SearchSpace(params)


def _hi(p) -> Any:
    if isinstance(p, Fixed):
        return p.value
    if isinstance(p, Choice):
        return max(p.options)
    return p.hi


def cnn_limits(space: SearchSpace) -> dict[str, Any]:
    """The max-size shape a CNN space asks for: ``CNNConfig`` keyword arguments.

    ``filter_buckets`` (powers of two from the smallest filter count the space
    allows, then ``max_filters``) and ``kernels`` (the space's kernel sizes)
    are what a branching member (``CNNConfig.branching``) runs at.

    Example:
        >>> cnn_limits(cnn_space(max_blocks=2, filters=(4, 32), kernels=(3,), activations=("relu",)))
        {'max_blocks': 2, 'max_filters': 32, 'max_kernel': 3, 'max_dense': 256, 'activations': ('relu',), \
'filter_buckets': (4, 8, 16, 32), 'kernels': (3,), 'inits': ('auto',)}
    """
    blocks, filters, kernel, dense = 1, 1, 1, 1
    lo_filters, kernels = None, set()
    for name, p in space.params.items():
        if name == "n_blocks":
            blocks = max(blocks, int(_hi(p)))
        elif name.startswith("filters_"):
            blocks = max(blocks, int(name.split("_")[1]))
            filters = max(filters, int(_hi(p)))
            lo = int(p.value if isinstance(p, Fixed) else min(p.options) if isinstance(p, Choice) else p.lo)
            lo_filters = lo if lo_filters is None else min(lo_filters, lo)
        elif name.startswith("kernel_"):
            blocks = max(blocks, int(name.split("_")[1]))
            kernel = max(kernel, int(_hi(p)))
            kernels |= {int(p.value)} if isinstance(p, Fixed) else {int(k) for k in p.options}
        elif name == "dense_units":
            dense = max(dense, int(_hi(p)))
    if "filters_1" not in space.names:
        filters = 64
    if "dense_units" not in space.names:
        dense = 256
    if not any(n.startswith("kernel_") for n in space.names):
        kernel = 5
    init = space.params.get("init")
    activations: dict = {}  # every activation parameter's options, in order
    for name, p in space.params.items():
        if name == "activation" or name.startswith("activation_"):
            activations.update(dict.fromkeys(p.options if isinstance(p, Choice) else (p.value,)))
    activations = tuple(activations) or ("relu",)
    inits = ("auto",) if init is None else tuple(init.options) if isinstance(init, Choice) else (init.value,)
    return {"max_blocks": blocks, "max_filters": filters, "max_kernel": kernel | 1, "max_dense": dense,
            "activations": activations, "filter_buckets": _pow2_buckets(lo_filters or 8, filters),
            "kernels": tuple(sorted({k | 1 for k in kernels})) if kernels else (), "inits": inits}


def cnn_hparams(space: SearchSpace, cfg: CNNConfig) -> Callable:
    """Returns ``hparams(position_D) -> (CNNArch, optim.OptHParams)``, traceable.

    Names follow :func:`cnn_space`. A name the space lacks takes its default:
    ``max_blocks`` blocks of ``max_filters`` channels and ``max_kernel``
    kernels, ``max_dense`` units, relu, max pooling, Adam, lr 1e-3, momentum 0.9, no weight decay, constant
    lr, no dropout, no batch norm. Block entries beyond ``n_blocks`` are
    decoded but ignored by the model. ``OptHParams.optimizer`` indexes the
    space's own optimizer options (``("adam",)`` when it has none), as
    ``optim.optimizer_names(space)``: build the optimizer with those names.

    Args:
        space: a CNN search space.
        cfg: the max-size config the space must fit in.

    Returns:
        The traceable decoding function (vmap it over the swarm).

    Example:
        >>> space = cnn_space(max_blocks=2, filters=(4, 16), dense_units=(8, 32))
        >>> cfg = CNNConfig((8, 8, 1), 10, **cnn_limits(space))
        >>> arch, hp = cnn_hparams(space, cfg)(jnp.full((space.num_dims,), 0.5))
        >>> arch.filters.shape
        (2,)

    Raises:
        ValueError: a name the family does not read (e.g. ``n_block``), a
            ``filters_k`` / ``kernel_k`` that ``n_blocks`` never reaches or without
            every ``filters_j`` / ``kernel_j`` (j < k), or a space that does not fit `cfg`.
    """
    known = ("n_blocks", "dense_units", "activation", "activation_dense", "learning_rate", "optimizer", "momentum",
             "weight_decay", "lr_decay", "dropout", "batch_norm", "pooling", "init", *optim.ADAM_HPARAMS,
             "batch_size")  # batch_size: the training loop's (`train.batch_config`), not the network's
    blocks: dict[str, dict[int, str]] = {"filters": {}, "kernel": {}, "activation": {}}  # prefix -> k -> name
    for name in space.names:
        prefix, _, k = name.partition("_")
        if prefix in blocks and k.isdigit() and k == str(int(k)) and int(k) >= 1:
            blocks[prefix][int(k)] = name
        elif name not in known:
            # A misspelt name would otherwise be tuned for nothing while its default trains.
            raise ValueError(f"unknown parameter {name!r} for the CNN family; it reads n_blocks, filters_1, "
                             f"kernel_1, activation_1, filters_2, ..., {', '.join(known[1:])}")
    n = space.params.get("n_blocks")
    if isinstance(n, Float) or isinstance(n, Choice) and not all(isinstance(o, (int, np.integer))
                                                                 and not isinstance(o, bool) for o in n.options):
        raise ValueError(f"n_blocks must be an Int, or a Choice or Fixed of integers, got {n!r}")
    reach = (cfg.max_blocks if n is None else int(n.hi) if isinstance(n, Int)
             else int(n.value) if isinstance(n, Fixed) else int(max(n.options)))
    for prefix, given in blocks.items():
        for k, name in sorted(given.items()):
            if k > reach:
                raise ValueError(f"{name} is never used: n_blocks reaches at most {reach} ({n!r})")
            missing = [f"{prefix}_{j}" for j in range(1, k) if j not in given]
            if missing:
                raise ValueError(f"{name} needs the blocks before it too; the space lacks {', '.join(missing)}")
    acts = blocks["activation"]
    if acts and "activation" in space.params:
        raise ValueError("a space has either one activation for every block or activation_1, activation_2, ...; "
                         "this one has both")
    _check_cfg(cfg)
    limits = cnn_limits(space)
    missing = [a for a in limits.pop("activations") if a not in tuple(cfg.activations)]
    if missing:
        raise ValueError(f"the space's activations {missing} are not in CNNConfig.activations {cfg.activations}")
    missing = [i for i in limits.pop("inits") if i not in cfg.inits]
    if missing:
        raise ValueError(f"the space's init schemes {missing} are not in CNNConfig.inits {cfg.inits}")
    limits.pop("filter_buckets")  # any buckets work: a block runs at the smallest one that holds it
    unlisted = sorted(set(limits.pop("kernels")) - set(kernel_sizes(cfg)))
    if cfg.branching and unlisted:
        raise ValueError(f"the space's kernel sizes {unlisted} are not in CNNConfig.kernels {kernel_sizes(cfg)}")
    for name, limit in limits.items():
        if limit > getattr(cfg, name):
            raise ValueError(f"the space needs {name}={limit} but the CNNConfig has {getattr(cfg, name)}")
    choices = ("activation", "activation_dense", "optimizer", "pooling", "batch_norm", "init", "batch_size",
               *acts.values())
    for name, p in space.params.items():
        if name.startswith("kernel_") and isinstance(p, Choice):
            bad = [o for o in p.options if int(o) % 2 == 0 or not 1 <= int(o) <= cfg.max_kernel]
            if bad:
                raise ValueError(f"{name} options {bad} must be odd and in 1..{cfg.max_kernel}")
        elif isinstance(p, Choice) and name not in choices:
            raise ValueError(f"{name} cannot be a Choice in a CNN space, got {p!r}")
        elif name in choices and isinstance(p, (Float, Int)):
            raise ValueError(f"{name} must be a Choice, got {p!r}")
    value = value_reader(space, {"activation": ACTIVATION_NAMES, "pooling": POOLINGS, "init": INIT_SCHEMES,
                                 "optimizer": optim.optimizer_names(space), "activation_dense": ACTIVATION_NAMES,
                                 **{name: ACTIVATION_NAMES for name in acts.values()}})
    relu = ACTIVATION_NAMES.index("relu")
    # Block k reads activation_k (a block the space leaves out: the one before it) or the activation;
    # the dense layer reads activation_dense, else the activation.
    block_act = {k: acts[max(j for j in acts if j <= k)] if acts else "activation"
                 for k in range(1, cfg.max_blocks + 1)}
    head_act = "activation_dense" if "activation_dense" in space.params else "activation"

    def hparams(position_D):
        v = space.decode(position_D)
        B = cfg.max_blocks
        arch = CNNArch(
            n_blocks=jnp.clip(value(v, "n_blocks", B), 1, B).astype(jnp.int32),
            filters=jnp.clip(jnp.stack([value(v, f"filters_{k + 1}", cfg.max_filters) for k in range(B)]),
                             1, cfg.max_filters).astype(jnp.int32),
            kernel=jnp.stack([value(v, f"kernel_{k + 1}", cfg.max_kernel) for k in range(B)]).astype(jnp.int32),
            pooling=jnp.asarray(value(v, "pooling", 0), jnp.int32),
            dense_units=jnp.clip(value(v, "dense_units", cfg.max_dense), 1, cfg.max_dense).astype(jnp.int32),
            activation=jnp.stack([jnp.asarray(value(v, name, relu), jnp.int32)
                                  for name in [block_act[k] for k in range(1, B + 1)] + [head_act]]),
            dropout=jnp.asarray(value(v, "dropout", 0.0), jnp.float32),
            batch_norm=jnp.asarray(value(v, "batch_norm", False), bool),
            init=jnp.asarray(value(v, "init", 0), jnp.int32),
        )
        return arch, optim.opt_hparams(value, v)

    return hparams


# --------------------------------------------------------------------------
# The family record's functions (models/__init__.py)
# --------------------------------------------------------------------------


def config(space: SearchSpace, in_features: int, num_classes: int, input_shape=None,
           branching: bool = False) -> CNNConfig:
    """The max-size `CNNConfig` of `space` on images of ``input_shape`` (flat rows of ``in_features``)."""
    if input_shape is None or int(np.prod(input_shape)) != in_features:
        raise ValueError(f"a CNN space needs images: input_shape (H, W, C) with H*W*C == {in_features}, "
                         f"got {input_shape!r}")
    return CNNConfig(tuple(int(d) for d in input_shape), num_classes, **cnn_limits(space), branching=branching)


decode = cnn_hparams


def init_dense_of(key, arch_python: Mapping[str, Any], cfg: CNNConfig) -> dict:
    """`init_dense_cnn` with the input shape and classes read from the config."""
    return init_dense_cnn(key, arch_python, cfg.input_shape, cfg.num_classes)


def apply_dense_of(variables, x_BxF, arch_python: Mapping[str, Any], cfg: CNNConfig, *, train: bool, key=None):
    """`apply_dense_cnn` on flat rows, returning ``(logits_BxC, batch_stats)``."""
    x = x_BxF.reshape(-1, *cfg.input_shape)
    return apply_dense_cnn(variables, x, arch_python, train=train, key=key, return_batch_stats=True)


# Calibration against XLA's memory_analysis of the masked CNN swarm on CPU,
# over 1-3 blocks, 8-64 filters, 3x3 / 5x5 kernels, 8x8x1 / 16x16x3 / 28x28x1
# images, batches 16-128 and S = 1-8, both convolution forms
# (bench/results/scaling_cpu.md). Training: XLA fuses each slot's conv output,
# batch norm, masked activation, both poolings and the dropout select, and
# keeps about 3.5 float32 values per element of every slot's conv map
# [B, H/2**b, W/2**b, max_filters], about 1 more per activation branch beyond
# the first (vmap evaluates them all), about 0.5 per element of each slot's
# padded head input and 2 per dense unit. Evaluation (forward only): the slots
# run one after another, so slot 0's map sets the peak, about 2 values per
# element. The "matmul" convolution also gathers each slot's K x K shifted
# copies: about 1.5 values per element of them, in training and evaluation.
_TRAIN_FLOATS_PER_MAP = 3.5
_TRAIN_FLOATS_PER_EXTRA_ACTIVATION = 1.0
_TRAIN_FLOATS_PER_HEAD = 0.5
_TRAIN_FLOATS_PER_DENSE = 2
_EVAL_FLOATS_PER_MAP = 2.0
_FLOATS_PER_IM2COL = 1.5
_F32 = 4


def memory_terms(cfg: CNNConfig, batch: int, eval_batch: int) -> MemoryTerms:
    """One masked CNN member's variables (shapes), minibatch activations and evaluation chunk, in bytes.

    Example:
        >>> cfg = CNNConfig((28, 28, 1), 10, max_blocks=2, max_filters=32, max_dense=128)
        >>> memory_terms(cfg, 64, 256).eval_chunk > 0
        True
    """
    _check_cfg(cfg)
    nb, F, U, C = cfg.max_blocks, cfg.max_filters, cfg.max_dense, cfg.num_classes
    H, W, channels = (int(d) for d in cfg.input_shape)
    f = H * W * channels
    arch = CNNArch(jnp.int32(nb), jnp.full((nb,), F, jnp.int32), jnp.full((nb,), cfg.max_kernel, jnp.int32),
                   jnp.int32(0), jnp.int32(U), jnp.int32(0), jnp.float32(0), jnp.bool_(False), jnp.int32(0))
    variables = jax.eval_shape(lambda k: init_cnn(k, arch, cfg), jax.random.key(0))
    maps = sum(math.prod(_spatial(cfg, k)) * F for k in range(nb))  # slot k's conv map, one row
    cols = 0  # slot k's K x K shifted copies of its input, one row (the "matmul" convolution only)
    if conv_impl(cfg.conv) == "matmul":
        K = cfg.max_kernel
        cols = sum(math.prod(_spatial(cfg, k)) * K * K * (channels if k == 0 else F) for k in range(nb))
    head = nb * _head_rows(cfg)  # every slot's padded head input, one row
    per_map = _TRAIN_FLOATS_PER_MAP + (len(cfg.activations) - 1) * _TRAIN_FLOATS_PER_EXTRA_ACTIVATION
    activations = int(_F32 * batch * (f + per_map * maps + _FLOATS_PER_IM2COL * cols
                                      + _TRAIN_FLOATS_PER_HEAD * head + _TRAIN_FLOATS_PER_DENSE * U + 4 * C))
    eval_chunk = int(_F32 * eval_batch * (_EVAL_FLOATS_PER_MAP * H * W * F + _FLOATS_PER_IM2COL * cols + 4 * C))
    return MemoryTerms(variables, activations, eval_chunk, f)
