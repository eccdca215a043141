"""Search-space specification: typed hyperparameters <-> points of the unit box.

PSO moves particles in the unit box ``[0, 1]^D``; a :class:`SearchSpace` says how
each coordinate becomes a typed hyperparameter. Decoding is pure ``jax.numpy``,
so it runs under ``jit`` and ``vmap`` over the swarm; encoding and the Python
view (:meth:`SearchSpace.to_python`) are host side, for reports and for seeding
a swarm with known configurations.

Parameter kinds and how one unit-box coordinate ``u`` decodes:

* :class:`Float` ``(lo, hi, log=False)``: ``lo + u (hi - lo)``, or
  ``exp(log lo + u (log hi - log lo))`` on a log scale (needs ``lo > 0``).
* :class:`Int` ``(lo, hi, log=False)``: the unit interval is cut into
  ``hi - lo + 1`` equal bins, one per integer, so uniform positions give every
  integer probability exactly ``1 / (hi - lo + 1)``. On a log scale the bins are
  equal in ``log`` over ``[lo - 0.5, hi + 0.5]`` (needs ``lo >= 1``): integer
  ``k`` gets probability proportional to ``log((k + 0.5) / (k - 0.5))``.
* :class:`Choice` ``(options)``: one coordinate, ``K`` equal bins, decoded to the
  option's index (an ``int32``); the model selects with the index.
* :class:`Fixed` ``(value)``: a constant; it takes no coordinate.

Any parameter but ``Fixed`` may carry ``when=``: a condition on the decoded
values of the parameters declared before it (for instance, the units of layer
``k`` exist only when ``n_layers >= k``). An inactive parameter keeps its
coordinate and still decodes (vmapped models need fixed shapes and ignore it
through masks); :meth:`SearchSpace.to_python` leaves it out.

Example:
    >>> import jax, jax.numpy as jnp
    >>> space = SearchSpace({
    ...     "n_layers": Int(1, 3),
    ...     "units_2": Int(16, 256, log=True, when=lambda v: v["n_layers"] >= 2),
    ...     "activation": Choice(["relu", "tanh"]),
    ...     "learning_rate": Float(1e-4, 1e-1, log=True),
    ... })
    >>> hp = jax.vmap(space.decode)(jnp.full((8, space.num_dims), 0.5))
    >>> hp["units_2"].shape
    (8,)
    >>> space.to_python(space.encode({"n_layers": 1, "activation": "tanh",
    ...                               "learning_rate": 0.01}))["activation"]
    'tanh'
"""

from __future__ import annotations

import math
import numbers
import types
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Param",
    "Float",
    "Int",
    "Choice",
    "Fixed",
    "SearchSpace",
    "AtLeast",
    "range_arg",
    "as_int",
    "value_reader",
]

# Every integer / option must own at least this share of the unit interval.
# float32 positions have a spacing of 2**-24 just below 1 and decode does a few
# float32 operations; 2**-20 leaves every bin many representable positions and
# keeps the decode error (an exp() on log scales) far below half a bin.
_MIN_BIN = 2.0**-20
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)  # smallest normal float32; XLA flushes subnormals to zero
_I32_MIN, _I32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)
# encode() accepts Float values this far (relative) outside the bounds and clips
# them: decoded values are float32, so float32(lo) may sit an ulp below lo.
_ENCODE_TOL = 1e-6

Condition = Callable[[Mapping[str, Any]], Any]


def _is_bool(x: Any) -> bool:
    return isinstance(x, (bool, np.bool_))


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not _is_bool(x)


def as_int(x: Any, what: str) -> int:
    """Returns ``x`` as a Python int, or raises ValueError if it is not integral."""
    if _is_bool(x):
        raise ValueError(f"{what} must be an integer, got bool {x!r}")
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real) and math.isfinite(float(x)) and float(x).is_integer():
        return int(x)
    raise ValueError(f"{what} must be an integer, got {x!r}")


def _check_when(when: Condition | None, kind: str) -> Condition | None:
    if when is not None and not callable(when):
        raise ValueError(f"{kind}: `when` must be a callable (dict of earlier decoded values -> bool) "
                         f"or None, got {when!r}")
    return when


