"""Array operations the networks share, written the way XLA:CPU runs fast inside a training loop.

Every training step runs inside `lax.scan`, and XLA:CPU runs a convolution there several times
slower than outside it (bench/results/cnn_bench.md; a Flax `nn.Conv` CNN's epoch took 21.9 s in a
scan against 3.6 s as a Python loop of jitted steps, bench/NOTES.md). `conv2d` is the convolution
as matmuls on CPU (XLA's elsewhere), `pool2x2` the pooling as a reshape: the built-in CNN and the
CNN preset (`task.CNN`) both use them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["CONV_IMPLS", "IM2COL_MAX_COLUMNS", "conv_impl", "conv2d", "pool2x2"]

_DN = ("NHWC", "HWIO", "NHWC")
CONV_IMPLS: tuple[str, ...] = ("auto", "xla", "matmul")
IM2COL_MAX_COLUMNS = 512  # above this K*K*C, "matmul" convolutions gather one kernel row at a time


def conv_impl(conv: str) -> str:
    """Resolves ``CNNConfig.conv``: "auto" is "matmul" on CPU and "xla" elsewhere."""
    if conv not in CONV_IMPLS:
        raise ValueError(f"conv must be one of {CONV_IMPLS}, got {conv!r}")
    if conv == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "xla"
    return conv


def conv2d(h_BxHxWxC, kernel_KxKxCxF, bias_F, impl: str = "auto"):
    """Stride-1 'SAME' convolution plus bias, as XLA's convolution or as matmuls.

    "matmul" gathers the K x K shifted copies of the padded input (all of
    them, or one kernel row at a time when ``K * C`` is large, to bound the
    copy) and multiplies them by the reshaped kernel. Same function.
    """
    # XLA:CPU runs a convolution inside a loop (every training step is inside lax.scan) far
    # slower than outside it; its matmul form does not (bench/results/cnn_bench.md).
    if conv_impl(impl) == "xla":
        return lax.conv_general_dilated(h_BxHxWxC, kernel_KxKxCxF, (1, 1), "SAME", dimension_numbers=_DN) + bias_F
    k, _, c, f = kernel_KxKxCxF.shape
    b, h, w, _ = h_BxHxWxC.shape
    p = k // 2
    x = jnp.pad(h_BxHxWxC, ((0, 0), (p, p), (p, p), (0, 0)))

    def rows(i0, i1):  # kernel rows i0..i1-1: [B*H*W, (i1-i0)*K*C] @ [(i1-i0)*K*C, F]
        cols = jnp.concatenate([x[:, i : i + h, j : j + w, :] for i in range(i0, i1) for j in range(k)], axis=-1)
        return cols.reshape(b * h * w, -1) @ kernel_KxKxCxF[i0:i1].reshape(-1, f)

    out = rows(0, k) if k * k * c <= IM2COL_MAX_COLUMNS else sum(rows(i, i + 1) for i in range(k))
    return out.reshape(b, h, w, f) + bias_F


def pool2x2(h_BxHxWxF, kind: str = "max"):
    """2x2 pooling of stride 2, 'VALID' (an odd last row or column dropped), ``kind`` "max" or "avg", as a
    reshape and a reduction."""
    b, h, w, f = h_BxHxWxF.shape
    ho, wo = h // 2, w // 2
    windows = h_BxHxWxF[:, : 2 * ho, : 2 * wo, :].reshape(b, ho, 2, wo, 2, f)
    return windows.max(axis=(2, 4)) if kind == "max" else windows.mean(axis=(2, 4))
