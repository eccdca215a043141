"""Initial designs: where the swarm starts in the unit box ``[0, 1)^D``.

Three designs, all ``(key, n, d) -> f32[n, d]``, deterministic in ``key``:

* :func:`uniform`: independent uniform points (``jax.random.uniform``).
* :func:`sobol`: a scrambled Sobol' sequence (low discrepancy).
* :func:`maximin_lhs`: a Latin hypercube whose minimum pairwise distance is
  made large, the "Maximin Latin Hypercube" start of the original study
  (Optunity's default initialization).

Sobol and LHS are built on the host with ``scipy.stats.qmc`` from a numpy
generator seeded by bits drawn from ``key``; they return jnp float32 arrays but
are not jit-able (they run once per study, before any compiled program).

Example:
    >>> import jax
    >>> x = initial_design(jax.random.key(0), "lhs", 8, 3)
    >>> x.shape, x.dtype
    ((8, 3), dtype('float32'))
"""

from __future__ import annotations

import numbers
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial.distance import pdist
from scipy.stats import qmc

__all__ = ["uniform", "sobol", "maximin_lhs", "lhs_to_float32", "DESIGNS", "MAXIMIN_MAX_POINTS", "initial_design"]

# Above this many points a maximin LHS is a plain random LHS: choosing among candidates and the
# swaps need all pairwise distances, O(n^2) memory (a swarm of 10^7 would ask for ~364 TiB).
MAXIMIN_MAX_POINTS = 4096

# Largest float32 below 1: designs live in [0, 1) and a float64 point such as
# 1 - 2**-30 (Sobol) would otherwise round up to 1.0 in float32.
_BELOW_ONE = np.nextafter(np.float32(1.0), np.float32(0.0))


def _check_sizes(n, d) -> tuple[int, int]:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"number of points n must be an integer >= 1, got {n!r}")
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0:
        raise ValueError(f"dimension d must be an integer >= 0, got {d!r}")
    return int(n), int(d)


def _rng_from_key(key: jax.Array) -> np.random.Generator:
    """A numpy generator seeded by 64 bits drawn from ``key`` (typed or raw key)."""
    hi, lo = (int(b) for b in np.asarray(jax.random.bits(key, (2,), jnp.uint32)))
    return np.random.default_rng((hi << 32) | lo)


def _to_f32(x_NxD: np.ndarray) -> jax.Array:
    return jnp.asarray(np.minimum(x_NxD.astype(np.float32), _BELOW_ONE))


def uniform(key: jax.Array, n: int, d: int) -> jax.Array:
    """Independent uniform points.

    Args:
        key: PRNG key.
        n: number of points (>= 1).
        d: dimension (>= 0).

    Returns:
        f32[n, d] in ``[0, 1)``.

    Example:
        >>> uniform(jax.random.key(0), 4, 2).shape
        (4, 2)
    """
    n, d = _check_sizes(n, d)
    return jax.random.uniform(key, (n, d), jnp.float32)


def sobol(key: jax.Array, n: int, d: int, skip: int = 0) -> jax.Array:
    """``n`` points of a scrambled Sobol' sequence (Owen scrambling), from point ``skip`` on.

    Uses ``scipy.stats.qmc.Sobol(d, scramble=True)`` seeded from ``key``. For
    ``n`` a power of two the points form a fully balanced (t, m, d)-net; for
    other ``n`` the prefix loses exact balance but keeps a much lower discrepancy
    than uniform points, which is what a swarm start needs, so scipy's warning
    about balance is silenced (that one warning only). Swarm sizes are rarely
    powers of two, and padding to one would change the swarm size.

    Args:
        key: PRNG key (drives the scrambling).
        n: number of points (>= 1).
        d: dimension (0 <= d <= 21201).
        skip: points of the sequence to pass over first (>= 0): batches ``skip = 0, n, 2n, ...``
            with one key are consecutive parts of one sequence.

    Returns:
        f32[n, d] in ``[0, 1)``.

    Example:
        >>> sobol(jax.random.key(0), 6, 3).shape
        (6, 3)
        >>> bool(np.all(sobol(jax.random.key(0), 4, 2, skip=4) == sobol(jax.random.key(0), 8, 2)[4:]))
        True
    """
    n, d = _check_sizes(n, d)
    if isinstance(skip, bool) or not isinstance(skip, numbers.Integral) or skip < 0:
        raise ValueError(f"skip must be an integer >= 0, got {skip!r}")
    if d == 0:
        return jnp.zeros((n, 0), jnp.float32)
    engine = qmc.Sobol(d, scramble=True, rng=_rng_from_key(key))
    if skip:  # scipy's fast_forward(0) fails
        engine.fast_forward(int(skip))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*balance properties of Sobol", category=UserWarning)
        x = engine.random(n)
    return _to_f32(x)


