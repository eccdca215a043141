"""Train one member from its unit-box position; the layouts add the swarm axis.

`make_train(space, config, in_features, num_classes)` returns a `Trainer` whose
`train_member(key, position_D, data)` trains ONE member: the position is
decoded inside the program (`SearchSpace.decode` is traceable), so depth,
widths, activation and optimizer hyperparameters are traced arrays and moving
particles never recompiles (docs/design.md, decision 3). `fit` is one `lax.scan`
over epochs of `lax.scan`-ed minibatches, data and shuffling on the device
(decision 5); where the space tunes ``batch_size``, each member makes its own
batch size's updates from accumulated chunks (`fit_span`). A member whose
loss goes NaN/inf is reported as diverged with the worst fitness (decision
6). The swarm axis comes from `execute` (vmap, sharding, chunks) as a layout
chooses (`jaxswarm.layouts`).

`make_dense_train` is the one-configuration-at-a-time counterpart (the real
size, one jit per configuration): the sequential tuners use it, and a study
retrains its winner with it.

Fitness convention everywhere in jaxswarm: **higher is better** (validation
accuracy, or minus validation loss).

Example:
    >>> import jax, numpy as np
    >>> from jaxswarm.models import mlp_space
    >>> space = mlp_space(max_layers=2, units=(4, 16))
    >>> x = np.random.rand(64, 8).astype(np.float32); y = (x[:, 0] > .5).astype(np.int32)
    >>> data = device_data(x[:48], y[:48], x[48:], y[48:])
    >>> trainer = make_train(space, TrainConfig(epochs=2, batch_size=16), 8, 2)
    >>> pos = jax.random.uniform(jax.random.key(0), (4, space.num_dims))
    >>> keys = jax.random.split(jax.random.key(1), 4)
    >>> jax.vmap(trainer.train_member, in_axes=(0, 0, None))(keys, pos, data).fitness.shape
    (4,)
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxswarm import optim
from jaxswarm.models import ModelFamily, family_of
from jaxswarm.space import Choice, Fixed, SearchSpace, value_reader

FITNESS_KINDS = ("accuracy", "loss")
# A final validation cross-entropy beyond this counts as diverged, not only inf/NaN: chance level
# is log(C) nats (< 7 for up to 1000 classes), so a loss 100 times that is a network whose
# weights blew up, not one still learning; such a member must not rank above any sane one.
DIVERGED_LOSS = 1e3


class TrainConfig(NamedTuple):
    """Static training configuration (shapes and loop lengths; hashable)."""

    epochs: int = 5
    batch_size: int = 128
    fitness: str = "accuracy"  # "accuracy" (val accuracy) or "loss" (minus val loss)
    eval_batch_size: int = 2048
    # The batch sizes a space's ``batch_size`` Choice offers (`batch_config` sets them; () when the space has
    # none): every member then trains with its own batch size (`fit_span`), `batch_size` is unused.
    batch_sizes: tuple[int, ...] = ()


class Data(NamedTuple):
    """Arrays one training run reads, already on the device (features flat)."""

    x_train: jax.Array  # f32[N, F]
    y_train: jax.Array  # i32[N]
    x_val: jax.Array  # f32[M, F]
    y_val: jax.Array  # i32[M]


class Metrics(NamedTuple):
    """Per-member results of one training run (vmap adds a leading S axis)."""

    fitness: jax.Array  # f32[]  higher is better; -inf when diverged
    val_accuracy: jax.Array  # f32[]  after the last epoch
    best_val_accuracy: jax.Array  # f32[]  best over epochs
    val_loss: jax.Array  # f32[]  after the last epoch
    train_loss: jax.Array  # f32[E]  mean minibatch loss per epoch (the loss curve)
    val_accuracy_curve: jax.Array  # f32[E]
    diverged: jax.Array  # bool[]
    fold_fitness: jax.Array  # f32[K]  fitness of each fold (K = 1 for a hold-out split)


class TrainState(NamedTuple):
    """Where one member's training stands between two spans of epochs (`fit_span`).

    Its weights, batch statistics and optimizer state (step count included):
    continuing from it with the same key trains exactly as one longer run.
    """

    params: Any
    batch_stats: Any
    opt_state: Any


class Trainer(NamedTuple):
    """One member's training, for a layout to run over the swarm (see `make_train`)."""

    train_member: Callable  # (key, position_D, data, shuffle_key=None) -> Metrics
    train_member_warm: Callable  # (key, position_D, data, variables, keep) -> (Metrics, variables)
    train_member_span: Callable  # (key, position_D, data, state, start, num_epochs) -> (Metrics, TrainState)
    start_member: Callable  # (key, position_D, n_train) -> the TrainState train_member_span starts from
    init_member: Callable  # (key, position_D) -> variables that train_member starts from
    hparams: Callable  # (position_D) -> (arch, optim.OptHParams), traceable
    model_config: Any  # the family's static max-size config
    family: ModelFamily


