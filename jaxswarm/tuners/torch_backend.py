"""The sequential tuners' PyTorch backend: one configuration at a time in PyTorch eager, nothing compiled.

People who tune one network at a time on a CPU mostly run PyTorch eager; the
JAX baselines pay one compile per configuration (`train.make_dense_train`).
`make_torch_train(space, config, in_features, num_classes)` returns a
`TorchTrainer` that trains the same configuration on the same objective in
PyTorch, for the calls the tuners' `base.Evaluator` makes:
``train_position(key, position_D, data) -> train.Metrics`` and
``span_program(position_D, n_train)`` (an epoch at a time, for the pruning
tuners: one span after another trains exactly as the one-shot run).
``run_baseline(..., backend="torch")`` and ``jaxswarm baseline --backend
torch`` use it. PyTorch is optional (``pip install torch==2.13.0``): this
module imports without it and imports torch on first use (`available`).

What is the same as the JAX dense network (the family's ``init_dense`` /
``apply_dense`` and `train.fit`):

* decoding: the family's own ``decode`` (jitted once per trainer) and
  ``arch_to_python``, `train.batch_config` and `train.batch_reader` (a
  configuration's own batch size), so a position means the same network;
* the MLP (``models.mlp``: layers, units, per-layer activation, batch norm
  before each activation, inverted dropout after it) and the CNN
  (``models.cnn``: 'SAME' odd-kernel convolutions, batch norm, activation, 2x2
  max or average pooling, dropout after every block, flattened in (H, W, C)
  order, a dense layer with batch norm, activation and dropout, the output
  layer), with the weights of the JAX network's names and shapes (conv
  kernels OIHW instead of HWIO; `from_jax` converts);
* initialization: unit truncated normals on [-2, 2] (or unit uniforms) times
  ``layers.init_std`` of the scheme and the real fans, zero biases, unit
  batch-norm scales;
* batch norm: biased batch variance, eps ``layers.BN_EPS``, running averages
  with momentum ``layers.BN_MOMENTUM`` of the batch mean and the *biased*
  variance (torch's own ``batch_norm`` would store the unbiased one: it is
  written out here);
* the loss (mean softmax cross-entropy), each epoch's ``n // batch`` minibatches
  of a fresh permutation (the last partial batch dropped), the evaluation after
  every epoch and `train.metrics_of` (fitness, divergence, curves);
* the optimizers (`optim.OPTIMIZERS`, table below) with every hyperparameter
  `optim.OptHParams` holds, Adam's ``beta2`` / ``eps`` at Optax's defaults
  unless the space tunes them, and the cosine learning-rate schedule of
  `optim` over the run's ``epochs * (n // batch)`` updates, set before each.

====================  ==========================================================
name                  PyTorch
====================  ==========================================================
``sgd``               ``SGD(lr, weight_decay=wd)``
``momentum``          ``SGD(lr, momentum=m, weight_decay=wd)`` (m = 0: plain SGD)
``nesterov``          ``SGD(lr, momentum=m, nesterov=True, weight_decay=wd)``
``rmsprop``           `RMSProp` here: Optax's (torch's ``RMSprop`` adds eps
                      outside the root and applies lr after its momentum trace)
``adagrad``           ``Adagrad(lr, initial_accumulator_value=0.1 + 1e-7, eps=0)``:
                      Optax's ``rsqrt(sum + 1e-7)`` with sums from 0.1
``adam``              ``Adam(lr, betas=(m, b2), eps=eps, weight_decay=wd)``
``adamw``             ``AdamW(lr, betas=(m, b2), eps=eps, weight_decay=wd)``
``nadam``             ``NAdam(lr, betas=(m, b2), eps=eps, weight_decay=wd,
                      momentum_decay=inf)``: torch's momentum schedule
                      ``b1 (1 - 0.5 * 0.96**(t * psi))`` is then ``b1``, Optax's
``adadelta``          ``Adadelta(lr, rho=0.9, eps=1e-6, weight_decay=wd)``
====================  ==========================================================

What cannot match exactly: the random numbers. Initial weights and dropout
masks come from a torch generator, the minibatch order from numpy
(`np.random.default_rng`), both seeded from the evaluation's JAX key: the same
distributions, not the same draws, so a configuration's fitness agrees with
the JAX backend's in distribution (over seeds), not run for run. Beyond that,
float32 rounding (torch computes Adam's bias corrections and the schedule in
float64 Python scalars, Optax in float32). The same key gives the same result
in one process and thread count (torch's CPU kernels may sum in another order
with another thread count).

Threads: torch's default (its intra-op pool over the machine's cores) is left
as it is (`num_threads` reports it): it is what a user running PyTorch gets,
and what the bench's torch row stands for. Where the cores are shared with
other work, small networks can train many times faster with
``torch.set_num_threads(1)`` (the pool's threads wait for each other on
tiny operations; the tests set it), which a caller may set before a run.
JAX's own pool sits idle while torch trains (only the decoding and the final
retrain run in JAX).

Example:
    >>> import jax, numpy as np
    >>> from jaxswarm.models import mlp_space
    >>> space = mlp_space(max_layers=1, units=(4, 16))
    >>> x = np.random.rand(64, 8).astype(np.float32); y = (x[:, 0] > .5).astype(np.int32)
    >>> trainer = make_torch_train(space, train.TrainConfig(epochs=2, batch_size=16), 8, 2)
    >>> data = trainer.data(x[:48], y[:48], x[48:], y[48:])
    >>> trainer.train_position(jax.random.key(0), np.full(space.num_dims, 0.5), data).val_accuracy_curve.shape
    (2,)
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxswarm import optim, train
from jaxswarm.models import ModelFamily, cnn, family_of, mlp
from jaxswarm.models.layers import BN_EPS, BN_MOMENTUM, INIT_GAIN2, OUT_GAIN2, init_std
from jaxswarm.space import SearchSpace

__all__ = ["INSTALL", "available", "num_threads", "TorchData", "TorchNet", "TorchRun", "TorchTrainer", "RMSProp",
           "NETWORKS", "make_torch_train", "make_network", "make_optimizer", "minibatches", "train_epoch", "from_jax",
           "seed_words"]

INSTALL = "pip install torch==2.13.0"  # a CPU wheel; a range admitting newer releases may pull a CUDA build
_TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2] (`layers.unit_normal` divides by it)
_ADAGRAD = (0.1, 1e-7)  # optax.adagrad's initial_accumulator_value and eps
_RMS_DECAY, _RMS_EPS = 0.9, 1e-8  # optax.rmsprop's defaults
_ADADELTA = (0.9, 1e-6)  # optax.adadelta's rho and eps
# layers.ACTIVATIONS in torch: torch.nn.functional's names (leaky_relu's default slope 0.01, gelu exact by default).
_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "elu": "elu", "leaky_relu": "leaky_relu",
                "gelu": "gelu", "swish": "silu"}


def available() -> bool:
    """Whether PyTorch can be imported (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def num_threads() -> int:
    """torch's intra-op thread count, what the backend trains with (torch's default unless the caller set one)."""
    return _torch().get_num_threads()


def _torch():
    """The torch module, imported on first use: jaxswarm imports without it."""
    return importlib.import_module("torch")


def _activation(name: str) -> Callable:
    if name not in _ACTIVATIONS:
        raise ValueError(f"the torch backend has no activation {name!r}; it knows {sorted(_ACTIVATIONS)}")
    return getattr(_torch().nn.functional, _ACTIVATIONS[name])


class TorchData(NamedTuple):
    """The arrays one training run reads, as torch tensors in the network's layout."""

    x_train: Any  # f32[N, F] (MLP) or f32[N, C, H, W] (CNN)
    y_train: Any  # i64[N]
    x_val: Any  # f32[M, ...]
    y_val: Any  # i64[M]


class TorchNet(NamedTuple):
    """One configuration's network: its tensors and how to run them.

    ``params`` are leaf tensors (``requires_grad``) named as the JAX dense network's
    variables, flattened (``"dense_0.kernel"``, ``"bn_0.scale"``, ``"out.bias"``);
    ``stats`` the batch-norm running averages (``"bn_0.mean"``), updated in place
    by a training forward pass.
    """

    params: dict  # name -> tensor
    stats: dict  # name -> tensor
    apply: Callable  # (x, training: bool, generator) -> logits_BxC


class TorchRun(NamedTuple):
    """One configuration's training in progress; its tensors change in place, an epoch at a time (`train_epoch`)."""

    net: TorchNet
    optimizer: Any  # a torch.optim optimizer (or `RMSProp`)
    learning_rate: Callable[[int], float]  # the scheduled rate of update t (0-based)
    generator: Any  # torch.Generator: dropout masks
    order_seed: tuple[int, ...]  # the minibatch order's seed (`minibatches`)
    batch: int  # examples per update
    eval_batch: int  # examples per evaluation chunk


class TorchTrainer(NamedTuple):
    """One configuration at a time in PyTorch: the calls `base.Evaluator` makes of a `train.DenseTrainer`."""

    train_position: Callable  # (key, position_D, data) -> train.Metrics
    span_program: Callable  # (position_D, n_train) -> (run(key, hp, data, state, start, num_epochs), hp)
    start: Callable  # (key, position_D, data) -> TorchRun: the run train_position makes
    describe: Callable  # (position_D) -> (arch dict, optim.OptHParams) on the host
    data: Callable  # (x_train, y_train, x_val, y_val) -> TorchData
    config: train.TrainConfig  # the loop as the space trains it (`train.batch_config`)


# --------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------


def _kernel(shape, scheme: str, auto_gain2: float, fan_in: int, fan_out: int, generator):
    """A kernel of `shape` drawn as the JAX families draw one: a unit draw times ``init_std``."""
    torch = _torch()
    std, uniform = init_std(scheme, auto_gain2, fan_in, fan_out)
    w = torch.empty(shape)
    if uniform:
        w.uniform_(-math.sqrt(3.0), math.sqrt(3.0), generator=generator)
    else:
        torch.nn.init.trunc_normal_(w, 0.0, 1.0, -2.0, 2.0, generator=generator)
        std /= _TRUNC_STD
    return (w * std).requires_grad_()


def _zeros(n: int):
    return _torch().zeros(n).requires_grad_()


def _add_norm(params: dict, stats: dict, name: str, width: int) -> None:
    torch = _torch()
    params[f"{name}.scale"] = torch.ones(width).requires_grad_()
    params[f"{name}.bias"] = _zeros(width)
    stats[f"{name}.mean"], stats[f"{name}.var"] = torch.zeros(width), torch.ones(width)


def _norm(z, params: dict, stats: dict, name: str, training: bool):
    """Batch norm over every axis but the features' (axis 1), as `layers.batch_norm_train` / ``_eval``."""
    torch = _torch()
    dims = (0,) + tuple(range(2, z.dim()))
    shape = (1, -1) + (1,) * (z.dim() - 2)
    scale, bias = params[f"{name}.scale"].view(shape), params[f"{name}.bias"].view(shape)
    mean, var = stats[f"{name}.mean"], stats[f"{name}.var"]
    if not training:
        return (z - mean.view(shape)) * torch.rsqrt(var.view(shape) + BN_EPS) * scale + bias
    batch_mean = z.mean(dims, keepdim=True)
    batch_var = (z - batch_mean).square().mean(dims, keepdim=True)  # biased, as Flax (torch would store unbiased)
    with torch.no_grad():
        mean.mul_(BN_MOMENTUM).add_(batch_mean.flatten(), alpha=1.0 - BN_MOMENTUM)
        var.mul_(BN_MOMENTUM).add_(batch_var.flatten(), alpha=1.0 - BN_MOMENTUM)
    return (z - batch_mean) * torch.rsqrt(batch_var + BN_EPS) * scale + bias


def _dropout(h, rate: float, generator):
    """Inverted dropout, a unit kept where its uniform is >= rate (`layers.dropout`)."""
    keep = _torch().rand(h.shape, generator=generator) >= rate
    return h * keep / (1.0 - rate)


def _mlp(a: Mapping[str, Any], mcfg: mlp.MLPConfig, generator) -> TorchNet:
    """`mlp.init_dense` / `mlp.apply_dense` in torch."""
    torch = _torch()
    acts = mlp.layer_activations(a)
    fns = [_activation(name) for name in acts]
    dims = [mcfg.in_features, *a["units"], mcfg.num_classes]
    names = [f"dense_{l}" for l in range(a["n_layers"])] + ["out"]
    params, stats = {}, {}
    for l, (name, fan_in, fan_out) in enumerate(zip(names, dims[:-1], dims[1:])):
        gain2 = INIT_GAIN2[acts[l]] if name != "out" else OUT_GAIN2
        params[f"{name}.kernel"] = _kernel((fan_in, fan_out), a["init"], gain2, fan_in, fan_out, generator)
        params[f"{name}.bias"] = _zeros(fan_out)
        if a["batch_norm"] and name != "out":
            _add_norm(params, stats, f"bn_{l}", fan_out)

    def apply(x, training: bool, generator=None):
        h = x
        for l, fn in enumerate(fns):
            z = torch.addmm(params[f"dense_{l}.bias"], h, params[f"dense_{l}.kernel"])
            if a["batch_norm"]:
                z = _norm(z, params, stats, f"bn_{l}", training)
            h = fn(z)
            if training and a["dropout"] > 0:
                h = _dropout(h, a["dropout"], generator)
        return torch.addmm(params["out.bias"], h, params["out.kernel"])

    return TorchNet(params, stats, apply)


def _cnn(a: Mapping[str, Any], mcfg: cnn.CNNConfig, generator) -> TorchNet:
    """`cnn.init_dense_cnn` / `cnn.apply_dense_cnn` in torch (NCHW maps, OIHW kernels)."""
    torch = _torch()
    F = torch.nn.functional
    acts = cnn.layer_activations(a)  # each block's, then the dense layer's
    fns = [_activation(name) for name in acts]
    pool = F.max_pool2d if a["pooling"] == "max" else F.avg_pool2d
    height, width, cin = (int(d) for d in mcfg.input_shape)
    params, stats = {}, {}
    for b, (f, k) in enumerate(zip(a["filters"], a["kernel"])):
        params[f"conv_{b}.kernel"] = _kernel((f, cin, k, k), a["init"], INIT_GAIN2[acts[b]], k * k * cin, k * k * f,
                                             generator)
        params[f"conv_{b}.bias"] = _zeros(f)
        if a["batch_norm"]:
            _add_norm(params, stats, f"bn_{b}", f)
        cin = f
    n, u, classes = a["n_blocks"], a["dense_units"], mcfg.num_classes
    rows = (height >> n) * (width >> n) * cin  # 2x2 'VALID' pooling n times floors each side n times
    params["dense.kernel"] = _kernel((rows, u), a["init"], INIT_GAIN2[acts[-1]], rows, u, generator)
    params["dense.bias"] = _zeros(u)
    if a["batch_norm"]:
        _add_norm(params, stats, "bn_dense", u)
    params["out.kernel"] = _kernel((u, classes), a["init"], OUT_GAIN2, u, classes, generator)
    params["out.bias"] = _zeros(classes)
    dropout = a["dropout"]

    def apply(x, training: bool, generator=None):
        h = x
        for b, k in enumerate(a["kernel"]):
            z = F.conv2d(h, params[f"conv_{b}.kernel"], params[f"conv_{b}.bias"], padding=k // 2)
            if a["batch_norm"]:
                z = _norm(z, params, stats, f"bn_{b}", training)
            h = pool(fns[b](z), 2)
            if training and dropout > 0:
                h = _dropout(h, dropout, generator)
        h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # (H, W, C) order: the JAX dense kernel's rows
        z = torch.addmm(params["dense.bias"], h, params["dense.kernel"])
        if a["batch_norm"]:
            z = _norm(z, params, stats, "bn_dense", training)
        h = fns[-1](z)
        if training and dropout > 0:
            h = _dropout(h, dropout, generator)
        return torch.addmm(params["out.bias"], h, params["out.kernel"])

    return TorchNet(params, stats, apply)


def _flat_rows(x, mcfg):
    return x.reshape(len(x), -1)


def _nchw(x, mcfg):
    return x.reshape(len(x), *mcfg.input_shape).permute(0, 3, 1, 2)


# The torch network of each family (`models.FAMILIES`' names): (build(arch, model config, generator), its input
# layout from flat rows).
NETWORKS: dict[str, tuple[Callable, Callable]] = {"mlp": (_mlp, _flat_rows), "cnn": (_cnn, _nchw)}


def _network_of(family: ModelFamily) -> tuple[Callable, Callable]:
    if family.name not in NETWORKS:
        raise ValueError(f"the torch backend has no network for the {family.name!r} family; it has {list(NETWORKS)}")
    return NETWORKS[family.name]


def make_network(family: ModelFamily, arch_python: Mapping[str, Any], model_config, generator=None) -> TorchNet:
    """A freshly initialized torch network of `arch_python` (the family's ``arch_to_python`` form).

    Example:
        >>> from jaxswarm.models import FAMILIES
        >>> arch = mlp.arch_to_python(mlp.make_arch(dict(n_layers=1, units=[3]), mlp.MLPConfig(4, 2, 1, 3)))
        >>> net = make_network(FAMILIES["mlp"], arch, mlp.MLPConfig(4, 2, 1, 3))
        >>> tuple(net.params["dense_0.kernel"].shape)
        (4, 3)
    """
    return _network_of(family)[0](arch_python, model_config, generator)


def from_jax(net: TorchNet, variables: Mapping[str, Any]) -> TorchNet:
    """`net` with the values of the JAX dense network's `variables` (``{"params", "batch_stats"}``), in place.

    HWIO conv kernels become OIHW; every other tensor keeps its shape.
    """
    torch = _torch()
    flat = {}
    for collection in ("params", "batch_stats"):
        for layer, leaves in variables[collection].items():
            for leaf, value in leaves.items():
                value = np.asarray(value)
                flat[f"{layer}.{leaf}"] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value
    with torch.no_grad():
        for name, tensor in {**net.params, **net.stats}.items():
            tensor.copy_(torch.tensor(np.asarray(flat[name])))
    return net


# --------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------


class RMSProp:
    """Optax's ``chain(add_decayed_weights(wd), rmsprop(lr, momentum=m))`` on torch tensors.

    ``nu = 0.9 nu + 0.1 g**2``; ``t = lr g / sqrt(nu + 1e-8) + m t``; ``p -= t``
    (``g`` the gradient plus ``wd p``). torch's ``RMSprop`` divides by ``sqrt(nu)
    + eps`` and multiplies its trace by lr afterwards, which differs once the
    rate follows a schedule. The rate is ``param_groups[0]["lr"]``, as torch's.
    """

    def __init__(self, params, lr: float, momentum: float, weight_decay: float):
        self.params = list(params)
        self.param_groups = [{"lr": lr}]
        self.momentum, self.weight_decay = momentum, weight_decay
        self.nu = [p.detach().new_zeros(p.shape) for p in self.params]
        self.trace = [p.detach().new_zeros(p.shape) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        lr = self.param_groups[0]["lr"]
        for p, nu, trace in zip(self.params, self.nu, self.trace):
            g = p.grad if self.weight_decay == 0 else p.grad + self.weight_decay * p.detach()
            nu.mul_(_RMS_DECAY).addcmul_(g, g, value=1.0 - _RMS_DECAY)
            trace.mul_(self.momentum).add_(g * (nu + _RMS_EPS).rsqrt(), alpha=lr)
            p.detach().sub_(trace)  # in place on the leaf's storage, outside autograd


def _schedule(learning_rate: float, lr_decay: float, total_steps: int) -> Callable[[int], float]:
    """`optim`'s cosine schedule (``optax.cosine_decay_schedule(lr, max(total - 1, 1), alpha=lr_decay)``)."""
    decay_steps = max(total_steps - 1, 1)

    def at(t: int) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(t, decay_steps) / decay_steps))
        return learning_rate * ((1.0 - lr_decay) * cosine + lr_decay)

    return at


def make_optimizer(name: str, params, hp: optim.OptHParams, traced=optim.ADAM_HPARAMS):
    """The torch optimizer that `optim.plain_optimizer(name, ...)` is (module table), at ``hp.learning_rate``.

    `train_epoch` sets each update's scheduled rate in its ``param_groups`` (the first: ``hp.learning_rate``).

    Args:
        name: one of `optim.OPTIMIZERS`.
        params: the tensors it updates.
        hp: one configuration's `optim.OptHParams` (``optimizer`` and ``lr_decay`` are not read here).
        traced: which of `optim.ADAM_HPARAMS` come from `hp`; the others are `optim.DEFAULTS` (`optim.adam_hparams`).

    Example:
        >>> import torch
        >>> w = torch.zeros(3, requires_grad=True)
        >>> type(make_optimizer("adam", [w], optim.default_hparams(names=("adam",)))).__name__
        'Adam'
    """
    torch = _torch()
    lr, m, wd = float(hp.learning_rate), float(hp.momentum), float(hp.weight_decay)
    b2, eps = (float(getattr(hp, n)) if n in traced else optim.DEFAULTS[n] for n in ("beta2", "eps"))
    params = list(params)
    builders = {
        "sgd": lambda: torch.optim.SGD(params, lr, weight_decay=wd),
        # A zero trace is a no-op, and torch refuses nesterov without momentum.
        "momentum": lambda: torch.optim.SGD(params, lr, momentum=m, weight_decay=wd),
        "nesterov": lambda: torch.optim.SGD(params, lr, momentum=m, nesterov=m > 0, weight_decay=wd),
        "rmsprop": lambda: RMSProp(params, lr, m, wd),
        "adagrad": lambda: torch.optim.Adagrad(params, lr, weight_decay=wd, initial_accumulator_value=sum(_ADAGRAD),
                                               eps=0.0),
        "adam": lambda: torch.optim.Adam(params, lr, betas=(m, b2), eps=eps, weight_decay=wd),
        "adamw": lambda: torch.optim.AdamW(params, lr, betas=(m, b2), eps=eps, weight_decay=wd),
        "nadam": lambda: torch.optim.NAdam(params, lr, betas=(m, b2), eps=eps, weight_decay=wd,
                                           momentum_decay=math.inf),
        "adadelta": lambda: torch.optim.Adadelta(params, lr, rho=_ADADELTA[0], eps=_ADADELTA[1], weight_decay=wd),
    }
    if name not in builders:
        raise ValueError(f"the torch backend has no optimizer {name!r}; it has {list(builders)}")
    return builders[name]()


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def seed_words(key: jax.Array) -> tuple[int, ...]:
    """The words of a JAX key: the seed material of a torch run (`make_torch_train`)."""
    return tuple(int(w) for w in np.asarray(jax.random.key_data(key)).ravel())


def minibatches(order_seed: tuple[int, ...], epoch: int, n: int, batch: int) -> np.ndarray:
    """Epoch `epoch`'s minibatches, i64[n // batch, batch]: a permutation of the `n` rows drawn from
    ``(*order_seed, epoch)``, the last partial batch dropped (as `train.fit_span`'s).

    Example:
        >>> minibatches((1, 2), 0, 10, 4).shape
        (2, 4)
    """
    steps = n // batch
    return np.random.default_rng((*order_seed, epoch)).permutation(n)[: steps * batch].reshape(steps, batch)


def train_epoch(run: TorchRun, data: TorchData, epoch: int) -> tuple[float, float, float]:
    """Epoch `epoch` of `run` (in place): ``(mean minibatch loss, val accuracy, val loss)``.

    Its minibatches come from `minibatches`; update t of the run uses ``run.learning_rate(t)``.
    """
    torch = _torch()
    cross_entropy = torch.nn.functional.cross_entropy
    n = data.x_train.shape[0]
    idx_TxB = torch.as_tensor(minibatches(run.order_seed, epoch, n, run.batch))
    steps = len(idx_TxB)
    net, opt = run.net, run.optimizer
    losses = torch.empty(steps)
    for t in range(steps):
        idx_B = idx_TxB[t]
        loss = cross_entropy(net.apply(data.x_train[idx_B], True, run.generator), data.y_train[idx_B])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = run.learning_rate(epoch * steps + t)
        opt.step()
        losses[t] = loss.detach()
    acc, val_loss = _evaluate(net, data, run.eval_batch)
    return float(losses.mean()), acc, val_loss


def _evaluate(net: TorchNet, data: TorchData, chunk: int) -> tuple[float, float]:
    """Validation accuracy and mean loss, in chunks of `chunk` examples (`train.evaluate`)."""
    torch = _torch()
    m = data.x_val.shape[0]
    correct, total = 0, 0.0
    with torch.no_grad():
        for i in range(0, m, chunk):
            logits, y = net.apply(data.x_val[i:i + chunk], False), data.y_val[i:i + chunk]
            correct += int((logits.argmax(1) == y).sum())
            total += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    return correct / m, total / m


def make_torch_train(space: SearchSpace, config: train.TrainConfig, in_features: int, num_classes: int,
                     *, input_shape: tuple[int, int, int] | None = None,
                     family: ModelFamily | None = None) -> TorchTrainer:
    """Builds the PyTorch counterpart of `train.make_dense_train` on the SAME objective (module docstring).

    Args:
      space: the search space; its family (`models.family_of`) picks the network (MLP or CNN).
      config: epochs, batch size, fitness and evaluation chunk, as for the JAX trainer.
      in_features, num_classes: F and C of the (flat) data.
      input_shape: ``(H, W, C)`` of one example (a CNN space needs it).
      family: the family, when the caller picked it already.

    Returns:
      A `TorchTrainer`. Its ``span_program`` returns a function of `train.DenseTrainer.span_program`'s
      call (its ``hp`` unused, its state a `TorchRun` changed in place), so `base.Evaluator` prunes either
      backend with one code path.

    Raises:
      ImportError: PyTorch is not installed (`available`).
    """
    if not available():
        raise ImportError(f"the torch backend needs PyTorch: {INSTALL}")
    train.check_config(config)
    family = family_of(space) if family is None else family
    build, layout = _network_of(family)
    config = train.batch_config(space, config, family)
    mcfg = family.config(space, in_features, num_classes, input_shape, False)
    decode = jax.jit(family.decode(space, mcfg))  # one small compile per trainer, not per configuration
    batch_of = train.batch_reader(space)
    batch_of = None if batch_of is None else jax.jit(batch_of)
    names, traced = optim.optimizer_names(space), optim.adam_hparams(space)

    def describe(position_D):
        arch, hp = decode(np.asarray(position_D, np.float32))
        return family.arch_to_python(arch), jax.tree.map(np.asarray, hp)

    def data(x_train, y_train, x_val, y_val) -> TorchData:
        torch = _torch()
        x = lambda a: layout(torch.from_numpy(np.array(a, np.float32).reshape(len(a), -1)), mcfg).contiguous()
        y = lambda a: torch.from_numpy(np.array(a, np.int64))  # np.array: a writable copy (JAX arrays are not)
        return TorchData(x(x_train), y(y_train), x(x_val), y(y_val))

    def start(key, position_D, data: TorchData) -> TorchRun:
        torch = _torch()
        arch, hp = describe(position_D)
        n = data.x_train.shape[0]
        size = config.batch_size if batch_of is None else int(batch_of(np.asarray(position_D, np.float32)))
        batch = min(size, n)
        words = seed_words(key)
        init_seed = np.random.SeedSequence((*words, 0)).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(init_seed))  # initial weights, then dropout masks
        net = build(arch, mcfg, generator)
        name = names[int(np.clip(hp.optimizer, 0, len(names) - 1))]
        opt = make_optimizer(name, net.params.values(), hp, traced)
        lr = _schedule(float(hp.learning_rate), float(hp.lr_decay), config.epochs * (n // batch))
        return TorchRun(net, opt, lr, generator, (*words, 1), batch, min(config.eval_batch_size, len(data.y_val)))

    def curves(run: TorchRun, data: TorchData, first: int, num_epochs: int) -> train.Metrics:
        loss_E, acc_E, vloss_E = np.asarray([train_epoch(run, data, e) for e in range(first, first + num_epochs)],
                                            np.float32).T
        return train.metrics_of(loss_E, acc_E, vloss_E, config.fitness)

    def train_position(key, position_D, data: TorchData) -> train.Metrics:
        return curves(start(key, position_D, data), data, 0, config.epochs)

    def span_program(position_D, n_train: int):
        """(`run(key, hp, data, state, start, num_epochs) -> (Metrics, TorchRun)`, hp): epochs ``start ..
        start + num_epochs - 1`` of the one-shot run; `state` None starts it (`hp` is not read)."""
        def run(key, hp, data, state, first, num_epochs):
            state = start(key, position_D, data) if state is None else state
            return curves(state, data, int(first), num_epochs), state

        return run, describe(position_D)[1]

    return TorchTrainer(train_position, span_program, start, describe, data, config)
