"""Per-member Optax optimizers whose hyperparameters are traced arrays.

One swarm member's optimizer is described by ``OptHParams``: a categorical
optimizer index and continuous learning rate, momentum, weight decay,
learning-rate decay and the Adam family's ``beta2`` and ``eps``.
``make_optimizer`` wraps a single transformation in
``optax.inject_hyperparams``, so all seven live as arrays in
``opt_state.hyperparams``: vmapping gives every member its own values, and
changing them (a new PSO round) never recompiles (docs/design.md, decision 3).

Inside, each named optimizer is the plain Optax one built from the member's
hyperparameters (table below). Every step runs *all* named optimizers on the
same gradients and selects the update of the member's index (``lax.select_n``;
under vmap a ``lax.switch`` would turn into the same select anyway). Their
states share memory: a member follows one optimizer, so only that one's
state is worth keeping, and the param-shaped buffers of the states (Adam's
``mu`` and ``nu``, a momentum trace, AdaGrad's sums, ...) live in two shared
slots (`SwarmOptState.slots`) that hold the chosen optimizer's buffers. Each
optimizer reads the slots as its own state and only the chosen one's writes
are kept, so the chosen optimizer sees exactly its own state: the member is
bitwise the plain Optax optimizer, and the state costs 2x the params for any
number of names (not the sum of all their states). The elementwise work still
grows with the names (every formula runs on every element), cheap next to
the matmuls that made the gradients. The index may be an array broadcasting
against the leaves (a packed layout's columns, each its own member's). A
member's index is fixed for a run: another optimizer would start from the
chosen one's buffers, not from its own history.

====================  ==================================================
name                  plain Optax equivalent
====================  ==================================================
``sgd``               ``chain(add_decayed_weights(wd), sgd(lr))``
``momentum``          ``chain(add_decayed_weights(wd), sgd(lr, momentum=m))``
``nesterov``          ``chain(add_decayed_weights(wd), sgd(lr, momentum=m, nesterov=True))``
``rmsprop``           ``chain(add_decayed_weights(wd), rmsprop(lr, momentum=m))``
``adagrad``           ``chain(add_decayed_weights(wd), adagrad(lr))``
``adam``              ``chain(add_decayed_weights(wd), adam(lr, b1=m, b2=b2, eps=eps))``
``adamw``             ``adamw(lr, b1=m, b2=b2, eps=eps, weight_decay=wd)`` (decoupled)
``nadam``             ``chain(add_decayed_weights(wd), nadam(lr, b1=m, b2=b2, eps=eps))``
``adadelta``          ``chain(add_decayed_weights(wd), adadelta(lr))`` (rho 0.9, eps 1e-6)
====================  ==================================================

Weight decay is coupled L2 (``wd * params`` added to the gradients) for all
but ``adamw``; with ``wd = 0`` it is exactly a no-op. ``rmsprop`` uses
Optax's defaults (decay 0.9, eps 1e-8 inside the sqrt); with ``m = 0`` its
momentum trace is exactly a no-op. ``lr`` is the cosine schedule
``optax.cosine_decay_schedule(learning_rate, max(total_steps - 1, 1),
alpha=lr_decay)`` at the step count: the first update uses
``learning_rate``, the ``total_steps``-th (last) uses
``learning_rate * lr_decay`` and later ones stay there; ``lr_decay = 1``
gives exactly the constant ``learning_rate``.

Precision note: ``inject_hyperparams`` stores learning rate and momentum
(Adam's ``b1``) as float32 arrays, whereas ``optax.adam(1e-3)`` keeps
Python floats, which round differently (~1e-7 per step, ~2e-6 drift over
50 Adam steps). Compare like with like: a plain optimizer built from the
same float32 arrays agrees to float32 rounding.

Example:
    >>> import jax, jax.numpy as jnp
    >>> opt = make_optimizer(("sgd", "adam"), total_steps=10)
    >>> params_S = {"w": jnp.ones((2, 3))}
    >>> hp_S = OptHParams(optimizer=jnp.array([0, 1]), learning_rate=jnp.array([0.1, 0.01]),
    ...                   momentum=jnp.array([0.9, 0.9]), weight_decay=jnp.zeros(2),
    ...                   lr_decay=jnp.ones(2), beta2=jnp.full(2, 0.999), eps=jnp.full(2, 1e-8))
    >>> state_S = jax.vmap(opt.init)(params_S, hp_S)
    >>> updates_S, state_S = jax.vmap(opt.update)(params_S, state_S, params_S)
    >>> [round(float(u), 6) for u in updates_S["w"][:, 0]]
    [-0.1, -0.01]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxswarm.space import Choice, Fixed, Float, Param, SearchSpace, range_arg

__all__ = [
    "OPTIMIZERS",
    "OptHParams",
    "SwarmOptState",
    "SwarmOptimizer",
    "make_optimizer",
    "default_hparams",
    "hparams_of",
    "with_hparams",
    "with_count",
    "current_learning_rate",
    "plain_optimizer",
    "DEFAULTS",
    "LEARNING_RATE_RANGE",
    "optimizer_names",
    "opt_hparams",
    "optimizer_params",
    "lr_decay_param",
    "batch_size_param",
    "ADAM_HPARAMS",
    "adam_hparams",
]

OPTIMIZERS: tuple[str, ...] = ("sgd", "momentum", "nesterov", "rmsprop", "adagrad", "adam", "adamw", "nadam",
                                "adadelta")

# A member whose space leaves a hyperparameter out trains with these values (beta2 and eps: Optax's Adam's).
DEFAULTS: dict[str, float] = {"learning_rate": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "lr_decay": 1.0,
                              "beta2": 0.999, "eps": 1e-8}
# The Adam family's settings a space may tune. One it does not tune stays Optax's Python-float default, so
# an untuned Adam rounds exactly as `optax.adam` does (a float32 b2 makes 1 - b2 differ by ~1e-5).
ADAM_HPARAMS: tuple[str, ...] = ("beta2", "eps")
LEARNING_RATE_RANGE: tuple[float, float] = (1e-4, 1e-1)  # the preset spaces' default range (log scale)


class OptHParams(NamedTuple):
    """One member's optimizer hyperparameters, all (traced) scalars.

    Attributes:
        optimizer: i32[] index into the ``names`` the optimizer was built with
            (clipped into range).
        learning_rate: f32[] base learning rate.
        momentum: f32[] momentum for momentum/nesterov/rmsprop, ``b1`` for
            adam/adamw/nadam; ignored by sgd/adagrad/adadelta.
        weight_decay: f32[] decoupled for adamw, coupled L2 for the others.
        lr_decay: f32[] final learning rate = ``learning_rate * lr_decay``
            (cosine decay over ``total_steps``); 1.0 = constant.
        beta2: f32[] the second-moment decay ``b2`` of adam/adamw/nadam.
        eps: f32[] the ``eps`` added to the root of the second moment (adam/adamw/nadam).
    """

    optimizer: jax.Array
    learning_rate: jax.Array
    momentum: jax.Array
    weight_decay: jax.Array
    lr_decay: jax.Array
    beta2: jax.Array
    eps: jax.Array


class SwarmOptState(NamedTuple):
    """Inner state (under ``opt_state.inner_state``).

    Attributes:
        count: i32[] updates applied so far (drives the lr schedule).
        slots: param-shaped trees shared by the names: the chosen optimizer's
            state buffers, in the order its Optax state holds them.
        rest: per name, in ``names`` order, the other leaves of its Optax
            state (step counts: scalars).
        horizon: i32[] this member's ``total_steps`` (the schedule's length),
            or None: the optimizer's static ``total_steps``. Members whose
            batch sizes differ make different numbers of updates in a run
            (`train`'s per-member ``batch_size``).
    """

    count: jax.Array
    slots: tuple
    rest: tuple
    horizon: jax.Array | None = None


class SwarmOptimizer(NamedTuple):
    """GradientTransformation-like pair whose ``init`` also takes ``OptHParams``.

    Attributes:
        init: ``init(params, hp, total_steps=None) -> opt_state``
            (an ``optax.InjectStatefulHyperparamsState``); a traced
            ``total_steps`` gives this member its own schedule length.
        update: ``update(grads, opt_state, params) -> (updates, opt_state)``.
        names: the optimizer names an index refers to.
        total_steps: the schedule's length.
    """

    init: Callable[[Any, OptHParams], Any]
    update: Callable[[Any, Any, Any], tuple[Any, Any]]
    names: tuple[str, ...]
    total_steps: int


def plain_optimizer(
    name: str, learning_rate, momentum, weight_decay, beta2=DEFAULTS["beta2"], eps=DEFAULTS["eps"]
) -> optax.GradientTransformation:
    """The plain Optax optimizer that index ``name`` stands for (table above).

    Args:
        name: one of ``OPTIMIZERS``.
        learning_rate: learning rate (float, array or Optax schedule).
        momentum: momentum / Adam ``b1``.
        weight_decay: L2 (coupled) weight, or decoupled for adamw.
        beta2, eps: the Adam family's ``b2`` and ``eps``.

    Returns:
        An ``optax.GradientTransformation``.

    Example:
        >>> tx = plain_optimizer("adam", 1e-3, 0.9, 0.0)
        >>> state = tx.init({"w": jnp.zeros(2)})
    """
    if name == "adamw":
        return optax.adamw(learning_rate, b1=momentum, b2=beta2, eps=eps, weight_decay=weight_decay)
    builders = {
        "sgd": lambda: optax.sgd(learning_rate),
        "momentum": lambda: optax.sgd(learning_rate, momentum=momentum),
        "nesterov": lambda: optax.sgd(learning_rate, momentum=momentum, nesterov=True),
        "rmsprop": lambda: optax.rmsprop(learning_rate, momentum=momentum),
        "adagrad": lambda: optax.adagrad(learning_rate),
        "adam": lambda: optax.adam(learning_rate, b1=momentum, b2=beta2, eps=eps),
        "nadam": lambda: optax.nadam(learning_rate, b1=momentum, b2=beta2, eps=eps),
        "adadelta": lambda: optax.adadelta(learning_rate),
    }
    if name not in builders:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
    return optax.chain(optax.add_decayed_weights(weight_decay), builders[name]())


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
    names = tuple(names)
    if not names:
        raise ValueError("make_optimizer needs at least one optimizer name, got ()")
    for n in names:
        if n not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {n!r}; expected one of {OPTIMIZERS}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate optimizer names in {names}")
    return names


def _schedule(total_steps, learning_rate, lr_decay):
    """The cosine schedule over `total_steps` updates; `total_steps` an int, or a traced i32 (one member's own)."""
    if isinstance(total_steps, int):
        return optax.cosine_decay_schedule(learning_rate, max(total_steps - 1, 1), alpha=lr_decay)
    decay_steps = jnp.maximum(total_steps - 1, 1).astype(jnp.float32)

    def schedule(count):  # optax.cosine_decay_schedule's arithmetic, on a traced length
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(count, decay_steps) / decay_steps))
        return learning_rate * ((1 - lr_decay) * cosine + lr_decay)

    return schedule