def device_data(x_train, y_train, x_val, y_val) -> Data:
    """Flattens features and puts the four arrays on the default device."""
    flat = lambda x: np.asarray(x, np.float32).reshape(len(x), -1)
    return Data(
        jnp.asarray(flat(x_train)),
        jnp.asarray(np.asarray(y_train, np.int32)),
        jnp.asarray(flat(x_val)),
        jnp.asarray(np.asarray(y_val, np.int32)),
    )


def fit(
    key: jax.Array,
    init_fn: Callable,
    apply_fn: Callable,
    optimizer: Any,
    opt_hparams: Any,
    data: Data,
    config: TrainConfig,
    variables: Any = None,
    keep: jax.Array | None = None,
    shuffle_key: jax.Array | None = None,
    on_epoch: Callable | None = None,
    batch_size: jax.Array | None = None,
) -> tuple[Metrics, Any]:
    """Trains one network with minibatch SGD-family updates, all inside one `lax.scan`.

    Args:
      key: PRNG key; split into init, shuffle and dropout keys.
      init_fn: `init_fn(key) -> variables` ({"params", "batch_stats"}).
      apply_fn: `apply_fn(variables, x_BxF, train, key) -> (logits_BxC, batch_stats)`.
      optimizer: from `optim.make_optimizer`; `opt_hparams` its per-member values.
      data: device arrays; `config` loop lengths.
      variables, keep: warm start: when `keep` is true, training continues from
        `variables` instead of freshly initialised ones (optimizer state is new).
      shuffle_key: when given, the minibatch order comes from this key instead of
        `key`; passing one key to every member (vmap in_axes=None) makes the whole
        swarm see the same minibatches, computed once.
      on_epoch: host function `on_epoch(epoch, train_loss, val_accuracy)` called
        (through `jax.debug.callback`) after each epoch: progress for one long
        run. Leave it None under vmap, where it would fire once per member.
      batch_size: this member's (traced) batch size, where ``config.batch_sizes``
        offers several (`fit_span`).

    Returns:
      (`Metrics` for this member, its final variables).
    """
    metrics, state = fit_span(key, init_fn, apply_fn, optimizer, opt_hparams, data, config, None, 0,
                              config.epochs, variables, keep, shuffle_key, on_epoch, batch_size)
    return metrics, {"params": state.params, "batch_stats": state.batch_stats}


def start_state(key: jax.Array, init_fn: Callable, optimizer: Any, opt_hparams: Any, variables: Any = None,
                keep: jax.Array | None = None, total_steps: jax.Array | None = None) -> TrainState:
    """The `TrainState` a run from `key` starts from: fresh weights (`fit`'s key derivation), a new optimizer state.

    With `variables` and `keep` true (warm start), the weights are `variables` instead of fresh ones.
    `total_steps`: the member's own schedule length (traced: its batch size's `member_steps`).
    """
    fresh = init_fn(jax.random.split(key, 3)[0])  # 3: fit_span splits the same key the same way
    if variables is not None:
        fresh = jax.tree.map(lambda v, f: jnp.where(keep, v, f), variables, fresh)
    opt_state = optimizer.init(fresh["params"], opt_hparams) if total_steps is None else \
        optimizer.init(fresh["params"], opt_hparams, total_steps)
    return TrainState(fresh["params"], fresh["batch_stats"], opt_state)


@jax.jit
def take_members(tree, index):
    """Every leaf's rows at `index` (stacked members: leading S): one program per tree and index
    length, where gathering leaf by leaf would compile one per leaf (a schedule's rungs, PBT's copies)."""
    return jax.tree.map(lambda a: a[index], tree)


