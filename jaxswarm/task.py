"""Your own network, loss and data under the swarm: the Task protocol and its engine.

Two tiers, the lower one for any training loop:

* A *trainable* is a training loop as pure functions over an opaque state
  pytree: ``init(key, hp) -> state``, ``train(state, hp, key, epochs) -> state``
  and ``evaluate(state, hp) -> {metric: scalar}``. A `Builder` makes one from a
  member's *static* hyperparameters (Python values: widths, depth, the
  optimizer's kind); ``hp`` holds its *traced* ones (float32 arrays: learning
  rate, dropout), so moving a float never recompiles.
* A `Task` is a supervised problem (a Flax module, a loss, metrics, an
  objective, an optimizer and data of any pytree shape) and builds a
  trainable (`supervised`); it is not a second engine.

`make_engine` trains a swarm of any builder: the members are grouped by their
static values and each group trains in a `jax.jit(jax.vmap(...))` program of
``group_size`` members at a time (the rest in calls of powers of two), so a
static signature compiles at most ``2 + log2(group_size)`` program sizes, each
reused whenever the swarm comes back to it.

Example:
    >>> import flax.linen as nn, numpy as np, optax
    >>> from jaxswarm.space import Float, Int, SearchSpace
    >>> class Net(nn.Module):
    ...     width: int
    ...     @nn.compact
    ...     def __call__(self, x, hp, train):
    ...         return nn.Dense(1)(nn.relu(nn.Dense(self.width)(x)))[:, 0]
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    >>> data = TaskData({"x": x[:48], "y": x[:48, 0]}, {"x": x[48:], "y": x[48:, 0]})
    >>> task = Task(lambda static: Net(static["width"]), mse_loss, regression_metrics,
    ...             Objective("mse", "min"), data, batch_size=16)
    >>> space = SearchSpace({"width": Int(2, 4), "learning_rate": Float(1e-3, 1e-1, log=True)})
    >>> engine = make_engine(supervised(task), space, epochs=2, objective=task.objective)
    >>> result = engine.train(jax.random.split(jax.random.key(0), 4), np.full((4, 2), 0.5, np.float32))
    >>> result.fitness.shape
    (4,)
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxswarm import ops, optim
from jaxswarm.costs import memory_analysis
from jaxswarm.space import Choice, Fixed, Float, Int, SearchSpace

__all__ = ["TaskError", "Objective", "Trainable", "Builder", "TaskData", "Task", "SupervisedState",
           "supervised", "softmax_loss", "classification_metrics", "mse_loss", "regression_metrics",
           "default_optimizer", "static_names", "run_member", "joined", "data_digest", "predictor",
           "fit_winner", "TaskMetrics", "load_task", "TrainingLoop", "builder", "SwarmResult", "Engine",
           "make_engine", "MAX_STATIC_VALUES", "MLP", "mlp_task", "mlp_task_space", "LOSSES",
           "CNN", "CNN_DEFAULTS", "Conv", "cnn_task", "cnn_task_space"]

# A static Int compiles a program per value it takes: past this many values, bucket it or trace it.
MAX_STATIC_VALUES = 32


class TaskError(ValueError):
    """Your task's own code failed for a member (its model, loss or metrics): the message names the member's
    static hyperparameters and the first line of the cause (chained)."""


class Objective(NamedTuple):
    """Which metric a study optimizes, and which way."""

    metric: str  # a key of the metrics dict
    direction: str = "max"  # "max" or "min"

    def fitness(self, metrics: dict) -> jax.Array:
        """The metric as a fitness (larger is better; NaN and inf are the worst, -inf)."""
        if self.direction not in ("max", "min"):
            raise ValueError(f"an objective's direction is 'max' or 'min', got {self.direction!r}")
        if self.metric not in metrics:
            raise ValueError(f"the objective's metric {self.metric!r} is not among the metrics {sorted(metrics)}")
        value = jnp.asarray(metrics[self.metric], jnp.float32)
        value = value if self.direction == "max" else -value
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)


class Trainable(NamedTuple):
    """A training loop as pure functions over an opaque state pytree (one member, no swarm axis)."""

    init: Callable  # (key, hp) -> state
    train: Callable  # (state, hp, key, epochs: int) -> state; `epochs` is static
    evaluate: Callable  # (state, hp) -> {metric name: f32[]}


Builder = Callable[[dict], Trainable]  # a member's static hyperparameters -> its trainable


class TaskData(NamedTuple):
    """A supervised task's data: pytrees of arrays (dicts of images, sequences, targets) with a leading
    example axis of one length within each split. A study trains its members on ``train``, scores them on
    ``val``, and retrains its winner on both, scored on ``test`` (None: the winner trains unscored)."""

    train: Any
    val: Any
    test: Any = None

    @classmethod
    def from_dataset(cls, dataset) -> TaskData:
        """A `data.Dataset`'s splits as ``{"x": images [N, H, W, C], "y": labels}`` batches (no test split when it
        has no test rows)."""
        def split(x, y):
            return {"x": np.asarray(x), "y": np.asarray(y)}

        test = split(dataset.x_test, dataset.y_test) if len(dataset.y_test) else None
        return cls(split(dataset.x_train, dataset.y_train), split(dataset.x_val, dataset.y_val), test)


class Task(NamedTuple):
    """A supervised problem: your model, loss, metrics and data.

    Attributes:
        model: ``model(static) -> flax.linen.Module``, called as ``module(inputs, hp, train)`` where
            ``hp`` is the member's traced hyperparameters (a dict of f32 scalars) and ``train`` a bool;
            dropout draws from the ``"dropout"`` rng.
        loss: ``loss(outputs, batch) -> f32[]``, the mean over the batch.
        metrics: ``metrics(outputs, batch) -> {name: f32[]}``, each a mean over the batch.
        objective: the metric the swarm optimizes (`Objective`).
        data: `TaskData`.
        optimizer: ``optimizer(hp) -> optax.GradientTransformation``, built inside the member's
            program so its float hyperparameters are traced; its ``hp`` also holds the member's static
            values as Python values (an optimizer's name to branch on). None: `default_optimizer`.
        batch_size: training minibatch size, capped at the training rows (None: a study's
            ``batch_size``; 64 outside a study).
        inputs: ``inputs(batch) -> model inputs`` (default: ``batch["x"]``).
        eval_batch_size: validation chunk size.
        space: the `SearchSpace` a study of this task searches when it is given none (the command
            line's ``--task``).
    """

    model: Callable
    loss: Callable
    metrics: Callable
    objective: Objective
    data: TaskData
    optimizer: Callable | None = None
    batch_size: int | None = None
    inputs: Callable | None = None
    eval_batch_size: int = 1024
    space: SearchSpace | None = None


class TrainingLoop(NamedTuple):
    """Your own training loop (the lower tier: reinforcement learning, anything not supervised) as a study
    takes it: `tune(space, loop)` and ``jaxswarm run --task`` serve it as they serve a `Task`.

    Its winner retrains from fresh (``init``, ``epochs`` of ``train``) and is scored by ``evaluate``;
    there is no test split and no ``predict``: the saved model is its state.

    Attributes:
        build: ``static dict -> Trainable`` (the `Builder` that `make_engine` takes).
        objective: the metric of ``evaluate`` the swarm optimizes.
        space: the `SearchSpace` a study searches when given none.
        fingerprint: a string naming what the loop trains on (an environment and its settings): a study
            resumes only with the same one (study.json records it).
    """

    build: Callable
    objective: Objective
    space: SearchSpace | None = None
    fingerprint: str = ""


def builder(problem) -> Builder:
    """The `Builder` of a `Task` (`supervised`) or a `TrainingLoop` (its own)."""
    return problem.build if isinstance(problem, TrainingLoop) else supervised(problem)


def load_task(path: str):
    """The `Task` or `TrainingLoop` at ``module:attribute`` (an import path, as uvicorn takes an app): the
    attribute is one, or a function of no arguments returning one. The current folder is importable, as it is
    for ``python -c``.

    Raises:
        ValueError: one line when the path is malformed, does not import, or names no Task.
    """
    module, _, attribute = str(path).partition(":")
    if not module or not attribute:
        raise ValueError(f"a task is named module:attribute (e.g. mytasks:task), got {path!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = getattr(importlib.import_module(module), attribute)
    except ImportError as e:
        raise ValueError(f"cannot import {module!r} for task {path!r}: {e}") from None
    except AttributeError:
        raise ValueError(f"module {module!r} has no attribute {attribute!r} (task {path!r})") from None
    if callable(obj) and not isinstance(obj, (Task, TrainingLoop)):
        obj = obj()
    if not isinstance(obj, (Task, TrainingLoop)):
        raise ValueError(f"{path!r} is a {type(obj).__name__}, not a jaxswarm Task or TrainingLoop")
    return obj


def softmax_loss(logits, batch) -> jax.Array:
    """Mean softmax cross-entropy of ``logits [B, C]`` against integer ``batch["y"]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def classification_metrics(logits, batch) -> dict:
    """``accuracy`` and ``loss`` (cross-entropy) of ``logits [B, C]`` against integer ``batch["y"]``."""
    return {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"]), "loss": softmax_loss(logits, batch)}


def mse_loss(predictions, batch) -> jax.Array:
    """Mean squared error of ``predictions`` against ``batch["y"]``."""
    return jnp.mean((predictions - batch["y"]) ** 2)


def regression_metrics(predictions, batch) -> dict:
    """``mse`` and ``mae`` of ``predictions`` against ``batch["y"]``."""
    error = predictions - batch["y"]
    return {"mse": jnp.mean(error**2), "mae": jnp.mean(jnp.abs(error))}


def default_optimizer(hp: dict) -> optax.GradientTransformation:
    """The built-in networks' optimizer choice: ``hp["optimizer"]`` by name where the space has one (a
    `Choice` of `optim.OPTIMIZERS`: `optim.plain_optimizer`, with the space's ``momentum``,
    ``weight_decay``, ``beta2`` and ``eps`` where it tunes them, `optim.DEFAULTS` where not). A space
    without one trains Adam, or AdamW when it tunes ``weight_decay``. The learning rate is
    ``hp["learning_rate"]`` (1e-3 when the space has none)."""
    learning_rate = hp.get("learning_rate", optim.DEFAULTS["learning_rate"])
    if "optimizer" in hp:
        return optim.plain_optimizer(hp["optimizer"], learning_rate,
                                     *(hp.get(n, optim.DEFAULTS[n]) for n in ("momentum", "weight_decay", "beta2",
                                                                               "eps")))
    if "weight_decay" in hp:
        return optax.adamw(learning_rate, weight_decay=hp["weight_decay"])
    return optax.adam(learning_rate)


ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "sigmoid": nn.sigmoid, "elu": nn.elu, "gelu": nn.gelu}
LOSSES = ("cross_entropy", "mse")  # the MLP preset's losses (`mlp_task`)


class MLP(nn.Module):
    """The MLP preset's network: inputs flattened, ``depth`` hidden layers of ``width`` ``activation`` units
    (inverted dropout at the traced ``hp["dropout"]`` while training, where the space tunes one), then
    ``outputs`` linear outputs (one, squeezed to ``[B]``, when ``squeeze``)."""

    depth: int
    width: int
    outputs: int
    activation: str = "relu"
    squeeze: bool = False

    @nn.compact
    def __call__(self, x, hp, train):
        x = x.reshape(x.shape[0], -1)
        for _ in range(self.depth):
            x = _dropout(self, ACTIVATIONS[self.activation](nn.Dense(self.width)(x)), hp, train)
        x = nn.Dense(self.outputs)(x)
        return x[:, 0] if self.squeeze else x


def _dropout(module: nn.Module, x, hp: dict, train: bool):
    """Inverted dropout at the traced rate ``hp["dropout"]`` while training (where the space tunes one)."""
    if not train or "dropout" not in hp:
        return x
    rate = hp["dropout"]
    keep = jax.random.uniform(module.make_rng("dropout"), x.shape) >= rate
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class Conv(nn.Module):
    """`flax.linen.Conv` of stride 1 and 'SAME' padding (its initializers, its ``kernel`` and ``bias``), computed
    by `ops.conv2d`: as matmuls on a CPU, where XLA runs a convolution inside the training loop (a `lax.scan`
    of minibatch steps, as every member trains) several times slower. Use it for your own CNN's convolutions
    on a CPU: a Flax ``nn.Conv`` CNN's epoch took 20.1 s there against 3.3 s as a Python loop of steps
    (bench/NOTES.md)."""

    features: int
    kernel: int

    @nn.compact
    def __call__(self, x):
        shape = (self.kernel, self.kernel, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        return ops.conv2d(x, kernel, self.param("bias", nn.initializers.zeros_init(), (self.features,)))


CNN_DEFAULTS = {"blocks": 1, "filters": 32, "kernel": 3, "dense": 128, "activation": "relu"}  # the CNN preset's


class CNN(nn.Module):
    """The CNN preset's network: ``blocks`` conv blocks, block ``b`` a ``kernel`` x ``kernel`` 'SAME' convolution
    of ``filters * 2**b`` channels, ``activation`` and 2x2 max pooling; then a ``dense``-unit ``activation``
    layer and ``outputs`` logits. Inverted dropout at the traced ``hp["dropout"]`` follows every block and the
    dense layer while training, where the space tunes one. Images ``[B, H, W]`` get a channel axis."""

    blocks: int
    filters: int
    kernel: int
    dense: int
    outputs: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, hp, train):
        act = ACTIVATIONS[self.activation]
        x = x[..., None] if x.ndim == 3 else x
        for b in range(self.blocks):
            x = act(Conv(self.filters * 2**b, self.kernel)(x))
            x = _dropout(self, ops.pool2x2(x), hp, train)
        x = _dropout(self, act(nn.Dense(self.dense)(x.reshape(x.shape[0], -1))), hp, train)
        return nn.Dense(self.outputs)(x)


def mlp_task_space(depths=(1, 2), widths=(32, 128), activations=("relu",), learning_rate=(1e-4, 3e-2),
                   weight_decay=(1e-6, 1e-1), dropout=None, optimizers=None) -> SearchSpace:
    """The MLP preset's space: ``depth``, ``width`` and ``activation`` static Choices (each combination one
    program), ``learning_rate`` and ``weight_decay`` traced (log scale; None leaves one out), ``dropout`` a
    traced rate range where given, ``optimizer`` a static Choice of `optim.OPTIMIZERS` names where given.

    Example:
        >>> mlp_task_space().names
        ('depth', 'width', 'learning_rate', 'weight_decay')
    """
    params: dict = {"depth": Choice(list(depths)), "width": Choice(list(widths))}
    if len(activations) > 1 or tuple(activations) != ("relu",):
        params["activation"] = Choice(list(activations))
    return _preset_space(params, learning_rate, weight_decay, dropout, optimizers)


def _preset_space(static: dict, learning_rate, weight_decay, dropout, optimizers) -> SearchSpace:
    """A preset's space: its `static` Choices, then ``optimizer`` (a static Choice of names where given),
    ``learning_rate`` and ``weight_decay`` (traced, log scale; None leaves one out) and ``dropout`` (a traced
    rate range where given)."""
    params = dict(static)
    if optimizers is not None:
        params["optimizer"] = Choice(list(optimizers))
    for name, bounds in (("learning_rate", learning_rate), ("weight_decay", weight_decay)):
        if bounds is not None:
            params[name] = Float(*bounds, log=True)
    if dropout is not None:
        params["dropout"] = Float(*dropout)
    return SearchSpace(params)


def cnn_task_space(blocks=(1, 2), filters=(16, 32), kernels=(3,), dense=(64, 128), activations=("relu",),
                   learning_rate=(1e-4, 3e-2), weight_decay=(1e-6, 1e-1), dropout=None,
                   optimizers=None) -> SearchSpace:
    """The CNN preset's space: ``blocks``, ``filters``, ``kernel``, ``dense`` and ``activation`` static Choices
    (left out where it is the network's one default, `CNN_DEFAULTS`), ``learning_rate`` and ``weight_decay``
    traced (log scale; None leaves one out), ``dropout`` a traced rate range where given, ``optimizer`` a static Choice
    of `optim.OPTIMIZERS` names where given. Every combination of static values is one program: 2 x 2 x 2
    by default.

    Example:
        >>> cnn_task_space().names
        ('blocks', 'filters', 'dense', 'learning_rate', 'weight_decay')
    """
    params: dict = {}
    for name, values in (("blocks", blocks), ("filters", filters), ("kernel", kernels), ("dense", dense),
                         ("activation", activations)):
        if tuple(values) != (CNN_DEFAULTS[name],):
            params[name] = Choice(list(values))
    return _preset_space(params, learning_rate, weight_decay, dropout, optimizers)


def cnn_task(data: TaskData, space: SearchSpace | None = None, batch_size: int | None = None) -> Task:
    """The CNN preset as a classification `Task` on your images (``{"x": f32[N, H, W] or [N, H, W, C], "y":
    integer labels}`` per split, e.g. `TaskData.from_dataset(load_dataset("fashion_mnist"))`): ``accuracy``
    maximized, ``loss`` (cross-entropy) reported.

    Args:
        data: `TaskData` of images and integer labels.
        space: the task's `SearchSpace` (None: `cnn_task_space()`); its ``blocks``, ``filters``, ``kernel``,
            ``dense`` and ``activation`` shape the network (`CNN_DEFAULTS` where absent).
        batch_size: training minibatch (None: the study's).
    """
    x = np.asarray(data.train["x"])
    if x.ndim not in (3, 4):
        raise ValueError(f"the CNN preset takes images as x, [N, H, W] or [N, H, W, C]; got shape {x.shape} "
                         "(flat features: use mlp_task)")
    outputs = _num_classes(data, "the CNN preset classifies: y must be integer class labels")

    def model(static: dict) -> CNN:
        shape = {**CNN_DEFAULTS, **{n: v for n, v in static.items() if n in CNN_DEFAULTS}}
        return CNN(**shape, outputs=outputs)

    return Task(model, softmax_loss, classification_metrics, Objective("accuracy"), data, batch_size=batch_size,
                space=cnn_task_space() if space is None else space)


def _num_classes(data: TaskData, refusal: str) -> int:
    """The classes of `data`'s integer labels ``y`` (every split's): the largest label + 1; `refusal` is the
    ValueError's message where a split's labels are not integers."""
    y = [np.asarray(split["y"]) for split in data if split is not None]
    if not all(np.issubdtype(labels.dtype, np.integer) for labels in y):
        raise ValueError(refusal)
    return int(max(labels.max() for labels in y)) + 1


def mlp_task(data: TaskData, loss: str = "cross_entropy", space: SearchSpace | None = None,
             batch_size: int | None = None) -> Task:
    """The MLP preset as a `Task` on your data (``{"x": features or images, "y": targets}`` per split).

    Args:
        data: `TaskData` (e.g. `TaskData.from_dataset(load_dataset("digits"))`, or your arrays).
        loss: ``"cross_entropy"`` (integer labels; ``accuracy`` maximized, ``loss`` reported) or ``"mse"``
            (float targets ``[N]`` or ``[N, K]``; ``mse`` minimized, ``mae`` reported).
        space: the task's `SearchSpace` (None: `mlp_task_space()`); its ``depth``, ``width`` and
            ``activation`` shape the network (1, 64 and relu when absent).
        batch_size: training minibatch (None: the study's).

    Example:
        >>> x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
        >>> task = mlp_task(TaskData({"x": x[:30], "y": x[:30, 0]}, {"x": x[30:], "y": x[30:, 0]}), loss="mse")
        >>> task.objective
        Objective(metric='mse', direction='min')
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "mse":
        y = np.asarray(data.train["y"])
        outputs, squeeze = (1, True) if y.ndim == 1 else (int(np.prod(y.shape[1:])), False)
        losses, objective = (mse_loss, regression_metrics), Objective("mse", "min")
    else:
        outputs = _num_classes(data, "loss 'cross_entropy' takes integer class labels as y; use loss 'mse' for "
                                     "float targets")
        squeeze, losses, objective = False, (softmax_loss, classification_metrics), Objective("accuracy")

    def model(static: dict) -> MLP:
        return MLP(int(static.get("depth", 1)), int(static.get("width", 64)), outputs,
                   static.get("activation", "relu"), squeeze)

    return Task(model, *losses, objective, data, batch_size=batch_size,
                space=mlp_task_space() if space is None else space)


class SupervisedState(NamedTuple):
    """A supervised member's training state."""

    params: Any  # the module's parameters
    collections: Any  # its other variable collections (e.g. batch_stats), {} if none
    opt_state: Any
    epoch: jax.Array  # int32: epochs trained so far (each epoch's keys fold it in)


def _rows(tree) -> int:
    """The one leading length of every leaf of `tree` (a clear error when they differ)."""
    lengths = {np.shape(a)[0] if np.ndim(a) else None for a in jax.tree.leaves(tree)}
    if len(lengths) != 1 or None in lengths:
        raise ValueError("every data leaf needs the same leading example axis, got lengths "
                         f"{sorted(map(str, lengths))}")
    return lengths.pop()


def _take(tree, idx):
    return jax.tree.map(lambda a: a[idx], tree)


def joined(a, b):
    """The examples of two data pytrees of the same structure, one after the other (e.g. train + val)."""
    return jax.tree.map(lambda x, y: np.concatenate([np.asarray(x), np.asarray(y)]), a, b)


def data_digest(data: TaskData) -> str:
    """A short fingerprint of a task's splits (structure, shapes, dtypes and bytes): other data resumes nothing."""
    h = hashlib.blake2b(digest_size=8)
    for split in data:
        leaves, treedef = jax.tree.flatten(split)
        h.update(str(treedef).encode())
        for a in leaves:
            a = np.ascontiguousarray(a)
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.data)
    return h.hexdigest()


def _apply(module, params, collections, x, hp, train: bool, key=None):
    """`module` on inputs `x`: training, ``(outputs, updated collections)``; evaluating, ``(outputs, collections)``."""
    mutable = [name for name in collections] if train else False
    rngs = {"dropout": key} if key is not None else {}
    out = module.apply({"params": params, **collections}, x, hp, train, rngs=rngs, mutable=mutable)
    return out if train else (out, collections)


def predictor(task: Task, static: dict) -> Callable:
    """``(state, hp, batch) -> outputs``: a trained member of `task` at `static` on a batch (as the data's leaves),
    evaluating (no dropout), jitted."""
    module, inputs = task.model(static), task.inputs or (lambda b: b["x"])
    return jax.jit(lambda state, hp, batch: _apply(module, state.params, state.collections, inputs(batch), hp,
                                                   False)[0])


def supervised(task: Task, folds: tuple | None = None) -> Builder:
    """The trainable of each member of `task` (see `Task`), as a `Builder` of static hyperparameters.

    A member trains ``epochs`` epochs of shuffled minibatches (the last partial batch dropped); its
    epoch e shuffles and drops out with ``fold_in(key, e)``, so two spans of epochs train as one.

    Args:
        task: the `Task`.
        folds: None to train on ``data.train`` and score on ``data.val``; or ``(train_idx [K, N], val_idx
            [K, M])`` (`data.kfold_indices`) into train and val joined: the member is then K networks, one
            per fold, vmapped inside the member (its state has a leading fold axis), fold k drawing from
            the k-th split of the member's keys, and its metrics are the folds' means (NaN, so diverged,
            when any fold's is).
    """
    if folds is None:
        train_data, val_data = task.data[:2]
        n_train, n_val = _rows(train_data), _rows(val_data)
    else:
        train_idx, val_idx = (np.asarray(f, np.int32) for f in folds)
        train_data = val_data = joined(*task.data[:2])
        pool = _rows(train_data)
        if train_idx.ndim != 2 or val_idx.ndim != 2 or len(train_idx) != len(val_idx) \
                or max(train_idx.max(), val_idx.max()) >= pool:
            raise ValueError(f"folds are (train_idx [K, N], val_idx [K, M]) into the {pool} rows of train + val, "
                             f"got shapes {train_idx.shape} and {val_idx.shape}")
        n_train, n_val = train_idx.shape[1], val_idx.shape[1]
        fold_rows = (jnp.asarray(train_idx), jnp.asarray(val_idx))
    train_data, val_data = (jax.tree.map(jnp.asarray, d) for d in (train_data, val_data))  # on the device once
    batch = min(int(task.batch_size or 64), n_train)
    steps = n_train // batch
    chunk = min(int(task.eval_batch_size), n_val)
    inputs = task.inputs or (lambda b: b["x"])
    optimizer = task.optimizer or default_optimizer

    def _member(static: dict) -> Callable:
        """``(train rows, val rows) -> Trainable`` of one network (rows: indices into the data, None for all)."""
        module = task.model(static)
        apply = functools.partial(_apply, module)

        def trainable(train_rows, val_rows) -> Trainable:
            def init(key, hp) -> SupervisedState:
                k_params, k_dropout = jax.random.split(key)
                variables = module.init({"params": k_params, "dropout": k_dropout},
                                        inputs(_take(train_data, slice(0, 1))), hp, False)
                params = variables["params"]
                collections = {k: v for k, v in variables.items() if k != "params"}
                return SupervisedState(params, collections, optimizer({**static, **hp}).init(params), jnp.int32(0))

            def step(hp, tx, carry, inputs_):
                params, collections, opt_state = carry
                idx_B, key = inputs_
                batch_ = _take(train_data, idx_B if train_rows is None else train_rows[idx_B])

                def loss_fn(p):
                    outputs, updated = apply(p, collections, inputs(batch_), hp, True, key)
                    loss = task.loss(outputs, batch_)
                    if jnp.shape(loss) != ():
                        raise ValueError("the task's loss must be a scalar (the batch's mean), "
                                         f"got shape {jnp.shape(loss)}")
                    return loss, updated

                (loss, collections), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), dict(collections), opt_state), loss

            def train(state: SupervisedState, hp, key, epochs: int) -> SupervisedState:
                tx = optimizer({**static, **hp})

                def epoch(state: SupervisedState, _):
                    k_perm, k_steps = jax.random.split(jax.random.fold_in(key, state.epoch))
                    idx_NxB = jax.random.permutation(k_perm, n_train)[: steps * batch].reshape(steps, batch)
                    carry = (state.params, state.collections, state.opt_state)
                    carry, _ = jax.lax.scan(functools.partial(step, hp, tx), carry,
                                            (idx_NxB, jax.random.split(k_steps, steps)))
                    return SupervisedState(*carry, state.epoch + 1), None

                return jax.lax.scan(epoch, state, None, length=int(epochs))[0]

            def evaluate(state: SupervisedState, hp) -> dict:
                def metrics_of(idx):
                    batch_ = _take(val_data, idx if val_rows is None else val_rows[idx])
                    outputs, _ = apply(state.params, state.collections, inputs(batch_), hp, False)
                    return task.metrics(outputs, batch_)

                whole = n_val // chunk
                per_chunk = jax.lax.map(metrics_of, jnp.arange(whole * chunk).reshape(whole, chunk))
                sums = jax.tree.map(lambda m: jnp.sum(m, axis=0) * chunk, per_chunk)
                if n_val > whole * chunk:  # the rest, one smaller chunk: every row weighs the same
                    rest = metrics_of(jnp.arange(whole * chunk, n_val))
                    sums = jax.tree.map(lambda s, m: s + m * (n_val - whole * chunk), sums, rest)
                return jax.tree.map(lambda s: s / n_val, sums)

            return Trainable(init, train, evaluate)

        return trainable

    def build(static: dict) -> Trainable:
        one = _member(static)
        if folds is None:
            return one(None, None)
        return _folded(one, *fold_rows)

    return build


