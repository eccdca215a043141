"""Pieces every model family shares: activations, initializer gains, batch norm, dropout.

A member's activation is an index into ``ACTIVATION_NAMES``; ``activate``
picks it with ``lax.switch`` (under vmap every listed branch runs and one is
selected). Dropout draws its uniforms with the unit axis first, so with JAX's
partitionable Threefry a narrower draw is a prefix of a wider one and a masked
member drops exactly the units its dense network drops.

Example:
    >>> import jax.numpy as jnp
    >>> activate(jnp.int32(ACTIVATION_NAMES.index("tanh")), jnp.zeros(3), ("relu", "tanh")).tolist()
    [0.0, 0.0, 0.0]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_NAMES",
    "INIT_GAIN2",
    "OUT_GAIN2",
    "INIT_SCHEMES",
    "init_std",
    "uses_uniform",
    "unit_uniform",
    "BN_MOMENTUM",
    "BN_EPS",
    "MAX_DROPOUT",
    "unit_normal",
    "activate",
    "batch_norm_train",
    "batch_norm_eval",
    "dropout",
    "MemoryTerms",
]

# Registry of activations, in a fixed order: a member's activation is an index
# into it. Append new ones at the end so stored indices stay valid.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,  # negative slope 0.01
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # exact, as Keras
    "swish": jax.nn.swish,
}
ACTIVATION_NAMES: tuple[str, ...] = tuple(ACTIVATIONS)

# Variance gain of the fan-in initializer per activation: He (2) for the
# rectifier family (He et al. 2015), LeCun (1) for the saturating ones.
INIT_GAIN2: dict[str, float] = {
    "relu": 2.0,
    "tanh": 1.0,
    "sigmoid": 1.0,
    "elu": 2.0,
    "leaky_relu": 2.0,
    "gelu": 2.0,
    "swish": 2.0,
}
OUT_GAIN2 = 1.0  # LeCun for the linear output layer

BN_MOMENTUM = 0.99  # running-average momentum (Flax/Keras default)
BN_EPS = 1e-5
MAX_DROPOUT = 0.999  # traced rates are clipped to [0, MAX_DROPOUT]

# Unit-variance truncated normal on [-2, 2] (std of the truncated draw is
# 0.87962566103423978; the same constant jax's variance_scaling uses).
unit_normal = jax.nn.initializers.truncated_normal(stddev=1.0 / 0.87962566103423978)

# Kernel initialization schemes a member may use (an index into this tuple; append new ones at the end).
# "auto" is the per-activation default above (He for rectifiers, LeCun for saturating ones and the output
# layer); the others are `jax.nn.initializers.variance_scaling` (scale, mode, distribution) applied to every
# layer, output included, as Keras applies a Dense layer's kernel_initializer:
#   he: (2, fan_in)   glorot: (1, fan_avg)   lecun: (1, fan_in);   normal: truncated normal, uniform: uniform.
INIT_SCHEMES: tuple[str, ...] = ("auto", "he_normal", "he_uniform", "glorot_normal", "glorot_uniform",
                                 "lecun_normal", "lecun_uniform")
_SCHEME_GAIN2 = np.asarray([np.nan, 2, 2, 1, 1, 1, 1], np.float32)  # "auto": the activation's gain
_SCHEME_FAN_AVG = np.asarray([False, False, False, True, True, False, False])
_SCHEME_UNIFORM = np.asarray([False, False, True, False, True, False, True])


def unit_uniform(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Unit-variance uniform draws on [-sqrt(3), sqrt(3)]."""
    return jax.random.uniform(key, shape, dtype, -np.sqrt(3.0), np.sqrt(3.0))


def uses_uniform(schemes) -> bool:
    """Whether any of `schemes` (names) draws uniforms (a member program then draws both kinds)."""
    return any(_SCHEME_UNIFORM[INIT_SCHEMES.index(n)] for n in schemes)


