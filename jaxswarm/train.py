"""Train a whole swarm of structurally different networks as one program.

`make_train(space, config, in_features, num_classes)` returns a `Trainer` whose
`train_member(key, position_D, data)` trains ONE member from its unit-box
position: the position is decoded inside the program (`SearchSpace.decode` is
traceable), so depth, widths, activation and optimizer hyperparameters are
traced arrays and moving particles never recompiles (DESIGN.md decision 3).
`train_swarm` is `jit(vmap(train_member))` over the particle axis (decision
4), or with `layout="serial"` one `jit(lax.map(train_member))` that trains
the members one after another in the same compiled program (for the CNN on
CPU, where vmapped convolutions are slow and masking wastes most FLOPs); the epoch loop is a `lax.scan` over `lax.scan`-ed minibatches with the data
on the device and shuffling done on the device (decision 5). A member whose
loss goes NaN/inf is reported as diverged with the worst fitness (decision 6).

Fitness convention everywhere in jaxswarm: **higher is better** (validation
accuracy, or minus validation loss).

Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from jaxswarm.space import mlp_space
    >>> from jaxswarm.train import TrainConfig, make_train, device_data
    >>> space = mlp_space(max_layers=2, units=(4, 16))
    >>> x = np.random.rand(64, 8).astype(np.float32); y = (x[:, 0] > .5).astype(np.int32)
    >>> data = device_data(x[:48], y[:48], x[48:], y[48:])
    >>> trainer = make_train(space, TrainConfig(epochs=2, batch_size=16, max_layers=2, max_units=16), 8, 2)
    >>> pos = jax.random.uniform(jax.random.key(0), (4, space.num_dims))
    >>> keys = jax.random.split(jax.random.key(1), 4)
    >>> metrics = trainer.train_swarm(keys, pos, data)
    >>> metrics.fitness.shape
    (4,)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxswarm import models, optim
from jaxswarm.space import Choice, Fixed, SearchSpace

FITNESS_KINDS = ("accuracy", "loss")


class TrainConfig(NamedTuple):
    """Static training configuration (shapes and loop lengths; hashable)."""

    epochs: int = 5
    batch_size: int = 128
    max_layers: int = 3
    max_units: int = 256
    fitness: str = "accuracy"  # "accuracy" (val accuracy) or "loss" (minus val loss)
    eval_batch_size: int = 2048


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


class Trainer(NamedTuple):
    train_member: Callable  # (key, position_D, data, shuffle_key=None) -> Metrics
    train_swarm: Callable  # jit(vmap(train_member)) (serial: lax.map): (key_S, position_SxD, data) -> Metrics[S]
    hparams: Callable  # (position_D) -> (models.Arch, optim.OptHParams), traceable
    model_config: models.MLPConfig
    train_member_warm: Callable  # (key, position_D, data, variables, keep) -> (Metrics, variables)
    init_member: Callable  # (key, position_D) -> variables that train_member starts from


def device_data(x_train, y_train, x_val, y_val) -> Data:
    """Flattens features and puts the four arrays on the default device."""
    flat = lambda x: np.asarray(x, np.float32).reshape(len(x), -1)
    return Data(
        jnp.asarray(flat(x_train)),
        jnp.asarray(np.asarray(y_train, np.int32)),
        jnp.asarray(flat(x_val)),
        jnp.asarray(np.asarray(y_val, np.int32)),
    )


def _choice_table(space: SearchSpace, name: str, vocabulary: tuple[str, ...]):
    """Static table mapping the space's option index of `name` to `vocabulary`'s index."""
    param = space.params[name]
    unknown = [o for o in param.options if o not in vocabulary]
    if unknown:
        raise ValueError(f"{name} options {unknown} are not among the supported {list(vocabulary)}")
    return jnp.asarray([vocabulary.index(o) for o in param.options], jnp.int32)


def _check_space(space: SearchSpace, config: TrainConfig) -> None:
    for name in space.names:
        if name.startswith("units_"):
            k = int(name.split("_")[1])
            if k > config.max_layers:
                raise ValueError(f"space has {name} but max_layers={config.max_layers}")
    for name in ("activation", "optimizer", "batch_norm"):
        if name in space.names and not isinstance(space.params[name], Choice):
            raise ValueError(f"{name} must be a Choice, got {space.params[name]!r}")


def activation_names(space: SearchSpace) -> tuple[str, ...]:
    """The activations members of `space` may use: only these are computed under vmap."""
    p = space.params.get("activation")
    if p is None:
        return ("relu",)
    return tuple(p.options) if isinstance(p, Choice) else (p.value,)


def optimizer_names(space: SearchSpace) -> tuple[str, ...]:
    """The optimizers a member of `space` may use; `OptHParams.optimizer` indexes this tuple.

    Only these are built into the program (each keeps its own state and, under
    vmap, every one computes its update), so a space without an `optimizer`
    choice pays for Adam alone.
    """
    p = space.params.get("optimizer")
    if p is None:
        return ("adam",)
    options = tuple(p.options) if isinstance(p, Choice) else (p.value,)
    unknown = [o for o in options if o not in optim.OPTIMIZERS]
    if unknown:
        raise ValueError(f"optimizer options {unknown} are not among the supported {list(optim.OPTIMIZERS)}")
    return options


def value_reader(space: SearchSpace) -> Callable:
    """Returns `value(decoded, name, default)`: a hyperparameter in the model's vocabulary, traceable.

    Choices of activation / optimizer become indices into `models.ACTIVATION_NAMES`
    / `optimizer_names(space)`, `batch_norm` a bool; Fixed values are constants; a
    name the space lacks takes `default`. Shared by every model family's hparams.
    """
    optimizers = optimizer_names(space)
    vocabularies = {"activation": models.ACTIVATION_NAMES, "optimizer": optimizers}
    tables = {name: _choice_table(space, name, vocab) for name, vocab in vocabularies.items()
              if name in space.names and isinstance(space.params[name], Choice)}
    if "batch_norm" in space.names and isinstance(space.params["batch_norm"], Choice):
        tables["batch_norm"] = jnp.asarray([bool(o) for o in space.params["batch_norm"].options])
    fixed = {n: p.value for n, p in space.params.items() if isinstance(p, Fixed)}

    def value(v, name, default):
        if name in tables and name in v:
            return tables[name][v[name]]
        if name in v:
            return v[name]
        if name in fixed:
            f = fixed[name]
            return jnp.asarray(vocabularies[name].index(f) if name in vocabularies else f)
        return jnp.asarray(default)

    return value


def opt_hparams(value: Callable, v: dict) -> optim.OptHParams:
    """The optimizer hyperparameters of one decoded position (defaults: Adam, lr 1e-3, momentum 0.9)."""
    return optim.OptHParams(
        optimizer=jnp.asarray(value(v, "optimizer", 0), jnp.int32),  # index into optimizer_names(space)
        learning_rate=jnp.asarray(value(v, "learning_rate", 1e-3), jnp.float32),
        momentum=jnp.asarray(value(v, "momentum", 0.9), jnp.float32),
        weight_decay=jnp.asarray(value(v, "weight_decay", 0.0), jnp.float32),
        lr_decay=jnp.asarray(value(v, "lr_decay", 1.0), jnp.float32),
    )


def make_hparams(space: SearchSpace, config: TrainConfig) -> Callable:
    """Returns `hparams(position_D) -> (Arch, OptHParams)`, traceable.

    Names follow `space.mlp_space`: n_layers, units_1..units_L, activation,
    learning_rate, optimizer, momentum, weight_decay, lr_decay, dropout,
    batch_norm. A name the space lacks takes its default (max depth and width,
    relu, adam, lr 1e-3, momentum 0.9, no decay, no dropout, no batch norm).
    """
    _check_space(space, config)
    L, H = config.max_layers, config.max_units
    value = value_reader(space)

    def hparams(position_D):
        v = space.decode(position_D)
        n_layers = jnp.clip(value(v, "n_layers", L), 1, L).astype(jnp.int32)
        units = jnp.stack([value(v, f"units_{k + 1}", H) for k in range(L)])
        arch = models.Arch(
            n_layers=n_layers,
            units=jnp.clip(units, 1, H).astype(jnp.int32),
            activation=jnp.asarray(value(v, "activation", models.ACTIVATION_NAMES.index("relu")), jnp.int32),
            dropout=jnp.asarray(value(v, "dropout", 0.0), jnp.float32),
            batch_norm=jnp.asarray(value(v, "batch_norm", False), bool),
        )
        return arch, opt_hparams(value, v)

    return hparams


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

    Returns:
      (`Metrics` for this member, its final variables).
    """
    n = data.x_train.shape[0]
    batch = min(config.batch_size, n)
    steps = n // batch
    k_init, k_epochs, _ = jax.random.split(key, 3)  # 3 kept: init_member derives k_init the same way
    fresh = init_fn(k_init)
    if variables is not None:
        fresh = jax.tree.map(lambda v, f: jnp.where(keep, v, f), variables, fresh)
    variables = fresh
    opt_state = optimizer.init(variables["params"], opt_hparams)

    def loss_fn(params, stats, x, y, k):
        logits, new_stats = apply_fn({"params": params, "batch_stats": stats}, x, True, k)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, new_stats

    def step(carry, inputs):
        params, stats, opt_state = carry
        idx_B, k = inputs
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, stats, data.x_train[idx_B], data.y_train[idx_B], k
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    def epoch(carry, inputs):
        k_drop, k_perm, e = inputs
        idx_TxB = jax.random.permutation(k_perm, n)[: steps * batch].reshape(steps, batch)
        carry, loss_T = jax.lax.scan(step, carry, (idx_TxB, jax.random.split(k_drop, steps)))
        params, stats, _ = carry
        acc, vloss = evaluate(apply_fn, {"params": params, "batch_stats": stats}, data, config)
        if on_epoch is not None:
            jax.debug.callback(on_epoch, e, loss_T.mean(), acc, ordered=True)
        return carry, (loss_T.mean(), acc, vloss)

    carry = (variables["params"], variables["batch_stats"], opt_state)
    epoch_keys = jax.random.split(k_epochs, config.epochs)  # dropout of each epoch
    if shuffle_key is None:
        shuffle_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(epoch_keys)
    else:
        shuffle_keys = jax.random.split(shuffle_key, config.epochs)
    (params, stats, _), (train_loss_E, acc_E, vloss_E) = jax.lax.scan(
        epoch, carry, (epoch_keys, shuffle_keys, jnp.arange(config.epochs)))
    diverged = ~(jnp.all(jnp.isfinite(train_loss_E)) & jnp.isfinite(vloss_E[-1]))
    raw = acc_E[-1] if config.fitness == "accuracy" else -vloss_E[-1]
    metrics = Metrics(
        fitness=jnp.where(diverged, -jnp.inf, raw),
        val_accuracy=jnp.where(diverged, 0.0, acc_E[-1]),
        best_val_accuracy=jnp.where(diverged, 0.0, jnp.max(acc_E)),
        val_loss=vloss_E[-1],
        train_loss=train_loss_E,
        val_accuracy_curve=acc_E,
        diverged=diverged,
    )
    return metrics, {"params": params, "batch_stats": stats}