def _when_repr(when: Condition | None) -> str:
    if when is None:
        return ""
    if isinstance(when, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return getattr(when, "__name__", "<condition>")  # "<lambda>" for lambdas
    return repr(when)


class Param:
    """Base class of the parameter kinds. Subclasses are immutable value objects.

    Attributes:
        when: optional condition on earlier decoded values; ``None`` = always active.
        has_dim: whether the parameter takes a coordinate of the unit box.
    """

    has_dim: bool = True
    when: Condition | None = None

    def decode(self, u: jax.Array) -> jax.Array:  # pragma: no cover - abstract
        """Maps a float32 scalar ``u`` in ``[0, 1]`` to the traced value."""
        raise NotImplementedError

    def encode(self, value: Any, name: str) -> float:  # pragma: no cover - abstract
        """Maps a Python value to a position in ``[0, 1]`` that decodes back to it."""
        raise NotImplementedError

    def to_python(self, x: Any) -> Any:  # pragma: no cover - abstract
        """Maps a decoded (concrete) value to a plain Python object."""
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        """One short human-readable line (no name, no condition)."""
        raise NotImplementedError

    def __setattr__(self, name, value):
        if getattr(self, "_frozen", False):
            raise AttributeError(f"{type(self).__name__} is immutable")
        object.__setattr__(self, name, value)

    def _freeze(self):
        object.__setattr__(self, "_frozen", True)


class Float(Param):
    """A real hyperparameter in ``[lo, hi]``, linear or log scale.

    Decoding maps ``u`` in ``[0, 1]`` linearly onto ``[lo, hi]`` (or onto
    ``[log lo, log hi]`` and exponentiates, for ``log=True``), in float32, then
    clips to the bounds so float32 rounding never leaves the interval. Uniform
    positions give a uniform (log-uniform) distribution, the usual prior for
    learning rates and weight decay. Precision: about ``6e-8 * (hi - lo)``
    absolute on a linear scale and ``6e-8 * log(hi / lo)`` relative on a log
    scale (one float32 ulp of ``u``). Different compiled programs (eager, jit,
    jit of vmap) may round differently by an ulp or two (XLA fuses ``a + u*b``
    into an FMA), so floats agree across programs to ~1e-6 relative, ints
    agree except for positions within an ulp of a bin edge.

    Args:
        lo: lower bound (finite; ``> 0`` when ``log``).
        hi: upper bound, ``> lo`` (for ``lo == hi`` use :class:`Fixed`).
        log: log scale.
        when: optional condition on earlier decoded values (see :class:`SearchSpace`).

    Example:
        >>> Float(1e-4, 1e-1, log=True).decode(jnp.float32(0.5))  # doctest: +SKIP
        Array(0.00316228, dtype=float32)
    """

    def __init__(self, lo: float, hi: float, log: bool = False, when: Condition | None = None):
        if not (_is_real(lo) and _is_real(hi)):
            raise ValueError(f"Float bounds must be real numbers, got lo={lo!r}, hi={hi!r}")
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi)) or max(abs(lo), abs(hi)) > _F32_MAX:
            raise ValueError(f"Float bounds must be finite float32 numbers, got lo={lo!r}, hi={hi!r}")
        if any(0.0 < abs(b) < _F32_TINY for b in (lo, hi)):
            raise ValueError(f"Float bounds must be 0 or at least {_F32_TINY:.3g} in magnitude (float32 "
                             f"subnormals decode as 0), got lo={lo!r}, hi={hi!r}")
        if lo > hi:
            raise ValueError(f"Float needs lo < hi, got lo={lo!r} > hi={hi!r}")
        if lo == hi:
            raise ValueError(f"Float needs lo < hi, got lo == hi == {lo!r}; use Fixed({lo!r}) for a constant")
        if log and lo <= 0:
            raise ValueError(f"Float with log=True needs lo > 0, got lo={lo!r}")
        if hi - lo > _F32_MAX:
            raise ValueError(f"Float range hi - lo = {hi - lo!r} overflows float32")
        self.lo, self.hi, self.log = lo, hi, bool(log)
        self.when = _check_when(when, "Float")
        self._freeze()

    def decode(self, u):
        u = jnp.asarray(u, jnp.float32)
        if self.log:
          # lo * exp(u log(hi/lo)) rather than exp(log lo + u ...): the exponent's
          # rounding error then scales with log(hi/lo), not with |log lo|.
            x = jnp.float32(self.lo) * jnp.exp(u * jnp.float32(math.log(self.hi / self.lo)))
            # exp(log(hi)) can miss float32(hi) by an ulp; keep the end points exact.
            x = jnp.where(u >= 1, jnp.float32(self.hi), jnp.where(u <= 0, jnp.float32(self.lo), x))
        else:
            x = jnp.float32(self.lo) + u * jnp.float32(self.hi - self.lo)
        return jnp.clip(x, jnp.float32(self.lo), jnp.float32(self.hi))

    def encode(self, value, name="value"):
        if not _is_real(value) or not math.isfinite(float(value)):
            raise ValueError(f"{name}: Float value must be a finite real number, got {value!r}")
        v = float(value)
        lo, hi = self.lo, self.hi
        tol_lo = _ENCODE_TOL * (abs(lo) if self.log else max(abs(lo), abs(hi)))
        tol_hi = _ENCODE_TOL * (abs(hi) if self.log else max(abs(lo), abs(hi)))
        if v < lo - tol_lo or v > hi + tol_hi:
            raise ValueError(f"{name}: value {value!r} is outside [{lo!r}, {hi!r}]")
        v = min(max(v, lo), hi)
        if self.log:
            return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (v - lo) / (hi - lo)

    def to_python(self, x):
        return min(max(float(x), self.lo), self.hi)

    def describe(self):
        return f"Float[{self.lo:g}, {self.hi:g}]" + (" log" if self.log else "")

    def __repr__(self):
        extra = (", log=True" if self.log else "") + (f", when={_when_repr(self.when)}" if self.when else "")
        return f"Float({self.lo!r}, {self.hi!r}{extra})"