def restart_rows(copied: TrainState, fresh: TrainState, new_weights, new_optimizer) -> TrainState:
    """Stacked members' states (leading S): `copied`, with `fresh`'s weights or optimizer state in some rows.

    PBT's exploit (`study.Study`): `copied` holds each member's copy of its
    source's state, `fresh` the states its new position starts from
    (`start_state`). Rows with ``new_weights`` take fresh weights and batch
    statistics (their architecture changed), rows with ``new_optimizer`` a
    fresh optimizer state (their optimizer changed). Every row keeps its
    copied step count (the learning-rate schedule's place in the round) and
    takes `fresh`'s hyperparameters and schedule length, its new position's.
    """
    def rows(mask):
        mask = jnp.asarray(mask, bool)
        return lambda c, f: jnp.where(mask.reshape(mask.shape + (1,) * (c.ndim - 1)), f, c)

    weights = jax.tree.map(rows(new_weights), (copied.params, copied.batch_stats), (fresh.params, fresh.batch_stats))
    opt = jax.tree.map(rows(new_optimizer), copied.opt_state, fresh.opt_state)
    opt = optim.with_count(opt, copied.opt_state.count)
    if opt.inner_state.horizon is not None:  # the new position's batch size: its schedule's length
        opt = opt._replace(inner_state=opt.inner_state._replace(horizon=fresh.opt_state.inner_state.horizon))
    return TrainState(*weights, opt._replace(hyperparams=fresh.opt_state.hyperparams))


def fit_span(
    key: jax.Array,
    init_fn: Callable,
    apply_fn: Callable,
    optimizer: Any,
    opt_hparams: Any,
    data: Data,
    config: TrainConfig,
    state: TrainState | None,
    start: int | jax.Array,
    num_epochs: int,
    variables: Any = None,
    keep: jax.Array | None = None,
    shuffle_key: jax.Array | None = None,
    on_epoch: Callable | None = None,
    batch_size: jax.Array | None = None,
) -> tuple[Metrics, TrainState]:
    """`fit`'s `num_epochs` epochs from epoch `start` of a run of ``config.epochs``, from `state`.

    Every epoch's keys and the learning-rate schedule are those of the whole
    ``config.epochs`` run, so training epochs ``0 .. k-1`` and then ``k ..
    k+m-1`` from the returned state is training ``0 .. k+m-1`` at once (the
    multi-fidelity schedules' rungs, `schedules`): bitwise on CPU when both
    start from the same explicit `state` (`start_state`); a fresh start
    (`state` None, initialised inside the program) may round differently in
    the last bit, as XLA fuses the initialisation into the first steps.
    `start` may be traced (one program for every start); `num_epochs` is
    static. The `Metrics` curves cover the span's epochs; fitness is the
    last one's.

    Per-member batch sizes (``config.batch_sizes`` not empty): a member of
    batch size b makes ``n // b`` updates an epoch, each on the next b
    examples of the epoch's permutation, as a network trained alone with
    batch size b does. The examples come in chunks of g, the gcd of the
    offered sizes (`chunk_size`), and a chunk's dropout draws from
    ``fold_in(fold_in(epoch key, update), chunk within the update)``. With a
    traced `batch_size` (a swarm member) a chunk is a step: its gradient adds
    to an accumulator, and every ``b / g``-th step applies their mean (the
    batch's mean-loss gradient), so one program serves every batch size; the
    chunks after the epoch's last whole batch do nothing. Without one (a
    network alone, ``config.batch_size`` its size) a batch is a step, its
    chunks drawn side by side. The two agree to float rounding (the same sums
    in another order).
    """
    if num_epochs < 1 or (isinstance(start, int) and not 0 <= start <= config.epochs - num_epochs):
        raise ValueError(f"a span of epochs needs 0 <= start and start + num_epochs <= {config.epochs}, "
                         f"got start {start}, num_epochs {num_epochs}")
    if state is None and not (isinstance(start, int) and start == 0):
        raise ValueError(f"a span from epoch {start} continues a state; got none")
    n = data.x_train.shape[0]
    batch = min(config.batch_size, n)
    steps = n // batch
    per_member = bool(config.batch_sizes) and batch_size is not None
    if per_member:
        batch_size = jnp.minimum(jnp.asarray(batch_size, jnp.int32), n)
    _, k_epochs, _ = jax.random.split(key, 3)  # the first: start_state's (and init_member's) init key
    if state is None:
        state = start_state(key, init_fn, optimizer, opt_hparams, variables, keep,
                            member_steps(config, n, batch_size) if per_member else None)

    def loss_fn(params, stats, x, y, k):
        logits, new_stats = apply_fn({"params": params, "batch_stats": stats}, x, True, k)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, new_stats

    if config.batch_sizes:
        epoch = _chunked_epoch(loss_fn, apply_fn, optimizer, data, config, batch_size if per_member else None)
        return _epochs(epoch, tuple(state), k_epochs, config, start, num_epochs, shuffle_key, on_epoch, apply_fn,
                       data)

    def step(carry, inputs):
        params, stats, opt_state = carry
        idx_B, k = inputs
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, stats, data.x_train[idx_B], data.y_train[idx_B], k
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    def epoch(carry, k_drop, k_perm):
        idx_TxB = jax.random.permutation(k_perm, n)[: steps * batch].reshape(steps, batch)
        carry, loss_T = jax.lax.scan(step, carry, (idx_TxB, jax.random.split(k_drop, steps)))
        return carry, loss_T.mean()

    return _epochs(epoch, tuple(state), k_epochs, config, start, num_epochs, shuffle_key, on_epoch, apply_fn, data)