def make_optimizer(names: Sequence[str] = OPTIMIZERS, total_steps: int = 1,
                   traced: Sequence[str] = ADAM_HPARAMS) -> SwarmOptimizer:
    """Builds the per-member optimizer with hyperparameters as traced arrays.

    Args:
        names: the optimizers an index may choose (subset of ``OPTIMIZERS``,
            in the order the index refers to). Fewer names, less state memory.
        total_steps: number of updates the lr schedule spans (static).
        traced: which of `ADAM_HPARAMS` the optimizer reads from the
            hyperparameters; the others are `DEFAULTS` as Python floats
            (a study passes `adam_hparams(space)`, what its space tunes).

    Returns:
        ``SwarmOptimizer``; vmap ``init``/``update`` over members.
        ``opt_state.hyperparams`` holds the ``OptHParams`` fields as arrays:
        replace them (``with_hparams``) to change values without recompiling.

    Example:
        >>> opt = make_optimizer(("adam",), total_steps=100)
        >>> state = opt.init({"w": jnp.zeros(3)}, default_hparams(names=("adam",)))
        >>> updates, state = opt.update({"w": jnp.ones(3)}, state, {"w": jnp.zeros(3)})
    """
    names = _check_names(names)
    total_steps = int(total_steps)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    unknown = set(traced) - set(ADAM_HPARAMS)
    if unknown:
        raise ValueError(f"traced must name some of {ADAM_HPARAMS}, got {sorted(unknown)}")

    def swarm_transform(optimizer, learning_rate, momentum, weight_decay, lr_decay, beta2, eps):
        adam = {n: v if n in traced else DEFAULTS[n] for n, v in (("beta2", beta2), ("eps", eps))}

        def txs(count, horizon=None):
            lr = _schedule(total_steps if horizon is None else horizon, learning_rate, lr_decay)(count)
            return [plain_optimizer(n, lr, momentum, weight_decay, **adam) for n in names]

        def init_fn(params):
            count = jnp.zeros([], jnp.int32)
            parts = [_split_state(tx.init(params), params) for tx in txs(count)]
            index = _index(optimizer, len(names))
            slots = tuple(
                _choose(index, [p[0][j] if j < len(p[0]) else jax.tree.map(jnp.zeros_like, params) for p in parts])
                for j in range(max(len(p[0]) for p in parts)))
            return SwarmOptState(count, slots, tuple(p[1] for p in parts))

        def update_fn(grads, state, params=None):
            index = _index(optimizer, len(names))
            updates, slots, rest = [], [[s] for s in state.slots], []
            for tx, small in zip(txs(state.count, state.horizon), state.rest):
                spec = _split_state(jax.eval_shape(tx.init, grads), grads)[2]
                u, new = tx.update(grads, _join_state(state.slots, small, spec), params)
                bufs, small, _ = _split_state(new, grads)
                updates.append(u)
                rest.append(small)
                for j, old in enumerate(state.slots):
                    slots[j].append(bufs[j] if j < len(bufs) else old)
            # slots[j] = [current, then each name's proposal]: skip the current one, choose the member's.
            new_state = SwarmOptState(optax.safe_increment(state.count),
                                      tuple(_choose(index, s[1:]) for s in slots), tuple(rest), state.horizon)
            return _choose(index, updates), new_state

        return optax.GradientTransformation(init_fn, update_fn)

    injected = optax.inject_hyperparams(swarm_transform)

    def init(params, hp: OptHParams, total_steps=None):
        hp = _as_arrays(hp)
        state = injected(**hp._asdict()).init(params)
        if total_steps is None:
            return state
        horizon = jnp.asarray(total_steps, jnp.int32)
        return state._replace(inner_state=state.inner_state._replace(horizon=horizon))

    # update_fn of inject_hyperparams reads every numeric value from the state;
    # the values given here are placeholders that are never used.
    _update_tx = injected(0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0)

    def update(grads, opt_state, params):
        return _update_tx.update(grads, opt_state, params)

    return SwarmOptimizer(init, update, names, total_steps)