class Int(Param):
    """An integer hyperparameter in ``[lo, hi]`` (both included), decoded as int32.

    Linear scale: the unit interval is cut into ``n = hi - lo + 1`` equal bins,
    ``k = lo + clip(floor(u * n), 0, n - 1)``. Every integer then has probability
    exactly ``1 / n`` under uniform positions (rounding ``lo + u (hi - lo)``
    instead would give the two end values half the probability of the others),
    and the clip makes ``u = 1`` decode to ``hi``, never ``hi + 1``.

    Log scale (``log=True``, needs ``lo >= 1``): the bins are equal in log space
    over ``[lo - 0.5, hi + 0.5]``: ``k = clip(round(exp(log(lo - .5) + u
    log((hi + .5) / (lo - .5)))), lo, hi)``. Every integer is reachable and has
    probability proportional to its log-width ``log((k + .5) / (k - .5))``, the
    discrete analogue of a log-uniform prior (as for layer widths).

    Decoded values never leave ``[lo, hi]`` for any ``u`` in ``[0, 1]``,
    float32 rounding at the edges included (and even for NaN positions). Each
    integer must own at least ``2**-20`` of the unit interval, which bounds the
    range (about a million values linear, ``hi`` about 8e4 on a log scale with
    ``lo = 1``); use :class:`Float` beyond that.

    Args:
        lo: lowest value (an integer, ``>= 1`` when ``log``).
        hi: highest value, ``>= lo``.
        log: log scale.
        when: optional condition on earlier decoded values.

    Example:
        >>> [int(Int(1, 3).decode(jnp.float32(u))) for u in (0.0, 0.5, 1.0)]  # doctest: +SKIP
        [1, 2, 3]
    """

    def __init__(self, lo: int, hi: int, log: bool = False, when: Condition | None = None):
        lo, hi = as_int(lo, "Int lo"), as_int(hi, "Int hi")
        if lo > hi:
            raise ValueError(f"Int needs lo <= hi, got lo={lo!r} > hi={hi!r}")
        if lo < _I32_MIN or hi > _I32_MAX:
            raise ValueError(f"Int bounds must fit int32, got lo={lo!r}, hi={hi!r}")
        if log and lo < 1:
            raise ValueError(f"Int with log=True needs lo >= 1, got lo={lo!r}")
        self.lo, self.hi, self.log = lo, hi, bool(log)
        self.n = hi - lo + 1
        if log:
            self._a, self._b = math.log(lo - 0.5), math.log(hi + 0.5)
            narrowest = math.log((hi + 0.5) / (hi - 0.5)) / (self._b - self._a)
        else:
            narrowest = 1.0 / self.n
        if narrowest < _MIN_BIN:
            raise ValueError(
                f"Int({lo}, {hi}, log={log}): the value {hi} would own only {narrowest:.2e} of the unit "
                f"interval (< 2**-20), too fine for float32 positions; use Float or a narrower range")
        self.when = _check_when(when, "Int")
        self._freeze()

    def decode(self, u):
        u = jnp.asarray(u, jnp.float32)
        if self.log:
            t = jnp.float32(self.lo - 0.5) * jnp.exp(u * jnp.float32(self._b - self._a))
            k = jnp.floor(t + jnp.float32(0.5)).astype(jnp.int32)
            return jnp.clip(k, self.lo, self.hi)
        # Clip the integer (not the float) so even NaN or float32 overshoot stays in range.
        idx = jnp.floor(u * jnp.float32(self.n)).astype(jnp.int32)
        return jnp.clip(idx, 0, self.n - 1) + jnp.int32(self.lo)

    def encode(self, value, name="value"):
        k = as_int(value, f"{name}: Int value")
        if not self.lo <= k <= self.hi:
            raise ValueError(f"{name}: value {value!r} is outside [{self.lo}, {self.hi}]")
        if self.log:  # centre of k's bin in log space
            centre = 0.5 * (math.log(k - 0.5) + math.log(k + 0.5))
            return (centre - self._a) / (self._b - self._a)
        return (k - self.lo + 0.5) / self.n

    def probabilities(self) -> np.ndarray:
        """Probability of each integer ``lo..hi`` under uniform positions (float64[n])."""
        if self.log:
            k = np.arange(self.lo, self.hi + 1, dtype=np.float64)
            return (np.log(k + 0.5) - np.log(k - 0.5)) / (self._b - self._a)
        return np.full(self.n, 1.0 / self.n)

    def to_python(self, x):
        return int(x)

    def describe(self):
        return f"Int[{self.lo}, {self.hi}]" + (" log" if self.log else "")

    def __repr__(self):
        extra = (", log=True" if self.log else "") + (f", when={_when_repr(self.when)}" if self.when else "")
        return f"Int({self.lo!r}, {self.hi!r}{extra})"