def _folded(one: Callable, train_idx_KxN, val_idx_KxM) -> Trainable:
    """K networks of one member, one per fold, as one trainable: ``one(train rows, val rows)`` vmapped over the
    folds; fold k draws from the k-th split of each key, and the metrics are the folds' means."""
    K = train_idx_KxN.shape[0]
    base = one(None, None)  # its init reads no rows

    def init(key, hp):
        return jax.vmap(lambda k: base.init(k, hp))(jax.random.split(key, K))

    def train(state, hp, key, epochs: int):
        return jax.vmap(lambda st, k, tr, va: one(tr, va).train(st, hp, k, epochs))(
            state, jax.random.split(key, K), train_idx_KxN, val_idx_KxM)

    def evaluate(state, hp) -> dict:
        per_fold = jax.vmap(lambda st, tr, va: one(tr, va).evaluate(st, hp))(state, train_idx_KxN, val_idx_KxM)
        return jax.tree.map(lambda m: jnp.mean(m, axis=0), per_fold)

    return Trainable(init, train, evaluate)


def static_names(space: SearchSpace, static: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The space's static hyperparameters: `static` as given, else every Int and Choice (Floats are
    traced), each checked to take at most `MAX_STATIC_VALUES` values."""
    names = tuple(n for n, p in space.params.items() if isinstance(p, (Int, Choice, Fixed))) \
        if static is None else tuple(static)
    for name in names:
        if name not in space.params:
            raise ValueError(f"static hyperparameter {name!r} is not in the space {list(space.params)}")
        param = space.params[name]
        if isinstance(param, Float):
            raise ValueError(f"static hyperparameter {name!r} is a Float: it would compile a program per value; "
                             "a float hyperparameter is always traced")
        if isinstance(param, Int) and param.hi - param.lo + 1 > MAX_STATIC_VALUES:
            raise ValueError(f"static hyperparameter {name!r} takes {param.hi - param.lo + 1} values, each its own "
                             f"compiled program (at most {MAX_STATIC_VALUES}): bucket it, e.g. "
                             f"Choice([{param.lo}, ..., {param.hi}]), or read it as a traced value")
    return names


def run_member(trainable: Trainable, key, hp, state=None, *, epochs: int):
    """One member as the engine trains it: ``(state, metrics)`` after `epochs` epochs from `state` (None: from
    ``init``), with ``key`` split into its init and training keys. Under `jax.vmap` it is the engine's
    program; alone (jitted) it is the member trained by itself, e.g. a winner's retrain."""
    k_init, k_train = jax.random.split(key)
    if state is None:
        state = trainable.init(k_init, hp)
    state = trainable.train(state, hp, k_train, epochs)
    return state, trainable.evaluate(state, hp)