def _index(optimizer, n: int) -> jax.Array:
    return jnp.clip(jnp.asarray(optimizer, jnp.int32), 0, n - 1)


def _choose(index: jax.Array, trees: Sequence[Any]) -> Any:
    """Leafwise ``trees[index]``: `index` a scalar, or an array broadcasting against every leaf.

    Example:
        >>> _choose(jnp.array([1, 0]), [jnp.zeros((3, 2)), jnp.ones((3, 2))])[0].tolist()
        [1.0, 0.0]
    """
    if len(trees) == 1:
        return trees[0]
    if jnp.ndim(index) == 0:
        return jax.tree.map(lambda *vs: lax.select_n(index, *vs), *trees)
    return jax.tree.map(lambda *vs: lax.select_n(jnp.broadcast_to(index, jnp.shape(vs[0])), *vs), *trees)


def _split_state(state, params) -> tuple[list, list, Any]:
    """An Optax state -> ``(its param-shaped subtrees, its other leaves, how to join them again)``."""
    sig = lambda tree: [(tuple(jnp.shape(l)), jnp.result_type(l)) for l in jax.tree.leaves(tree)]
    ref, shapes = jax.tree.structure(params), sig(params)

    def is_buffer(x):
        return jax.tree.structure(x) == ref and sig(x) == shapes

    leaves, treedef = jax.tree.flatten(state, is_leaf=is_buffer)
    kinds = tuple(is_buffer(leaf) for leaf in leaves)
    return ([l for l, k in zip(leaves, kinds) if k], [l for l, k in zip(leaves, kinds) if not k],
            (treedef, kinds))