class Choice(Param):
    """A categorical hyperparameter, decoded to the int32 index of its option.

    Encoding: ONE coordinate, ``index = clip(floor(u * K), 0, K - 1)``, so every
    option has probability ``1 / K`` under uniform positions. One coordinate per
    categorical keeps ``D`` small, which matters for space-filling initial
    designs (Sobol, maximin LHS) and for PSO, whose search effort grows with
    ``D``; and a stratified design (LHS, Sobol) stratifies the options too, so
    every option gets its fair share of the initial swarm. The cost is an
    arbitrary order: a particle moves between "neighbouring" options (adjacent
    in ``options``) more easily than between distant ones. The alternative, one
    coordinate per option decoded by argmax (``K`` coordinates), has no order
    bias but adds ``K - 1`` dimensions per categorical, loses the stratification
    (a space-filling design in ``K`` coordinates is not an even spread over the
    options) and puts much of every velocity into directions that change
    nothing; it is not used for now. List similar options next to each other.

    Conditions see the index, not the option: compare with :meth:`index`, e.g.
    ``when=lambda v: v["optimizer"] == OPT.index("sgd")``.

    Args:
        options: non-empty sequence of distinct hashable values (str, bool, int,
            float). ``True`` and ``1`` count as different options.
        when: optional condition on earlier decoded values.

    Example:
        >>> act = Choice(["relu", "tanh", "elu"])
        >>> act.options[int(act.decode(jnp.float32(0.5)))]  # doctest: +SKIP
        'tanh'
    """

    def __init__(self, options: Sequence[Any], when: Condition | None = None):
        if isinstance(options, (str, bytes)) or not isinstance(options, (Sequence, np.ndarray)):
            raise ValueError(f"Choice options must be a sequence (list/tuple) of values, got {options!r}")
        options = tuple(o.item() if isinstance(o, np.generic) else o for o in options)
        if not options:
            raise ValueError("Choice needs at least one option, got an empty sequence")
        seen = set()
        for o in options:
            try:
                key = (_is_bool(o), o)
                hash(key)
            except TypeError:
                raise ValueError(f"Choice options must be hashable, got {o!r}") from None
            if key in seen:
                raise ValueError(f"Choice options must be distinct, {o!r} appears twice in {options!r}")
            seen.add(key)
        if len(options) > 1 / _MIN_BIN:
            raise ValueError(f"Choice has {len(options)} options; at most 2**20 are supported")
        self.options = options
        self.k = len(options)
        self.when = _check_when(when, "Choice")
        self._freeze()

    def index(self, option: Any) -> int:
        """Returns the index of ``option`` (ValueError if it is not an option)."""
        for i, o in enumerate(self.options):
            if _is_bool(o) == _is_bool(option):
                try:
                    if o == option:
                        return i
                except Exception:  # e.g. comparing with an array  # noqa: BLE001
                    pass
        raise ValueError(f"{option!r} is not one of the options {self.options!r}")

    def decode(self, u):
        u = jnp.asarray(u, jnp.float32)
        idx = jnp.floor(u * jnp.float32(self.k)).astype(jnp.int32)
        return jnp.clip(idx, 0, self.k - 1)

    def encode(self, value, name="value"):
        try:
            i = self.index(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not one of the options {self.options!r}") from None
        return (i + 0.5) / self.k

    def to_python(self, x):
        return self.options[int(x)]

    def describe(self):
        return f"Choice{list(self.options)!r}"

    def __repr__(self):
        extra = f", when={_when_repr(self.when)}" if self.when else ""
        return f"Choice({list(self.options)!r}{extra})"


class Fixed(Param):
    """A constant; takes no coordinate of the unit box and is always active.

    Numeric and bool values decode to a scalar array (bool, int32 or float32);
    other values (strings, None, ...) are left out of :meth:`SearchSpace.decode`
    and appear only in :meth:`SearchSpace.to_python`.

    Args:
        value: the constant.

    Example:
        >>> SearchSpace({"n_layers": Fixed(2), "lr": Float(1e-3, 1e-1)}).num_dims
        1
    """

    has_dim = False

    def __init__(self, value: Any):
        if isinstance(value, np.generic):
            value = value.item()
        self.value = value
        if _is_bool(value):
            self.dtype = jnp.bool_
        elif isinstance(value, numbers.Integral):
            if not _I32_MIN <= int(value) <= _I32_MAX:
                raise ValueError(f"Fixed int value {value!r} does not fit int32")
            self.dtype = jnp.int32
        elif isinstance(value, numbers.Real):
            if math.isfinite(float(value)) and abs(float(value)) > _F32_MAX:
                raise ValueError(f"Fixed float value {value!r} overflows float32")
            self.dtype = jnp.float32
        else:
            self.dtype = None
        self.when = None
        self._freeze()

    @property
    def is_numeric(self) -> bool:
        """Whether the value decodes to an array."""
        return self.dtype is not None

    def decode(self, u=None):
        return jnp.asarray(self.value, self.dtype)

    def encode(self, value, name="value"):
        raise NotImplementedError("Fixed takes no coordinate")

    def to_python(self, x=None):
        return self.value

    def describe(self):
        return f"Fixed({self.value!r})"

    def __repr__(self):
        return f"Fixed({self.value!r})"


class SearchSpace:
    """An ordered set of named hyperparameters and their unit-box encoding.

    Coordinates follow declaration order, skipping :class:`Fixed` params. A
    param's ``when`` condition is called with a dict holding the decoded
    ("traced form") values of the params declared BEFORE it: Float -> f32,
    Int -> i32, Choice -> i32 index, numeric Fixed -> its array. It must return a
    Python bool or a scalar jnp bool and must use jnp operations (``>=``, ``==``,
    ``&``, ``jnp.logical_and``), not Python ``and``/``if``, so it traces.
    Conditions are checked once at construction on the values decoded from the
    centre of the box, so one that names a param not declared before it fails
    immediately with a ValueError.

    Args:
        params: mapping from name (str) to :class:`Param`; insertion order kept.

    Attributes:
        names: every param name, in order.
        dim_names: names of the params that own a coordinate, in coordinate order.
        num_dims: ``D``, the number of coordinates.
        params: read-only mapping name -> Param.

    Example:
        >>> space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "act": Choice(["relu", "tanh"])})
        >>> space.dim_names, space.num_dims
        (('lr', 'act'), 2)
        >>> space.to_python(space.encode({"lr": 0.01, "act": "tanh"}))["act"]
        'tanh'
    """

    def __init__(self, params: Mapping[str, Param]):
        if not isinstance(params, Mapping):
            raise ValueError(f"SearchSpace needs a mapping name -> Param, got {type(params).__name__}")
        if not params:
            raise ValueError("SearchSpace needs at least one parameter, got an empty mapping")
        for name, p in params.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"parameter names must be non-empty str, got {name!r}")
            if not isinstance(p, Param):
                raise ValueError(f"parameter {name!r} must be a Float/Int/Choice/Fixed, got {p!r}")
        self.params: Mapping[str, Param] = types.MappingProxyType(dict(params))
        self.names: tuple[str, ...] = tuple(self.params)
        self.dim_names: tuple[str, ...] = tuple(n for n, p in self.params.items() if p.has_dim)
        self.num_dims: int = len(self.dim_names)
        self._decode_jit = None
        self._check_conditions()

      # -- conditions ---------------------------------------------------------

    def _call_when(self, name: str, earlier: Mapping[str, jax.Array]):
        """Evaluates ``name``'s condition on the values of the params before it."""
        p = self.params[name]
        try:
            r = p.when(earlier)
        except KeyError as e:
            missing = e.args[0] if e.args else "?"
            raise ValueError(
                f"condition of {name!r} references {missing!r}, which is not a numeric parameter "
                f"declared before {name!r} (available: {sorted(earlier)})") from None
        if _is_bool(r):
            return bool(r)
        return jnp.asarray(r).astype(jnp.bool_)

    def _check_conditions(self):
        u_D = jnp.full((self.num_dims,), 0.5, jnp.float32)
        decoded = self._decode_unchecked(u_D)
        earlier = {}
        for name, p in self.params.items():
            if p.when is not None:
                try:
                    r = self._call_when(name, earlier)
                except ValueError:
                    raise
                except Exception as e:  # noqa: BLE001 - report any failure as a bad spec
                    raise ValueError(f"condition of {name!r} failed on the default values {earlier}: "
                                     f"{type(e).__name__}: {e}") from e
                if np.shape(r) != ():
                    raise ValueError(f"condition of {name!r} must return a scalar bool, got shape {np.shape(r)}")
            if name in decoded:
                earlier[name] = decoded[name]

    def active(self, decoded: Mapping[str, jax.Array]) -> dict[str, Any]:
        """Evaluates every param's condition (traceable).

        Args:
            decoded: the output of :meth:`decode` (or a vmapped batch of it).

        Returns:
            dict name -> Python ``True`` for unconditional params, else the scalar jnp
            bool returned by the condition (batched if ``decoded`` is).

        Example:
            >>> space = SearchSpace({"n": Int(1, 2), "w": Int(1, 8, when=lambda v: v["n"] >= 2)})
            >>> bool(space.active(space.decode(jnp.array([0.1, 0.5])))["w"])
            False
        """
        out = {}
        earlier = {}
        for name, p in self.params.items():
            out[name] = True if p.when is None else self._call_when(name, earlier)
            if name in decoded:
                earlier[name] = decoded[name]
        return out

      # -- decode / encode ----------------------------------------------------

    def _decode_unchecked(self, u_D):
        out = {}
        i = 0
        for name, p in self.params.items():
            if p.has_dim:
                out[name] = p.decode(u_D[i])
                i += 1
            elif p.is_numeric:
                out[name] = p.decode()
        return out

    def decode(self, u_D) -> dict[str, jax.Array]:
        """Decodes one unit-box position into traced values (jit- and vmap-able).

        Positions outside ``[0, 1]`` are clipped first.

        Args:
            u_D: float array of shape ``(D,)``.

        Returns:
            dict name -> scalar array: Float f32 in ``[lo, hi]``, Int i32 in
            ``[lo, hi]``, Choice i32 index, numeric Fixed its value (non-numeric Fixed
            left out). Inactive params are decoded too.

        Example:
            >>> space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "n": Int(1, 3)})
            >>> hp = jax.jit(jax.vmap(space.decode))(jnp.zeros((4, 2)))
            >>> hp["n"].tolist()
            [1, 1, 1, 1]
        """
        u_D = jnp.asarray(u_D, jnp.float32)
        if u_D.shape != (self.num_dims,):
            raise ValueError(f"decode expects a position of shape ({self.num_dims},), got {u_D.shape}; "
                             "use jax.vmap(space.decode) for a batch")
        return self._decode_unchecked(jnp.clip(u_D, 0.0, 1.0))

    def encode(self, values: Mapping[str, Any]) -> np.ndarray:
        """Encodes typed values into a unit-box position that decodes back to them.

        Floats map to their exact position, Ints and Choices (given as the option,
        not the index) to the centre of their bin, so small perturbations do not
        change them. A missing param is allowed only when it is inactive (its
        coordinate is then 0.5) or Fixed. Float values within 1e-6 (relative) of a
        bound are clipped to it, so ``to_python`` output always re-encodes.

        Args:
            values: mapping name -> value.

        Returns:
            float32 array of shape ``(D,)`` in ``[0, 1]``.

        Raises:
            ValueError: unknown name, value out of range, unknown option, a Fixed
                param given a different value, or a missing active param.

        Example:
            >>> space = SearchSpace({"n": Int(1, 3), "act": Choice(["relu", "tanh"])})
            >>> space.encode({"n": 2, "act": "tanh"}).tolist()
            [0.5, 0.75]
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"encode needs a mapping name -> value, got {type(values).__name__}")
        unknown = [k for k in values if k not in self.params]
        if unknown:
            raise ValueError(f"unknown parameter name(s) {unknown}; known: {list(self.names)}")
        u = []
        earlier = {}
        for name, p in self.params.items():
            if not p.has_dim:
                if name in values and not _same_value(values[name], p.value):
                    raise ValueError(f"{name!r} is Fixed({p.value!r}), got {values[name]!r}")
                if p.is_numeric:
                    earlier[name] = p.decode()
                continue
            if name in values:
                ui = p.encode(values[name], name=repr(name))
            else:
                is_active = True if p.when is None else self._call_when(name, earlier)
                if bool(is_active):
                    raise ValueError(f"missing value for active parameter {name!r}")
                ui = 0.5
            ui = float(np.clip(np.float32(ui), 0.0, 1.0))
            u.append(ui)
            earlier[name] = p.decode(jnp.float32(ui))  # exact decoded value, as decode() sees it
        return np.asarray(u, dtype=np.float32).reshape(self.num_dims)

      # -- host-side view -----------------------------------------------------

    def _decode_and_active(self, u_D):
        decoded = self.decode(u_D)
        return decoded, self.active(decoded)

    def _host_fns(self):
      # Compiled lazily, once per space: reports call these every round.
        if self._decode_jit is None:
            self._decode_jit = (jax.jit(self._decode_and_active),
                                jax.jit(jax.vmap(self._decode_and_active)))
        return self._decode_jit

    def to_python(self, u_D) -> dict[str, Any]:
        """Decodes one position to plain Python values, for reports and JSON.

        Uses the same (jitted) :meth:`decode`, so it reports exactly what a model
        trained with. Float -> float, Int -> int, Choice -> the option itself,
        Fixed -> its value; inactive params are omitted.

        Args:
            u_D: numpy or jax array of shape ``(D,)``.

        Returns:
            dict name -> Python value, in declaration order.

        Example:
            >>> space = SearchSpace({"n": Int(1, 2), "w": Int(1, 8, when=lambda v: v["n"] >= 2)})
            >>> space.to_python(np.array([0.1, 0.99]))
            {'n': 1}
        """
        u_D = np.asarray(u_D, np.float32)
        if u_D.shape != (self.num_dims,):
            raise ValueError(f"to_python expects shape ({self.num_dims},), got {u_D.shape}; "
                             "use to_python_batch for (S, D)")
        decoded, active = jax.device_get(self._host_fns()[0](u_D))
        return self._python_from(decoded, active, None)

    def to_python_batch(self, u_SxD) -> list[dict[str, Any]]:
        """:meth:`to_python` for each row of an ``(S, D)`` array (one device call)."""
        u_SxD = np.asarray(u_SxD, np.float32)
        if u_SxD.ndim != 2 or u_SxD.shape[1] != self.num_dims:
            raise ValueError(f"to_python_batch expects shape (S, {self.num_dims}), got {u_SxD.shape}")
        decoded, active = jax.device_get(self._host_fns()[1](u_SxD))
        return [self._python_from(decoded, active, s) for s in range(u_SxD.shape[0])]

    def _python_from(self, decoded, active, s):
        out = {}
        for name, p in self.params.items():
            a = active[name]
            if s is not None and not isinstance(a, bool):
                a = np.asarray(a)[s]
            if not bool(a):
                continue
            if not p.has_dim:
                out[name] = p.value
            else:
                x = decoded[name] if s is None else np.asarray(decoded[name])[s]
                out[name] = p.to_python(x)
        return out

      # -- display ------------------------------------------------------------

    def describe(self) -> str:
        """A readable multi-line summary: name, kind/range, coordinate, condition."""
        width = max(len(n) for n in self.names)
        kind_width = max(len(p.describe()) for p in self.params.values())
        lines = [f"SearchSpace({len(self.names)} params, {self.num_dims} dims)"]
        d = 0
        for name, p in self.params.items():
            where = f"dim {d}" if p.has_dim else "fixed"
            d += p.has_dim
            cond = f"  when {_when_repr(p.when)}" if p.when is not None else ""
            lines.append(f"  {name:<{width}}  {p.describe():<{kind_width}}  {where}{cond}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.describe()

    def __getitem__(self, name: str) -> Param:
        return self.params[name]

    def __contains__(self, name: object) -> bool:
        return name in self.params

    def __len__(self) -> int:
        return len(self.names)

    def __reduce__(self):
        # Picklable (and so copyable, e.g. by sklearn's clone): rebuilt from its parameters; the
        # mapping proxy and the lazily compiled host functions are not state.
        return (SearchSpace, (dict(self.params),))


def _same_value(a: Any, b: Any) -> bool:
    if _is_bool(a) != _is_bool(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


class AtLeast:
    """Condition ``v[name] >= k`` with a readable repr, for presets' conditional params."""

    def __init__(self, name: str, k: int):
        self.name, self.k = name, k

    def __call__(self, v):
        return v[self.name] >= self.k

    def __repr__(self):
        return f"{self.name} >= {self.k}"