def fit_winner(problem, static: dict, hp: dict, key, epochs: int):
    """A study's winner retrained alone for `epochs`: ``(state, metrics or None)``.

    A `Task` trains on train + val and is scored on ``data.test`` (``test_*`` metrics; None when it has
    no test split); a `TrainingLoop` trains from fresh and is scored by its own ``evaluate``
    (``retrain_*``: it has no test split)."""
    if isinstance(problem, TrainingLoop):
        trainable, prefix, scored = problem.build(static), "retrain_", True
    else:
        train, val, test = problem.data
        data = TaskData(joined(train, val), val if test is None else test)
        trainable, prefix, scored = supervised(problem._replace(data=data))(static), "test_", test is not None
    state, metrics = jax.jit(functools.partial(run_member, trainable, epochs=int(epochs)))(key, hp)
    return state, {prefix + name: float(v) for name, v in metrics.items()} if scored else None


class TaskMetrics(NamedTuple):
    """A Study's view of one round of a task's swarm (per member)."""

    fitness: np.ndarray  # f32[S]: the objective, larger is better, -inf where not finite
    diverged: np.ndarray  # bool[S]: the objective is not finite
    values: dict  # {metric name: f32[S]}


class SwarmResult(NamedTuple):
    """One swarm's training: per member, in the members' order."""

    metrics: dict  # {name: f32[S]}
    fitness: np.ndarray  # f32[S], the objective as larger-is-better, -inf where not finite
    states: list  # each member's final state (an opaque pytree, no swarm axis)