def _join_state(buffers, small, spec):
    """`_split_state`'s inverse: the state of `spec` from its buffers (the first ones of `buffers`) and leaves."""
    treedef, kinds = spec
    bufs, rest = iter(buffers), iter(small)
    return jax.tree.unflatten(treedef, [next(bufs) if k else next(rest) for k in kinds])


def _as_arrays(hp: OptHParams) -> OptHParams:
    return OptHParams(jnp.asarray(hp.optimizer, jnp.int32), *(jnp.asarray(v, jnp.float32) for v in hp[1:]))


def default_hparams(names: Sequence[str] = OPTIMIZERS, **overrides) -> OptHParams:
    """Default hyperparameters (Adam and `DEFAULTS`), as arrays.

    Args:
        names: the names the index refers to (as given to ``make_optimizer``).
        **overrides: ``OptHParams`` fields; ``optimizer`` may be a name.

    Returns:
        One member's ``OptHParams``.

    Example:
        >>> int(default_hparams(optimizer="sgd").optimizer)
        0
    """
    names = _check_names(names)
    unknown = set(overrides) - set(OptHParams._fields)
    if unknown:
        raise ValueError(
            f"unknown hyperparameters {sorted(unknown)}; expected {OptHParams._fields}"
        )
    values = dict(optimizer="adam" if "adam" in names else names[0], **DEFAULTS)
    values.update(overrides)
    if isinstance(values["optimizer"], str):
        if values["optimizer"] not in names:
            raise ValueError(f"optimizer {values['optimizer']!r} not in names {names}")
        values["optimizer"] = names.index(values["optimizer"])
    return _as_arrays(OptHParams(**values))