def _epochs(epoch, carry, k_epochs, config, start, num_epochs, shuffle_key, on_epoch, apply_fn, data):
    """`fit_span`'s loop over epochs: ``epoch(carry, dropout key, shuffle key) -> (carry, mean train loss)``
    (carry ``(params, batch_stats, opt_state)``), each followed by the validation pass."""
    def one(carry, inputs):
        k_drop, k_perm, e = inputs
        carry, loss = epoch(carry, k_drop, k_perm)
        params, stats, _ = carry
        acc, vloss = evaluate(apply_fn, {"params": params, "batch_stats": stats}, data, config)
        if on_epoch is not None:
            jax.debug.callback(on_epoch, e, loss, acc, ordered=True)
        return carry, (loss, acc, vloss)

    epoch_keys = jax.random.split(k_epochs, config.epochs)  # dropout of each epoch
    if shuffle_key is None:
        shuffle_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(epoch_keys)
    else:
        shuffle_keys = jax.random.split(shuffle_key, config.epochs)
    span = lambda keys: jax.lax.dynamic_slice_in_dim(keys, start, num_epochs)
    carry, (train_loss_E, acc_E, vloss_E) = jax.lax.scan(
        one, carry, (span(epoch_keys), span(shuffle_keys), start + jnp.arange(num_epochs)))
    return metrics_of(train_loss_E, acc_E, vloss_E, config.fitness), TrainState(*carry)