def eval_chunks(data: Data, config: TrainConfig):
    """The validation set cut into equal chunks (the last padded): x f32[K, C, ...], y i32[K, C], valid bool[K, C]."""
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
        x_C, y_C, valid_C = inputs
        logits, _ = apply_fn(variables, x_C, False, None)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_C)
        correct = (jnp.argmax(logits, -1) == y_C) & valid_C
        return (totals[0] + correct.sum(), totals[1] + jnp.where(valid_C, loss, 0.0).sum()), None

    (correct, loss), _ = jax.lax.scan(body, (jnp.zeros((), jnp.int32), jnp.zeros(())), (x, y, valid))
    return correct / m, loss / m


MODELS = ("mlp", "cnn")
LAYOUTS = ("masked", "serial")  # make_train's; the tuner adds "packed" (jaxswarm.packed)


def model_of(space: SearchSpace) -> str:
    """The model family a space describes: "cnn" when it has conv blocks (`cnn.cnn_space`), else "mlp"."""
    return "cnn" if "n_blocks" in space.names else "mlp"


def _model_fns(space, config, in_features, num_classes, model, input_shape, serial=False):
    """(model config, hparams, member(position) -> (init_fn, apply_fn, hp)) for `model`.

    The CNN reads the same flat data as the MLP: `cnn.apply_cnn` reshapes
    `[B, H*W*C]` to `[B, H, W, C]`, so `Data`, `evaluate` and `fold_data` are shared.
    """
    model = model_of(space) if model is None else model
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if model == "cnn":
        from jaxswarm import cnn

        if input_shape is None or int(np.prod(input_shape)) != in_features:
            raise ValueError(f"model='cnn' needs input_shape (H, W, C) with H*W*C == {in_features}, got {input_shape!r}")
        mcfg = cnn.CNNConfig(tuple(int(d) for d in input_shape), num_classes, **cnn.cnn_limits(space),
                             branching=serial)
        hparams, init, apply = cnn.cnn_hparams(space, mcfg), cnn.init_cnn, cnn.apply_cnn
    else:
        mcfg = models.MLPConfig(in_features, num_classes, config.max_layers, config.max_units,
                                activations=activation_names(space))
        hparams, init, apply = make_hparams(space, config), models.init_mlp, models.apply_mlp

    def member(position_D):
        arch, hp = hparams(position_D)
        init_fn = lambda k: init(k, arch, mcfg)
        apply_fn = lambda v, x, train, k: apply(v, x, arch, mcfg, train=train, key=k)
        return init_fn, apply_fn, hp

    return mcfg, hparams, member