def hparams_of(opt_state) -> OptHParams:
    """Reads the ``OptHParams`` stored in an optimizer state (batched or not).

    Example:
        >>> opt = make_optimizer()
        >>> hparams_of(opt.init(jnp.zeros(2), default_hparams())).learning_rate.dtype
        dtype('float32')
    """
    return OptHParams(**{f: opt_state.hyperparams[f] for f in OptHParams._fields})


def with_hparams(opt_state, hp: OptHParams):
    """Returns ``opt_state`` with new hyperparameter values (no recompilation).

    The arrays must keep their shapes and dtypes (i32 index, f32 floats).

    Example:
        >>> opt = make_optimizer()
        >>> s = opt.init(jnp.zeros(2), default_hparams())
        >>> float(hparams_of(with_hparams(s, default_hparams(learning_rate=0.5))).learning_rate)
        0.5
    """
    hyperparams = dict(opt_state.hyperparams)
    hyperparams.update(_as_arrays(hp)._asdict())
    return opt_state._replace(hyperparams=hyperparams)


def with_count(opt_state, count):
    """Returns ``opt_state`` (`make_optimizer`'s) with every step count set to `count`.

    `count` broadcasts against each count leaf: a scalar, or one count per
    member of a stacked state (``i32[S]``).

    Example:
        >>> opt = make_optimizer(("adam",))
        >>> s = with_count(opt.init(jnp.zeros(2), default_hparams(names=("adam",))), 5)
        >>> int(s.count), int(s.inner_state.count)
        (5, 5)
    """
    # A new array per leaf (never `count` itself): a state whose leaves share a buffer cannot be donated.
    counts = lambda tree: jax.tree.map(lambda c: jnp.zeros_like(c) + jnp.asarray(count, c.dtype), tree)
    inner = opt_state.inner_state._replace(count=counts(opt_state.inner_state.count),
                                           rest=counts(opt_state.inner_state.rest))
    return opt_state._replace(count=counts(opt_state.count), inner_state=inner)