def _chunked_epoch(loss_fn, apply_fn, optimizer, data: Data, config: TrainConfig, batch_size):
    """One epoch with per-member batch sizes (`fit_span`): a chunk a step for a traced `batch_size`, else a batch
    (``config.batch_size``) a step."""
    n = data.x_train.shape[0]
    g = chunk_size(config.batch_sizes, n)

    if batch_size is None:  # one network, its batch size static: a batch a step, its chunks side by side
        batch = min(config.batch_size, n)
        steps, k = n // batch, batch // g
        if batch % g:
            raise ValueError(f"batch size {batch} is not a multiple of the chunk {g} of {config.batch_sizes}")

        def batch_loss(params, stats, x_BxF, y_B, keys_K):
            one = lambda x, kk: apply_fn({"params": params, "batch_stats": stats}, x, True, kk)[0]
            logits = jax.vmap(one)(x_BxF.reshape(k, g, -1), keys_K).reshape(batch, -1)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y_B).mean()

        def epoch(carry, k_drop, k_perm):
            def step(carry, inputs):
                params, stats, opt_state = carry
                idx_B, u = inputs
                keys_K = chunk_keys(k_drop, u, k)
                loss, grads = jax.value_and_grad(batch_loss)(params, stats, data.x_train[idx_B], data.y_train[idx_B],
                                                             keys_K)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), stats, opt_state), loss

            idx_UxB = jax.random.permutation(k_perm, n)[: steps * batch].reshape(steps, batch)
            carry, loss_U = jax.lax.scan(step, carry, (idx_UxB, jnp.arange(steps)))
            return carry, loss_U.mean()

        return epoch

    k = batch_size // g  # chunks per update
    used = (n // batch_size) * k  # the chunks of the epoch's whole batches
    chunks = max((n // min(b, n)) * (min(b, n) // g) for b in config.batch_sizes)

    def epoch(carry, k_drop, k_perm):
        def step(carry, inputs):
            params, stats, opt_state, acc = carry
            idx_G, c = inputs
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params, stats, data.x_train[idx_G], data.y_train[idx_G], chunk_key(k_drop, c // k, c % k))
            acc = jax.tree.map(jnp.add, acc, grads)

            def apply(args):
                params, opt_state, acc = args
                mean = jax.tree.map(lambda a: a / k.astype(a.dtype), acc)
                updates, opt_state = optimizer.update(mean, opt_state, params)
                return optax.apply_updates(params, updates), opt_state, jax.tree.map(jnp.zeros_like, acc)

            due = (c % k == k - 1) & (c < used)
            params, opt_state, acc = jax.lax.cond(due, apply, lambda args: args, (params, opt_state, acc))
            return (params, stats, opt_state, acc), jnp.where(c < used, loss, 0.0)

        idx_CxG = jax.random.permutation(k_perm, n)[: chunks * g].reshape(chunks, g)
        params, stats, opt_state = carry
        zeros = jax.tree.map(jnp.zeros_like, params)
        (params, stats, opt_state, _), loss_C = jax.lax.scan(step, (params, stats, opt_state, zeros),
                                                             (idx_CxG, jnp.arange(chunks)))
        return (params, stats, opt_state), loss_C.sum() / used

    return epoch


def chunk_key(k_drop: jax.Array, update, chunk) -> jax.Array:
    """The dropout key of chunk `chunk` of update `update` in an epoch with per-member batch sizes
    (`fit_span`; `layouts.packed` draws its batch-size groups' masks from the same keys)."""
    return jax.random.fold_in(jax.random.fold_in(k_drop, update), chunk)


def chunk_keys(k_drop: jax.Array, update, chunks: int) -> jax.Array:
    """`chunk_key` of each of an update's `chunks` chunks, in order (a batch drawn chunk by chunk)."""
    return jax.vmap(lambda j: chunk_key(k_drop, update, j))(jnp.arange(chunks))


def chunk_size(batch_sizes: tuple[int, ...], n: int) -> int:
    """The examples of one step when members' batch sizes differ: the gcd of the sizes (each capped at `n`)."""
    return math.gcd(*(min(b, n) for b in batch_sizes))


def member_steps(config: TrainConfig, n_train: int, batch_size) -> jax.Array:
    """A member's updates in a run of ``config.epochs`` with (traced) `batch_size`: its schedule's length."""
    return config.epochs * (n_train // jnp.minimum(batch_size, n_train))


def metrics_of(train_loss_E, acc_E, vloss_E, fitness: str) -> Metrics:
    """`Metrics` from per-epoch curves (a leading swarm axis is fine: epochs are the last axis).

    A member whose training loss is not finite, or whose last validation loss
    is not finite or above `DIVERGED_LOSS`, is diverged: fitness -inf,
    accuracies 0 (one convention everywhere).
    """
    finite = jnp.all(jnp.isfinite(train_loss_E), axis=-1) & jnp.isfinite(vloss_E[..., -1])
    diverged = ~(finite & (vloss_E[..., -1] <= DIVERGED_LOSS))
    raw = acc_E[..., -1] if fitness == "accuracy" else -vloss_E[..., -1]
    fitness_ = jnp.where(diverged, -jnp.inf, raw)
    return Metrics(
        fitness=fitness_,
        val_accuracy=jnp.where(diverged, 0.0, acc_E[..., -1]),
        best_val_accuracy=jnp.where(diverged, 0.0, jnp.max(acc_E, axis=-1)),
        val_loss=vloss_E[..., -1],
        train_loss=train_loss_E,
        val_accuracy_curve=acc_E,
        diverged=diverged,
        fold_fitness=fitness_[..., None],
    )


def eval_chunks(data: Data, config: TrainConfig):
    """The validation set cut into equal chunks (the last padded): x f32[Q, R, ...], y i32[Q, R], valid bool[Q, R]: Q chunks of R rows."""
    m = data.x_val.shape[0]
    chunk = min(config.eval_batch_size, m)
    n_chunks = -(-m // chunk)
    pad = n_chunks * chunk - m
    widths = ((0, pad),) + ((0, 0),) * (data.x_val.ndim - 1)
    x = jnp.pad(data.x_val, widths).reshape(n_chunks, chunk, *data.x_val.shape[1:])
    y = jnp.pad(data.y_val, (0, pad)).reshape(n_chunks, chunk)
    valid = (jnp.arange(n_chunks * chunk) < m).reshape(n_chunks, chunk)
    return x, y, valid


def evaluate(apply_fn, variables, data: Data, config: TrainConfig):
    """Validation accuracy and mean loss, in fixed-size chunks (bounded memory)."""
    m = data.x_val.shape[0]
    x, y, valid = eval_chunks(data, config)

    def body(totals, inputs):
        x_R, y_R, valid_R = inputs
        logits, _ = apply_fn(variables, x_R, False, None)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_R)
        correct = (jnp.argmax(logits, -1) == y_R) & valid_R
        return (totals[0] + correct.sum(), totals[1] + jnp.where(valid_R, loss, 0.0).sum()), None

    (correct, loss), _ = jax.lax.scan(body, (jnp.zeros((), jnp.int32), jnp.zeros(())), (x, y, valid))
    return correct / m, loss / m


def batch_choices(space: SearchSpace) -> tuple[int, ...]:
    """The batch sizes `space`'s ``batch_size`` offers, ascending (a ``Choice`` of ints, or ``Fixed``); () if none.

    Example:
        >>> batch_choices(SearchSpace({"batch_size": Choice([128, 32, 64])}))
        (32, 64, 128)
    """
    p = space.params.get("batch_size")
    if p is None:
        return ()
    if not isinstance(p, (Choice, Fixed)) or getattr(p, "when", None) is not None:
        raise ValueError(f"batch_size must be an unconditional Choice of sizes (or Fixed), got {p!r}")
    values = p.options if isinstance(p, Choice) else (p.value,)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 1 for v in values):
        raise ValueError(f"batch_size options must be integers >= 1, got {list(values)}")
    return tuple(sorted({int(v) for v in values}))


def batch_config(space: SearchSpace, config: TrainConfig, family: ModelFamily) -> TrainConfig:
    """`config` as `space` trains it: a ``Fixed`` (or one-option) ``batch_size`` sets ``batch_size``, a
    ``Choice`` sets ``batch_sizes`` (each member its own, `fit_span`).

    Raises ValueError where members' batch sizes would change more than their updates: batch norm (a
    space's ``batch_norm`` that may be on) normalizes over the examples of a step, which are a chunk
    (`chunk_size`), not the member's batch.
    """
    sizes = batch_choices(space)
    if len(sizes) <= 1:
        return config._replace(batch_size=sizes[0]) if sizes else config
    norm = space.params.get("batch_norm")
    if norm is not None and True in (norm.options if isinstance(norm, Choice) else (norm.value,)):
        raise ValueError(f"a batch_size choice {list(sizes)} needs a network without batch norm (the "
                         f"{family.name} space here has it): its statistics would come from chunks of "
                         f"{math.gcd(*sizes)} examples, not the member's batch; fix one batch size instead")
    return config._replace(batch_sizes=sizes)


def batch_reader(space: SearchSpace) -> Callable | None:
    """``position_D -> i32[]`` the member's batch size (traceable), where `space` offers several; else None."""
    if len(batch_choices(space)) <= 1:
        return None
    value = value_reader(space, {})
    return lambda position_D: value(space.decode(position_D), "batch_size", 0)


def check_config(config: TrainConfig) -> None:
    """Raises ValueError on an unknown fitness or a non-positive loop length."""
    if config.fitness not in FITNESS_KINDS:
        raise ValueError(f"fitness must be one of {FITNESS_KINDS}, got {config.fitness!r}")
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {config.epochs}, {config.batch_size}")


def make_train(
    space: SearchSpace, config: TrainConfig, in_features: int, num_classes: int,
    *, input_shape: tuple[int, int, int] | None = None, branching: bool = False,
    family: ModelFamily | None = None,
) -> Trainer:
    """Builds the per-member trainer for `space` (its family's masked max-size network).

    Args:
      space: the search space; its family (`models.family_of`) picks the network.
      config: loop lengths and fitness.
      in_features, num_classes: F and C of the (flat) data.
      input_shape: ``(H, W, C)`` of one example (image families need it; data stays flat).
      branching: members that run only their own branches (for a layout that
        trains members one at a time, where a conditional runs one branch).
      family: the family, when the caller picked it already.

    Returns:
      A `Trainer`.
    """
    check_config(config)
    family = family_of(space) if family is None else family
    config = batch_config(space, config, family)
    mcfg = family.config(space, in_features, num_classes, input_shape, branching)
    hparams = family.decode(space, mcfg)
    optimizers, traced = optim.optimizer_names(space), optim.adam_hparams(space)
    batch_of = batch_reader(space)

    def member(position_D):
        arch, hp = hparams(position_D)
        init_fn = lambda k: family.init(k, arch, mcfg)
        apply_fn = lambda v, x, train, k: family.apply(v, x, arch, mcfg, train=train, key=k)
        return init_fn, apply_fn, hp, None if batch_of is None else batch_of(position_D)

    def train_member_warm(key, position_D, data: Data, variables, keep, shuffle_key=None):
        init_fn, apply_fn, hp, batch = member(position_D)
        opt = optim.make_optimizer(optimizers, total_steps(config, data.x_train.shape[0]), traced)
        return fit(key, init_fn, apply_fn, opt, hp, data, config, variables, keep, shuffle_key, batch_size=batch)

    def optimizer(n_train: int):
        return optim.make_optimizer(optimizers, total_steps(config, n_train), traced)

    def train_member_span(key, position_D, data: Data, state, start, num_epochs: int, shuffle_key=None):
        init_fn, apply_fn, hp, batch = member(position_D)
        return fit_span(key, init_fn, apply_fn, optimizer(data.x_train.shape[0]), hp, data, config, state, start,
                        num_epochs, shuffle_key=shuffle_key, batch_size=batch)

    def start_member(key, position_D, n_train: int, variables=None, keep=None) -> TrainState:
        """The `TrainState` `train_member_span(key, ...)` starts from (same key derivation as `fit`).

        With `variables` and `keep` true, the member's weights are `variables` (warm mode).
        """
        init_fn, _, hp, batch = member(position_D)
        steps = None if batch is None else member_steps(config, n_train, batch)
        return start_state(key, init_fn, optimizer(n_train), hp, variables, keep, steps)

    def train_member(key, position_D, data: Data | FoldData, shuffle_key=None) -> Metrics:
        if isinstance(data, FoldData):
            return cross_validate(train_member, key, position_D, data, serial=branching)
        return train_member_warm(key, position_D, data, None, None, shuffle_key)[0]

    def init_member(key, position_D):
        """The variables `train_member(key, ...)` starts from (same key derivation as `fit`)."""
        return member(position_D)[0](jax.random.split(key, 3)[0])

    return Trainer(train_member, train_member_warm, train_member_span, start_member, init_member, hparams, mcfg,
                   family)


def total_steps(config: TrainConfig, n_train: int) -> int:
    """Optimizer steps of one training run (the horizon of learning-rate decay)."""
    return config.epochs * (n_train // min(config.batch_size, n_train))


class FoldData(NamedTuple):
    """k-fold cross-validation: one pool of examples and k (train, val) index sets."""

    x: jax.Array  # f32[N, F]
    y: jax.Array  # i32[N]
    train_idx: jax.Array  # i32[K, N_train], K folds
    val_idx: jax.Array  # i32[K, N_val]


def fold_data(x, y, train_idx_KxN, val_idx_KxM) -> FoldData:
    """Puts a k-fold pool on the device (features flattened)."""
    return FoldData(
        jnp.asarray(np.asarray(x, np.float32).reshape(len(x), -1)),
        jnp.asarray(np.asarray(y, np.int32)),
        jnp.asarray(train_idx_KxN, jnp.int32),
        jnp.asarray(val_idx_KxM, jnp.int32),
    )


def cross_validate(train_member, key, position_D, folds: FoldData, serial: bool = False) -> Metrics:
    """Trains the member once per fold (vmapped over folds) and averages the metrics.

    Under the swarm's vmap this makes particles x folds one program. `serial`:
    one fold after another (`lax.map`), so the member's conditionals stay branches.
    """

    def one_fold(k, tr, va):
        data = Data(folds.x[tr], folds.y[tr], folds.x[va], folds.y[va])
        return train_member(k, position_D, data)

    keys = jax.random.split(key, folds.train_idx.shape[0])
    if serial:
        m = jax.lax.map(lambda a: one_fold(*a), (keys, folds.train_idx, folds.val_idx))
    else:
        m = jax.vmap(one_fold)(keys, folds.train_idx, folds.val_idx)
    return combine_folds(m)


def combine_folds(m_K: Metrics) -> Metrics:
    """One `Metrics` from per-fold ones (folds the leading axis; any axes after it are kept).

    Means over the folds; a member diverged in any fold is diverged (fitness
    -inf); ``fold_fitness`` holds each fold's fitness, folds last.
    """
    diverged = jnp.any(m_K.diverged, axis=0)
    return Metrics(
        fitness=jnp.where(diverged, -jnp.inf, m_K.fitness.mean(0)),
        val_accuracy=m_K.val_accuracy.mean(0),
        best_val_accuracy=m_K.best_val_accuracy.mean(0),
        val_loss=m_K.val_loss.mean(0),
        train_loss=m_K.train_loss.mean(0),
        val_accuracy_curve=m_K.val_accuracy_curve.mean(0),
        diverged=diverged,
        fold_fitness=jnp.moveaxis(m_K.fitness, 0, -1),
    )


class DenseTrainer(NamedTuple):
    """One configuration at a time, as a sequential tuner trains: dense at its real size."""

    train_position: Callable  # (key, position_D, data) -> Metrics; compiles once per configuration
    describe: Callable  # (position_D) -> (arch dict, OptHParams) on the host
    program: Callable  # (position_D, n_train) -> (jitted (key, hp, data) -> Metrics, hp): what train_position runs
    fit_position: Callable  # (key, position_D, data) -> (Metrics, variables): the trained network too
    model_config: Any  # the family's static config the dense network reads (its input shape, classes)
    span_program: Callable  # (position_D, n_train) -> (jitted (key, hp, data, state, start, num_epochs), hp)


def make_dense_train(
    space: SearchSpace, config: TrainConfig, in_features: int, num_classes: int,
    *, input_shape: tuple[int, int, int] | None = None, on_epoch: Callable | None = None,
    family: ModelFamily | None = None,
) -> DenseTrainer:
    """Builds the sequential counterpart of `make_train` on the SAME objective.

    Same decoding, data, loop, optimizer code and fitness as the swarm; the
    network is the family's dense network at the configuration's real size,
    with only the chosen optimizer, and one `jax.jit` per configuration (what a
    tuner that builds each trial's model pays). `on_epoch(epoch, train_loss,
    val_accuracy)`, when given, is called on the host after every epoch
    (progress for a long retrain; see `fit`).
    """
    check_config(config)
    family = family_of(space) if family is None else family
    space_config = batch_config(space, config, family)
    mcfg = family.config(space, in_features, num_classes, input_shape, False)
    hparams = family.decode(space, mcfg)
    optimizers, traced = optim.optimizer_names(space), optim.adam_hparams(space)
    batch_of = batch_reader(space)

    def describe(position_D):
        arch, hp = hparams(jnp.asarray(position_D, jnp.float32))
        return family.arch_to_python(arch), jax.tree.map(np.asarray, hp)

    def config_of(position_D) -> TrainConfig:
        """The configuration's own loop: its batch size where members' differ."""
        if batch_of is None:
            return space_config
        return space_config._replace(batch_size=int(batch_of(jnp.asarray(position_D, jnp.float32))))

    def parts(position_D, n_train: int):
        arch, hp = describe(position_D)
        optimizer = optim.make_optimizer(
            (optimizers[int(hp.optimizer)],), total_steps=total_steps(config_of(position_D), n_train), traced=traced
        )
        hp = jax.tree.map(jnp.asarray, hp._replace(optimizer=np.int32(0)))
        init_fn = lambda k: family.init_dense(k, arch, mcfg)
        apply_fn = lambda v, x, train, k: family.apply_dense(v, x, arch, mcfg, train=train, key=k)
        return init_fn, apply_fn, optimizer, hp

    def program(position_D, n_train: int, with_variables: bool = False):
        """(jitted `(key, hp, data) -> Metrics`, hp) for one configuration on `n_train` rows (benches time its compile).

        `with_variables`: the jitted function returns ``(Metrics, variables)``.
        """
        init_fn, apply_fn, optimizer, hp = parts(position_D, n_train)
        config = config_of(position_D)

        def run(k, h, d):
            metrics, variables = fit(k, init_fn, apply_fn, optimizer, h, d, config, on_epoch=on_epoch)
            return (metrics, variables) if with_variables else metrics

        return jax.jit(run), hp

    def span_program(position_D, n_train: int):
        """(jitted `(key, hp, data, state, start, num_epochs) -> (Metrics, TrainState)`, hp): `fit_span` for one
        configuration (`state` None: `start_state`'s, in the program; `start` traced, `num_epochs` static: one
        compile per span length). A tuner that decides between epochs whether to go on (Optuna's pruners)
        trains a span at a time and stops where it likes."""
        init_fn, apply_fn, optimizer, hp = parts(position_D, n_train)
        config = config_of(position_D)

        def run(k, h, d, state, start, num_epochs):
            if state is None:
                state = start_state(k, init_fn, optimizer, h)
            return fit_span(k, init_fn, apply_fn, optimizer, h, d, config, state, start, num_epochs)

        return jax.jit(run, static_argnums=5), hp

    def train_position(key, position_D, data: Data) -> Metrics:
        run, hp = program(position_D, data.x_train.shape[0])
        return run(key, hp, data)

    def fit_position(key, position_D, data: Data):
        run, hp = program(position_D, data.x_train.shape[0], with_variables=True)
        return run(key, hp, data)

    return DenseTrainer(train_position, describe, program, fit_position, mcfg, span_program)