def make_train(
    space: SearchSpace, config: TrainConfig, in_features: int, num_classes: int,
    *, model: str | None = None, input_shape: tuple[int, int, int] | None = None, layout: str = "masked",
) -> Trainer:
    """Builds the per-member trainer and its jitted swarm version for `space`.

    `model="cnn"` trains `jaxswarm.cnn`'s masked CNN (names of `cnn.cnn_space`)
    on images of `input_shape` (data still flat, `[N, H*W*C]`).

    `layout="serial"` builds the members for training one at a time
    (`train_swarm` is `jit(lax.map(train_member))`; `jaxswarm.scale` runs it
    with chunk size 1): the CNN then runs only its own blocks, kernel window
    and head (`cnn.CNNConfig.branching`) at the speed of a plain convolution.
    Still one compile per study; the MLP computes the same as masked.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if config.fitness not in FITNESS_KINDS:
        raise ValueError(f"fitness must be one of {FITNESS_KINDS}, got {config.fitness!r}")
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {config.epochs}, {config.batch_size}")
    mcfg, hparams, member = _model_fns(space, config, in_features, num_classes, model, input_shape,
                                       serial=layout == "serial")
    optimizers = optimizer_names(space)

    def train_member_warm(key, position_D, data: Data, variables, keep, shuffle_key=None):
        init_fn, apply_fn, hp = member(position_D)
        opt = optim.make_optimizer(optimizers, total_steps=total_steps(config, data.x_train.shape[0]))
        return fit(key, init_fn, apply_fn, opt, hp, data, config, variables, keep, shuffle_key)

    def train_member(key, position_D, data: Data | FoldData, shuffle_key=None) -> Metrics:
        if isinstance(data, FoldData):
            return _cross_validate(train_member, key, position_D, data, serial=layout == "serial")
        return train_member_warm(key, position_D, data, None, None, shuffle_key)[0]

    def init_member(key, position_D):
        """The variables `train_member(key, ...)` starts from (same key derivation as `fit`)."""
        return member(position_D)[0](jax.random.split(key, 3)[0])

    if layout == "serial":
        train_swarm = jax.jit(lambda keys, positions, data: jax.lax.map(
            lambda kp: train_member(kp[0], kp[1], data), (keys, positions)))
    else:
        train_swarm = jax.jit(jax.vmap(train_member, in_axes=(0, 0, None)))
    return Trainer(train_member, train_swarm, hparams, mcfg, train_member_warm, init_member)


def total_steps(config: TrainConfig, n_train: int) -> int:
    """Optimizer steps of one training run (the horizon of learning-rate decay)."""
    return config.epochs * (n_train // min(config.batch_size, n_train))


class FoldData(NamedTuple):
    """k-fold cross-validation: one pool of examples and k (train, val) index sets."""

    x: jax.Array  # f32[N, F]
    y: jax.Array  # i32[N]
    train_idx: jax.Array  # i32[K, N_train]
    val_idx: jax.Array  # i32[K, N_val]


def fold_data(x, y, train_idx_KxN, val_idx_KxM) -> FoldData:
    """Puts a k-fold pool on the device (features flattened)."""
    return FoldData(
        jnp.asarray(np.asarray(x, np.float32).reshape(len(x), -1)),
        jnp.asarray(np.asarray(y, np.int32)),
        jnp.asarray(train_idx_KxN, jnp.int32),
        jnp.asarray(val_idx_KxM, jnp.int32),
    )


def _cross_validate(train_member, key, position_D, folds: FoldData, serial: bool = False) -> Metrics:
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
    diverged = jnp.any(m.diverged)
    return Metrics(
        fitness=jnp.where(diverged, -jnp.inf, m.fitness.mean()),
        val_accuracy=m.val_accuracy.mean(),
        best_val_accuracy=m.best_val_accuracy.mean(),
        val_loss=m.val_loss.mean(),
        train_loss=m.train_loss.mean(0),
        val_accuracy_curve=m.val_accuracy_curve.mean(0),
        diverged=diverged,
    )


class DenseTrainer(NamedTuple):
    """One configuration at a time, as a sequential tuner trains: dense at its real size."""

    train_position: Callable  # (key, position_D, data) -> Metrics; compiles once per configuration
    describe: Callable  # (position_D) -> (arch dict, OptHParams) on the host
    program: Callable  # (position_D, n_train) -> (jitted (key, hp, data) -> Metrics, hp): what train_position runs


def make_dense_train(
    space: SearchSpace, config: TrainConfig, in_features: int, num_classes: int,
    *, model: str | None = None, input_shape: tuple[int, int, int] | None = None,
    on_epoch: Callable | None = None,
) -> DenseTrainer:
    """Builds the sequential counterpart of `make_train` on the SAME objective.

    Same decoding, data, loop, optimizer code and fitness as the swarm; the
    network is `models.init_dense`/`apply_dense` at the configuration's real
    size, with only the chosen optimizer, and one `jax.jit` per configuration
    (what a tuner that builds each trial's model pays). Used by
    `jaxswarm.baselines`, by a study's retrain and by the benchmarks.
    `on_epoch(epoch, train_loss, val_accuracy)`, when given, is called on the
    host after every epoch (progress for a long retrain; see `fit`).
    """
    model = model_of(space) if model is None else model
    _, hparams, _ = _model_fns(space, config, in_features, num_classes, model, input_shape)
    if model == "cnn":
        from jaxswarm import cnn

        to_python, shape = cnn.cnn_arch_to_python, tuple(int(d) for d in input_shape)
        dense_init = lambda k, arch: cnn.init_dense_cnn(k, arch, shape, num_classes)
        dense_apply = lambda v, x, arch, **kw: cnn.apply_dense_cnn(v, x.reshape(-1, *shape), arch, **kw)
    else:
        to_python = models.arch_to_python
        dense_init = lambda k, arch: models.init_dense(k, arch, in_features, num_classes)
        dense_apply = models.apply_dense

    def describe(position_D):
        arch, hp = hparams(jnp.asarray(position_D, jnp.float32))
        return to_python(arch), jax.tree.map(np.asarray, hp)

    def program(position_D, n_train: int):
        """(jitted `(key, hp, data) -> Metrics`, hp) for one configuration on `n_train` rows (benches time its compile)."""
        arch, hp = describe(position_D)
        optimizer = optim.make_optimizer(
            (optimizer_names(space)[int(hp.optimizer)],), total_steps=total_steps(config, n_train)
        )
        hp = jax.tree.map(jnp.asarray, hp._replace(optimizer=np.int32(0)))
        init_fn = lambda k: dense_init(k, arch)

        def apply_fn(v, x, train, k):
            return dense_apply(v, x, arch, train=train, key=k, return_batch_stats=True)

        return jax.jit(lambda k, h, d: fit(k, init_fn, apply_fn, optimizer, h, d, config,
                                           on_epoch=on_epoch)[0]), hp

    def train_position(key, position_D, data: Data) -> Metrics:
        run, hp = program(position_D, data.x_train.shape[0])
        return run(key, hp, data)

    return DenseTrainer(train_position, describe, program)