def current_learning_rate(opt: SwarmOptimizer, opt_state) -> jax.Array:
    """The scheduled learning rate the NEXT update will use (one member).

    Example:
        >>> opt = make_optimizer(total_steps=3)
        >>> s = opt.init(jnp.zeros(2), default_hparams(learning_rate=1.0, lr_decay=0.1))
        >>> float(current_learning_rate(opt, s))
        1.0
    """
    hp = hparams_of(opt_state)
    count, horizon = opt_state.inner_state.count, opt_state.inner_state.horizon
    return _schedule(opt.total_steps if horizon is None else horizon, hp.learning_rate, hp.lr_decay)(count)


# --------------------------------------------------------------------------
# Reading a search space
# --------------------------------------------------------------------------


def optimizer_names(space: SearchSpace) -> tuple[str, ...]:
    """The optimizers a member of `space` may use; `OptHParams.optimizer` indexes this tuple.

    Only these are built into the program (each keeps its own state and, under
    vmap, every one computes its update), so a space without an ``optimizer``
    choice pays for Adam alone.

    Example:
        >>> from jaxswarm.space import SearchSpace
        >>> optimizer_names(SearchSpace({"optimizer": Choice(["sgd", "adam"])}))
        ('sgd', 'adam')
    """
    p = space.params.get("optimizer")
    if p is None:
        return ("adam",)
    options = tuple(p.options) if isinstance(p, Choice) else (p.value,)
    unknown = [o for o in options if o not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"optimizer options {unknown} are not among the supported {list(OPTIMIZERS)}")
    return options


def adam_hparams(space: SearchSpace) -> tuple[str, ...]:
    """Which of `ADAM_HPARAMS` `space` tunes (`make_optimizer`'s ``traced``).

    Example:
        >>> from jaxswarm.space import SearchSpace
        >>> adam_hparams(SearchSpace({"beta2": Float(0.9, 0.999)}))
        ('beta2',)
    """
    return tuple(n for n in ADAM_HPARAMS if n in space.params)


def opt_hparams(value: Callable, decoded: dict) -> OptHParams:
    """One decoded position's optimizer hyperparameters (`DEFAULTS` for names the space lacks).

    Args:
        value: from `space.value_reader(space, {"optimizer": optimizer_names(space), ...})`.
        decoded: `SearchSpace.decode` of the position.
    """
    return OptHParams(
        optimizer=jnp.asarray(value(decoded, "optimizer", 0), jnp.int32),  # index into optimizer_names(space)
        **{name: jnp.asarray(value(decoded, name, default), jnp.float32) for name, default in DEFAULTS.items()},
    )