def _lhs(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """One random Latin hypercube, float64[n, d]: a random point in each stratum."""
    return qmc.LatinHypercube(d, scramble=True, rng=rng).random(n)


def _improve_maximin(x: np.ndarray, rng: np.random.Generator, iterations: int) -> np.ndarray:
    """Greedy maximin improvement by swaps within a column (keeps the LHS property).

    Each step takes the closest pair of points, picks one of them (``a``), a
    random other point ``b`` and a random column, and swaps the two points'
    values in that column. The swap is kept only if the minimum pairwise
    distance of the whole design strictly increases, so the result is never
    worse than the input. A rejected proposal costs O(n d) (the new distances
    of ``a`` and ``b``); an accepted one O(n^2). A simple form of the
    exchange algorithms of Morris & Mitchell (1995) and Jin et al. (2005).
    """
    x = x.copy()
    n, d = x.shape
    if n < 3 or d == 0 or iterations <= 0:
        return x
    diff = x[:, None, :] - x[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)
    np.fill_diagonal(d2, np.inf)
    flat = int(np.argmin(d2))
    i, j = divmod(flat, n)
    m = d2[i, j]
    for _ in range(iterations):
        a = (i, j)[rng.integers(2)]
        b = int(rng.integers(n - 1))
        b += b >= a
        col = int(rng.integers(d))
        row_a, row_b = x[a].copy(), x[b].copy()
        row_a[col], row_b[col] = x[b, col], x[a, col]
        da = np.sum((x - row_a) ** 2, axis=1)
        db = np.sum((x - row_b) ** 2, axis=1)
        da[a] = db[b] = np.inf
        da[b] = db[a] = np.sum((row_a - row_b) ** 2)
        if min(da.min(), db.min()) <= m:
            continue
        # The pairs not involving a or b keep their distances: any of them at m
        # (a tie with the closest pair) would keep the minimum at m.
        saved_rows = d2[[a, b]].copy()
        d2[[a, b], :] = np.inf
        d2[:, [a, b]] = np.inf
        rest = d2.min()
        d2[[a, b], :] = saved_rows
        d2[:, a], d2[:, b] = saved_rows[0], saved_rows[1]
        if rest <= m:
            continue
        x[a], x[b] = row_a, row_b
        d2[a, :] = d2[:, a] = da
        d2[b, :] = d2[:, b] = db
        d2[a, a] = d2[b, b] = np.inf
        flat = int(np.argmin(d2))
        i, j = divmod(flat, n)
        m = d2[i, j]
    return x


def lhs_to_float32(x: np.ndarray) -> jax.Array:
    """float32 copy of an LHS that stays an LHS: a value that float32 rounding
    pushed out of its stratum ``[k/n, (k+1)/n)`` moves to the stratum's centre."""
    n = x.shape[0]
    k = np.floor(x * n)
    y = np.minimum(x.astype(np.float32), _BELOW_ONE)
    moved = np.floor(y.astype(np.float64) * n) != k
    y[moved] = ((k[moved] + 0.5) / n).astype(np.float32)
    return jnp.asarray(y)


def maximin_lhs(key: jax.Array, n: int, d: int, candidates: int = 16,
                iterations: int | None = None) -> jax.Array:
    """A maximin Latin hypercube: stratified and with well-separated points.

    What is done: draw ``candidates`` random Latin hypercubes
    (``scipy.stats.qmc.LatinHypercube``, a random point inside each of the ``n``
    strata of every column), keep the one with the largest minimum pairwise
    Euclidean distance, then improve it by ``iterations`` proposed swaps of
    column values between the closest point and a random other point, each
    kept only if the minimum distance strictly grows. Swaps permute a column,
    so every column keeps exactly one point in each stratum ``[k/n, (k+1)/n)``.
    The first candidate is the plain random LHS drawn from the same key, so the
    result's minimum distance is never below it.

    Args:
        key: PRNG key.
        n: number of points (>= 1).
        d: dimension (>= 0).
        candidates: random LHS designs to choose from (>= 1).
        iterations: swap proposals after the choice; default ``20 * n``
            (0 = best candidate only).

    Beyond `MAXIMIN_MAX_POINTS` points the design is one random LHS (a
    warning says so): the maximin search needs all pairwise distances.

    Returns:
        f32[n, d] in ``[0, 1)``; each column has one point in each of n strata.

    Example:
        >>> x = maximin_lhs(jax.random.key(0), 10, 2)
        >>> sorted((np.asarray(x[:, 0]) * 10).astype(int).tolist()) == list(range(10))
        True
    """
    n, d = _check_sizes(n, d)
    if isinstance(candidates, bool) or not isinstance(candidates, numbers.Integral) or candidates < 1:
        raise ValueError(f"candidates must be an integer >= 1, got {candidates!r}")
    if iterations is None:
        iterations = 20 * n
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    if d == 0:
        return jnp.zeros((n, 0), jnp.float32)
    rng = _rng_from_key(key)
    if n > MAXIMIN_MAX_POINTS:
        warnings.warn(f"maximin_lhs: {n} points > {MAXIMIN_MAX_POINTS}: using one random Latin hypercube "
                      "(the maximin search needs O(n^2) memory)", stacklevel=2)
        return lhs_to_float32(_lhs(rng, n, d))
    best, best_min = None, -np.inf
    for _ in range(int(candidates)):
        x = _lhs(rng, n, d)
        score = pdist(x).min() if n > 1 else np.inf
        if score > best_min:
            best, best_min = x, score
    best = _improve_maximin(best, rng, int(iterations))
    return lhs_to_float32(best)


DESIGNS: dict[str, Callable[..., jax.Array]] = {
    "uniform": uniform,
    "sobol": sobol,
    "lhs": maximin_lhs,
}


def initial_design(key: jax.Array, name: str, n: int, d: int, **kwargs) -> jax.Array:
    """Dispatches to a design of :data:`DESIGNS` by name.

    Args:
        key: PRNG key.
        name: "uniform", "sobol" or "lhs".
        n: number of points.
        d: dimension.
        **kwargs: passed to the sampler (e.g. ``candidates`` for "lhs").

    Returns:
        f32[n, d] in ``[0, 1)``.

    Raises:
        ValueError: unknown name (the message lists the choices).

    Example:
        >>> initial_design(jax.random.key(1), "sobol", 5, 2).shape
        (5, 2)
    """
    try:
        sampler = DESIGNS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown initial design {name!r}; choose one of {sorted(DESIGNS)}") from None
    return sampler(key, n, d, **kwargs)