class Engine(NamedTuple):
    """`make_engine`'s swarm trainer.

    Attributes:
        train: ``(keys_S, positions_SxD, states=None, epochs=None) -> SwarmResult``: every member
            trains `epochs` epochs (the engine's by default) from `states` (None: fresh, `init`).
        groups: ``(positions_SxD) -> {static values: member indices}``.
        hyperparameters: ``(position_D) -> (static dict, traced hp dict)``: what one member's builder
            and trainable get (e.g. to retrain a winner alone).
        state_shapes: ``(positions_SxD) -> [each member's state as ShapeDtypeStructs]`` (what its ``init``
            returns, traced only: e.g. the target of a checkpoint's restore).
        stats: {"compiles": programs traced so far, "signatures": the static values seen, "sharded_calls":
            calls whose members' results came from more than one device, "call_limits": {static values: the
            largest call that fits the capacity} where a call did not, "call_bytes": {(static values, members):
            the most bytes of a device's memory a program of that call used}}.
        epochs: the epochs a call trains unless it says otherwise.
    """

    train: Callable
    groups: Callable
    hyperparameters: Callable
    state_shapes: Callable
    stats: dict
    epochs: int


def _calls(idx: np.ndarray, group_size: int) -> list[np.ndarray]:
    """A group's members as program calls: `group_size` at a time, the rest in calls of the powers of two it
    sums to (5 -> 4 + 1). A signature compiles at most ``2 + log2(group_size)`` program sizes, each reused;
    a small group still trains vmapped, and no member is computed twice (a padded call would repeat some)."""
    whole = len(idx) // group_size * group_size
    calls = [idx[lo:lo + group_size] for lo in range(0, whole, group_size)]
    rest = idx[whole:]
    while len(rest):
        size = 1 << (len(rest).bit_length() - 1)
        calls.append(rest[:size])
        rest = rest[size:]
    return calls