def optimizer_params(optimizers: Sequence[str] | None, momentum: tuple[float, float] | None,
                     weight_decay: tuple[float, float] | None, beta2: tuple[float, float] | None = None,
                     eps: tuple[float, float] | None = None) -> dict[str, Param]:
    """The preset spaces' optional ``optimizer``, ``momentum``, ``weight_decay``, ``beta2`` and ``eps``.

    ``beta2`` is linear in [0, 1) (a decay of 1 never forgets), ``eps`` on a
    log scale (> 0); both only change adam, adamw and nadam.

    Example:
        >>> list(optimizer_params(("sgd", "adam"), None, (1e-5, 1e-2)))
        ['optimizer', 'weight_decay']
    """
    def named(name, make):
        # The parameter's own complaint (bounds not numbers, lo == hi, ...) with the setting's name in front.
        try:
            return make()
        except ValueError as e:
            raise ValueError(str(e) if str(e).startswith(name) else f"{name}: {e}") from None

    def ranged(name, arg, log=False) -> Float:
        return named(name, lambda: Float(*range_arg(arg, name), log=log))

    params: dict[str, Param] = {}
    if optimizers is not None:
        if isinstance(optimizers, str):  # Choice("adam") would offer "a", "d", "m"
            raise ValueError(f"optimizers must be a list of names from {list(OPTIMIZERS)}, got {optimizers!r}")
        params["optimizer"] = named("optimizers", lambda: Choice(optimizers))
        unknown = [o for o in optimizers if o not in OPTIMIZERS]
        if unknown:
            raise ValueError(f"optimizers {unknown} are not among the supported {list(OPTIMIZERS)}")
    def decay(name, arg) -> Float:
        # A decay (momentum, Adam's b1 or b2) of 1 or more never forgets: the update grows without bound.
        p = ranged(name, arg)
        if not (0 <= p.lo and p.hi < 1):
            raise ValueError(f"{name} must lie in [0, 1), got ({p.lo:g}, {p.hi:g})")
        return p

    def positive_log(name, arg) -> Float:
        p = ranged(name, arg)
        if p.lo < 0:
            raise ValueError(f"{name} must be >= 0, got ({p.lo:g}, {p.hi:g})")
        if p.lo == 0:  # tuned on a log scale, so the range cannot start at 0
            raise ValueError(f"{name} is tuned on a log scale: its range needs lo > 0, got ({p.lo:g}, {p.hi:g})")
        return ranged(name, arg, log=True)

    for name, arg, make in (("momentum", momentum, decay), ("weight_decay", weight_decay, positive_log),
                            ("beta2", beta2, decay), ("eps", eps, positive_log)):
        if arg is not None:
            params[name] = make(name, arg)
    return params


def batch_size_param(batch_sizes: Sequence[int] | None, batch_norm: bool = False) -> dict[str, Param]:
    """The preset spaces' optional ``batch_size``: Choice(batch_sizes), the examples of one update
    (each member its own, `train.fit_span`); one size is a Fixed. Several sizes with `batch_norm`
    (the space's batch-norm switch) are refused at once, as `train.batch_config` refuses them.

    Example:
        >>> batch_size_param((32, 128))["batch_size"].options
        (32, 128)
    """
    if batch_sizes is None:
        return {}
    try:
        sizes = [int(b) for b in batch_sizes
                 if not isinstance(b, (bool, str)) and int(b) == b and b >= 1]
        ok = not isinstance(batch_sizes, str) and len(sizes) == len(batch_sizes) and sizes
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"batch_sizes must be a list of integers >= 1, got {batch_sizes!r}")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"batch_sizes has duplicates: {list(batch_sizes)}")
    if batch_norm and len(sizes) > 1:
        raise ValueError("batch_sizes with several sizes cannot go with batch_norm: batch norm's statistics "
                         "would come from a chunk of the sizes' gcd, not the member's batch")
    return {"batch_size": Fixed(sizes[0]) if len(sizes) == 1 else Choice(sizes)}


def lr_decay_param(lr_decay: tuple[float, float] | None) -> dict[str, Param]:
    """The preset spaces' optional ``lr_decay`` (final / initial learning rate, log scale)."""
    return {} if lr_decay is None else {"lr_decay": Float(*range_arg(lr_decay, "lr_decay"), log=True)}