def init_std(scheme, auto_gain2, fan_in, fan_out):
    """``(std, uniform)`` of a kernel under `scheme`: a name (host floats, in float64) or an
    index into `INIT_SCHEMES` (traced arrays).

    The kernel is ``std`` times a unit-variance draw: `unit_normal`, or
    `unit_uniform` where ``uniform``. ``auto_gain2`` is the variance gain
    "auto" uses (`INIT_GAIN2` of the activation, `OUT_GAIN2` for the output).

    Example:
        >>> init_std("glorot_uniform", 2.0, 3, 5)
        (0.5, True)
        >>> std, uniform = init_std(INIT_SCHEMES.index("he_normal"), 1.0, jnp.float32(8), jnp.float32(4))
        >>> float(std), bool(uniform)
        (0.5, False)
    """
    if isinstance(scheme, str):
        i = INIT_SCHEMES.index(scheme)
        gain2 = auto_gain2 if i == 0 else float(_SCHEME_GAIN2[i])
        fan = (fan_in + fan_out) / 2 if _SCHEME_FAN_AVG[i] else fan_in
        return float(np.sqrt(gain2 / fan)), bool(_SCHEME_UNIFORM[i])
    i = jnp.clip(jnp.asarray(scheme, jnp.int32), 0, len(INIT_SCHEMES) - 1)
    gain2 = jnp.where(i == 0, auto_gain2, jnp.asarray(_SCHEME_GAIN2)[i])
    fan = jnp.where(jnp.asarray(_SCHEME_FAN_AVG)[i], (fan_in + fan_out) / 2, fan_in)
    return jnp.sqrt(gain2 / fan), jnp.asarray(_SCHEME_UNIFORM)[i]


def activate(index: jax.Array, z: jax.Array, names: tuple[str, ...] = ACTIVATION_NAMES) -> jax.Array:
    """Applies ``ACTIVATIONS[ACTIVATION_NAMES[index]]``, choosing among ``names`` only.

    An index outside ``names`` falls back to ``names[0]``.

    Example:
        >>> activate(jnp.int32(0), jnp.array([-1.0, 2.0])).tolist()
        [0.0, 2.0]
    """
    # lax.switch runs one branch for an unbatched index; under vmap it becomes a
    # select that evaluates every branch in `names`, so list only those used.
    fns = [ACTIVATIONS[n] for n in names]
    if len(fns) == 1:
        return fns[0](z)
    to_local = np.zeros(len(ACTIVATION_NAMES), np.int32)  # unlisted -> first listed
    for i, n in enumerate(names):
        to_local[ACTIVATION_NAMES.index(n)] = i
    local = jnp.asarray(to_local)[jnp.clip(index, 0, len(ACTIVATION_NAMES) - 1)]
    return lax.switch(local, fns, z)


def batch_norm_train(z_BxU, scale_U, bias_U, mean_U, var_U, axis: int = 0):
    """Batch norm with batch statistics over `axis`; returns ``(output, new_mean, new_var)``.

    ``scale``/``bias`` broadcast against ``z``; ``mean``/``var`` have ``z``'s
    shape without `axis` (the default: ``z`` is ``[B, U]``, the others ``[U]``).
    """
    batch_mean = jnp.mean(z_BxU, axis=axis, keepdims=True)
    batch_var = jnp.mean(jnp.square(z_BxU - batch_mean), axis=axis, keepdims=True)  # biased, as Flax
    y = (z_BxU - batch_mean) * lax.rsqrt(batch_var + BN_EPS) * scale_U + bias_U
    new_mean = BN_MOMENTUM * mean_U + (1.0 - BN_MOMENTUM) * jnp.squeeze(batch_mean, axis)
    new_var = BN_MOMENTUM * var_U + (1.0 - BN_MOMENTUM) * jnp.squeeze(batch_var, axis)
    return y, new_mean, new_var


def batch_norm_eval(z_BxU, scale_U, bias_U, mean_U, var_U):
    """Batch norm with the running statistics (all four broadcast against ``z``)."""
    return (z_BxU - mean_U) * lax.rsqrt(var_U + BN_EPS) * scale_U + bias_U


def dropout(key, h_BxU, rate):
    """Inverted dropout; uniforms drawn as ``[U, B]`` so narrower draws are prefixes."""
    u_UxB = jax.random.uniform(key, (h_BxU.shape[1], h_BxU.shape[0]), h_BxU.dtype)
    keep_BxU = u_UxB.T >= rate
    return jnp.where(keep_BxU, h_BxU / (1.0 - rate), 0.0)


class MemoryTerms(NamedTuple):
    """One member's memory, before anything is compiled (see `execute.estimate_memory`)."""

    variables: Any  # jax.ShapeDtypeStruct tree of the max-size {"params", "batch_stats"}
    activations: int  # bytes of one minibatch forward + backward
    eval_chunk: int  # bytes of one evaluation chunk's forward pass
    in_features: int  # F, width of one flat input row