def range_arg(arg: Any, what: str) -> tuple[float, float]:
    """Checks a preset's ``(lo, hi)`` argument; one ValueError naming ``what`` otherwise."""
    try:
        lo, hi = arg
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a (lo, hi) pair, got {arg!r}") from None
    if _is_real(lo) and _is_real(hi) and lo > hi:
        raise ValueError(f"{what} range needs lo <= hi, got ({lo}, {hi})")
    return lo, hi



def real_range(arg: Any, what: str, log: bool = False) -> Param:
    """A preset's ``(lo, hi)`` real range as a Float, or as a Fixed value when ``lo == hi`` (a pinned value,
    e.g. ``--learning-rate 0.001 0.001`` on the command line)."""
    lo, hi = range_arg(arg, what)
    return Fixed(lo) if _is_real(lo) and _is_real(hi) and lo == hi else Float(lo, hi, log=log)


def value_reader(space: SearchSpace, vocabularies: Mapping[str, Sequence[Any]]) -> Callable:
    """Returns ``value(decoded, name, default)``: a hyperparameter as a model reads it (traceable).

    A ``Choice`` named in ``vocabularies`` reads as its option's index in that
    vocabulary, a ``Choice`` of bools as a bool, a ``Choice`` of numbers as the
    number; a ``Fixed`` value as a constant (its vocabulary index when named);
    a name the space lacks as ``default``.

    Args:
        space: the search space.
        vocabularies: name -> the model's tuple of option names for that parameter.

    Returns:
        ``value(decoded, name, default) -> array``, ``decoded`` from :meth:`SearchSpace.decode`.

    Example:
        >>> space = SearchSpace({"act": Choice(["tanh", "relu"]), "k": Choice([3, 5])})
        >>> value = value_reader(space, {"act": ("relu", "tanh")})
        >>> v = space.decode(jnp.array([0.1, 0.9]))
        >>> int(value(v, "act", 0)), int(value(v, "k", 3))
        (1, 5)
    """
    tables: dict[str, jax.Array] = {}
    fixed: dict[str, jax.Array] = {}
    for name, p in space.params.items():
        vocabulary = vocabularies.get(name)
        if isinstance(p, Choice):
            if vocabulary is not None:
                unknown = [o for o in p.options if o not in vocabulary]
                if unknown:
                    raise ValueError(f"{name} options {unknown} are not among the supported {list(vocabulary)}")
                tables[name] = jnp.asarray([list(vocabulary).index(o) for o in p.options], jnp.int32)
            elif all(_is_bool(o) for o in p.options):
                tables[name] = jnp.asarray([bool(o) for o in p.options])
            elif all(_is_real(o) for o in p.options):
                ints = all(isinstance(o, numbers.Integral) for o in p.options)
                tables[name] = jnp.asarray(p.options, jnp.int32 if ints else jnp.float32)
        elif isinstance(p, Fixed) and vocabulary is not None:
            if p.value not in vocabulary:
                raise ValueError(f"{name} value {p.value!r} is not among the supported {list(vocabulary)}")
            fixed[name] = jnp.asarray(list(vocabulary).index(p.value))

    def value(decoded, name, default):
        if name in tables:
            return tables[name][decoded[name]]
        if name in decoded:
            return decoded[name]
        if name in fixed:
            return fixed[name]
        return jnp.asarray(default)

    return value