def make_engine(build: Builder, space: SearchSpace, epochs: int, objective: Objective,
                static: tuple[str, ...] | None = None, group_size: int = 8,
                mesh: jax.sharding.Mesh | None = None, capacity: int | None = None,
                place: Callable | None = None) -> Engine:
    """Trains a swarm of `build`'s trainables, grouped by their static hyperparameters (see the module).

    Args:
        build: ``static dict -> Trainable`` (`supervised(task)`, or your own loop's).
        space: the search space; its static names (`static_names`) are handed to `build` as Python
            values, its other parameters to the trainable as traced ``hp`` (f32 scalars; a Choice
            as its index, an Int as int32).
        epochs: epochs a member trains per call (unless the call says otherwise).
        objective: what `evaluate`'s metrics the fitness is.
        static: the static names (default: every Int and Choice of the space).
        group_size: members of one static signature that train together in one vmapped program; a
            group's remainder trains in calls of the powers of two it sums to, so a signature
            compiles at most ``2 + log2(group_size)`` programs (per epoch count). On a CPU a few
            suffice; an accelerator wants more.
        mesh: a 1-D `jax.sharding.Mesh` of devices (None: the default device). A call whose member
            count is a multiple of the mesh's size has its members split over the devices (keys,
            hyperparameters and states sharded on the member axis, the data replicated); a smaller call
            (a group's remainder) runs on the default device. Over several processes (hosts) the mesh
            holds every process's devices, each process runs the same calls, and a split call's results
            come back whole to every process (replicated, then host arrays): each process holds every
            member's state and metrics, as on one host.
        place: ``(host array, sharding) -> array`` puts a split call's per-member arrays on the mesh
            (None: `jax.device_put`; over several processes, `execute.put`, which fills each process's
            shards from its host copy).
        capacity: bytes of a device's memory a call may use (None: unchecked). Each program is compiled
            ahead of its first call and XLA's memory analysis of it read: a call that would need more
            trains as two halves instead, and its static signature's calls stay at that size
            (``stats["call_limits"]``); one member that does not fit is a clear error.

    Returns:
        `Engine`.
    """
    if int(group_size) < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    names = static_names(space, static)
    traced = tuple(n for n in space.names if n not in names and space.params[n].has_dim)
    decode = jax.jit(jax.vmap(space.decode))
    stats = {"compiles": 0, "signatures": [], "sharded_calls": 0, "call_limits": {}, "call_bytes": {}}
    unit = 1 if mesh is None else mesh.size  # the smallest call that splits evenly over the devices
    programs: dict = {}
    impl = None  # the members' keys' PRNG implementation: a program takes their raw data (placeable on any host)
    members_axis = None if mesh is None else jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(mesh.axis_names[0]))
    # Several processes: a split call's outputs replicated to every process, which reads them as host arrays.
    whole = {} if mesh is None or jax.process_count() == 1 else {
        "out_shardings": jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())}
    place = jax.device_put if place is None else place

    def signature(config: dict) -> tuple:
        return tuple((n, config[n]) for n in names if n in config)

    def groups(positions_SxD) -> dict:
        out: dict = {}
        for m, config in enumerate(space.to_python_batch(positions_SxD)):
            out.setdefault(signature(config), []).append(m)
        return {sig: np.asarray(idx) for sig, idx in out.items()}

    def program(sig: tuple, n_epochs: int, args) -> tuple:
        """The compiled program of `sig` for `args` (compiled once per size and kind of call) and the bytes of a
        device's memory it uses (0 where the backend does not say)."""
        size, fresh = len(args[0]), args[2] is None
        if (sig, size, n_epochs, fresh) not in programs:
            trainable = build(dict(sig))

            def swarm(key_data, hp, states):
                stats["compiles"] += 1  # a trace: each cached program traces once
                keys = jax.random.wrap_key_data(key_data, impl=impl)
                member = functools.partial(run_member, trainable, epochs=n_epochs)
                # One member: its program without vmap (XLA:CPU runs a vmapped convolution as a grouped one, slowly).
                if size == 1:
                    out = member(keys[0], _take(hp, 0), None if states is None else _take(states, 0))
                    return jax.tree.map(lambda v: v[None], out)
                return jax.vmap(member)(keys, hp, states)

            compiled = jax.jit(swarm, **whole).lower(*args).compile()
            programs[sig, size, n_epochs, fresh] = compiled, memory_analysis(compiled).get("total", 0)
            stats["call_bytes"][sig, size] = max(stats["call_bytes"].get((sig, size), 0),
                                                 programs[sig, size, n_epochs, fresh][1])
            if sig not in stats["signatures"]:
                stats["signatures"].append(sig)
        return programs[sig, size, n_epochs, fresh]

    def failed(sig: tuple, e: Exception) -> TaskError:
        return TaskError(f"the trainable of static hyperparameters {dict(sig)} failed: "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    def traced_hp(positions_SxD) -> dict:
        decoded = decode(jnp.asarray(positions_SxD, jnp.float32))
        return {n: decoded[n].astype(jnp.float32) if isinstance(space.params[n], Float) else decoded[n]
                for n in traced}

    def hyperparameters(position_D) -> tuple[dict, dict]:
        position_1xD = np.asarray(position_D, np.float32)[None]
        (sig,) = groups(position_1xD)
        return dict(sig), _take(traced_hp(position_1xD), 0)

    def state_shapes(positions_SxD) -> list:
        positions_SxD = np.asarray(positions_SxD, np.float32)
        hp_S, shapes = traced_hp(positions_SxD), [None] * len(positions_SxD)
        for sig, idx in groups(positions_SxD).items():
            shape = jax.eval_shape(build(dict(sig)).init, jax.random.key(0), _take(hp_S, idx[0]))
            for m in idx:
                shapes[m] = shape
        return shapes

    def train(keys_S, positions_SxD, states=None, n_epochs: int | None = None) -> SwarmResult:
        nonlocal impl
        positions_SxD = np.asarray(positions_SxD, np.float32)
        n_epochs = epochs if n_epochs is None else int(n_epochs)
        impl, key_data = jax.random.key_impl(keys_S), np.asarray(jax.random.key_data(keys_S))
        hp_S = traced_hp(positions_SxD)
        S = positions_SxD.shape[0]
        metrics: dict = {}
        final: list = [None] * S
        for sig, idx in groups(positions_SxD).items():
            pending = _calls(idx, stats["call_limits"].get(sig, group_size))
            while pending:
                part = pending.pop(0)
                args = (key_data[part], _take(hp_S, part), None if states is None else
                        jax.tree.map(lambda *a: jnp.stack(a), *[states[m] for m in part]))
                if members_axis is not None and len(part) % unit == 0:  # the members split over devices
                    args = jax.tree.map(lambda x: place(x, members_axis), args)
                try:
                    compiled, used = program(sig, n_epochs, args)
                except Exception as e:  # noqa: BLE001 - name the member's static values, keep the cause
                    raise failed(sig, e) from e
                if capacity is not None and used > capacity:  # train the call as two halves
                    if len(part) <= unit:
                        raise ValueError(f"a call of {len(part)} member(s) of static hyperparameters {dict(sig)} "
                                         f"needs {used / 2**30:.3g} GiB of a device's memory, more than the "
                                         f"{capacity / 2**30:.3g} GiB it may use: use a smaller model or batch")
                    stats["call_limits"][sig] = max(unit, len(part) // 2 // unit * unit)
                    pending[:0] = _calls(part, stats["call_limits"][sig])
                    continue
                try:
                    out_states, out_metrics = compiled(*args)
                except Exception as e:  # noqa: BLE001
                    raise failed(sig, e) from e
                stats["sharded_calls"] += len(jax.tree.leaves(out_metrics)[0].sharding.device_set) > 1
                if whole and len(part) % unit == 0:  # every member's results on every process, as host arrays
                    out_states, out_metrics = jax.tree.map(np.asarray, (out_states, out_metrics))
                for name, value in out_metrics.items():
                    if np.ndim(value) != 1:
                        raise TaskError(f"metric {name!r} must be a scalar per member, got shape "
                                         f"{np.shape(value)[1:]}")
                    metrics.setdefault(name, np.zeros(S, np.float32))[part] = np.asarray(value)
                for j, m in enumerate(part):
                    final[m] = _take(out_states, j)
        fitness = np.asarray(objective.fitness(metrics))
        return SwarmResult(metrics, fitness, final)

    return Engine(train, groups, hyperparameters, state_shapes, stats, int(epochs))
