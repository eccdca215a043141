"""Run a swarm of members: shard particles over devices and hosts, chunk them to fit memory.

`make_swarm_runner(member_fn)` turns a per-member function into a swarm
runner that

* shards the particle axis over a 1-D ``Mesh(devices, ("particles",))``
  (``NamedSharding``; data and every other shared argument are replicated),
  with `jax.shard_map`: members never talk to each other, so the program has
  no collective but the final gather of the (small) metrics;
* pads a swarm whose size S is not a multiple of ``devices x chunk`` by
  repeating real rows (pad row ``j`` copies member ``j mod S``) and drops the
  pad rows' results;
* trains, when the swarm does not fit in a device's memory, in chunks of
  particles: each device runs its members ``chunk_size`` at a time in a
  `lax.scan` over chunks, inside the one compiled program (compiled once per
  study; moving particles never recompiles);
* with ``state_argnum`` (warm mode: per-member weights carried over rounds),
  keeps the swarm state as the scan carry, updated in place with
  ``dynamic_update_slice`` and donated to the program, so a round holds one
  copy of it.

`estimate_memory` predicts a swarm's memory before anything is compiled from
the model family's terms (`ModelFamily.memory`), every optimizer state
`optim.make_optimizer` keeps, the per-epoch shuffle and the data;
`device_memory_bytes` says what a device has and `plan_chunks` picks the
chunk size.

Multi-host: `initialize_distributed()` wraps `jax.distributed.initialize`
(CPU collectives over gloo); every process then builds the same runner over
`jax.devices()` (all processes' devices) and runs the same study loop on the
same keys, each process training its own devices' members; the metrics come
back replicated on every process, so every process makes the same PSO step.
Write results only where `is_primary()`.

Example:
    >>> import jax, numpy as np
    >>> from jaxswarm.models import mlp_space
    >>> from jaxswarm.train import TrainConfig, make_train, device_data
    >>> space = mlp_space(max_layers=1, units=(4, 8))
    >>> x = np.random.rand(64, 8).astype(np.float32); y = (x[:, 0] > .5).astype(np.int32)
    >>> data = device_data(x[:48], y[:48], x[48:], y[48:])
    >>> trainer = make_train(space, TrainConfig(epochs=1, batch_size=16), 8, 2)
    >>> runner = make_swarm_runner(trainer.train_member, chunk_size=2, log=None)
    >>> pos = jax.random.uniform(jax.random.key(0), (5, space.num_dims))
    >>> metrics = runner(jax.random.split(jax.random.key(1), 5), pos, data)
    >>> metrics.fitness.shape, runner.plan(5).num_chunks
    ((5,), 3)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxswarm import optim
from jaxswarm.costs import memory_analysis
from jaxswarm.models import ModelFamily

__all__ = [
    "PARTICLE_AXIS",
    "SwarmPlan",
    "SwarmRunner",
    "make_swarm_runner",
    "make_swarm_plan",
    "estimate_memory",
    "device_memory_bytes",
    "plan_chunks",
    "memory_analysis",
    "initialize_distributed",
    "is_primary",
    "particle_mesh",
    "put",
]

PARTICLE_AXIS = "particles"

# On a CPU, memory_stats() is None and every (fake) device shares the host's
# RAM: a device gets this fraction of physical memory divided by the number of
# local CPU devices (the rest is left to Python, the data on the host, XLA's
# own allocator slack and other processes).
CPU_MEMORY_FRACTION = 0.6
# On an accelerator, plan with this fraction of the allocator's bytes_limit
# (fragmentation, XLA workspace for convolutions/GEMMs, the data copies).
ACCELERATOR_MEMORY_FRACTION = 0.9

_F32 = 4


# ---------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------


class SwarmPlan(NamedTuple):
    """How S members are laid out: devices x chunks x members per chunk.

    Attributes:
      num_particles: S, the real members.
      num_devices: devices on the particle axis (all processes together).
      chunk_size: members one device trains at once.
      num_chunks: chunks each device trains one after another.
    """

    num_particles: int
    num_devices: int
    chunk_size: int
    num_chunks: int

    @property
    def per_device(self) -> int:
        """Members (real and pad) each device holds."""
        return self.chunk_size * self.num_chunks

    @property
    def padded(self) -> int:
        """S rounded up to ``num_devices * chunk_size * num_chunks``."""
        return self.num_devices * self.per_device

    def describe(self) -> str:
        pad = self.padded - self.num_particles
        text = (f"{self.num_particles} members over {self.num_devices} device(s), "
                f"{self.num_chunks} chunk(s) of {self.chunk_size} per device")
        return text + (f", padded with {pad} repeated member(s)" if pad else "")


def make_swarm_plan(num_particles: int, num_devices: int, chunk_size: int | None = None) -> SwarmPlan:
    """The layout of S members on `num_devices` devices, `chunk_size` at a time.

    Args:
      num_particles: S >= 1.
      num_devices: devices on the particle axis (>= 1).
      chunk_size: members a device trains at once; None: all of its members.
        Chunks are balanced: the count is ``ceil(per_device / chunk_size)`` and
        the size is then shrunk to the smallest that still needs no more
        chunks (less padding).

    Returns:
      A `SwarmPlan`.

    Example:
      >>> make_swarm_plan(6, 4)
      SwarmPlan(num_particles=6, num_devices=4, chunk_size=2, num_chunks=1)
      >>> make_swarm_plan(10, 1, chunk_size=4).padded
      12
    """
    s, d = _positive_int(num_particles, "num_particles"), _positive_int(num_devices, "num_devices")
    per_device = -(-s // d)
    if chunk_size is None:
        return SwarmPlan(s, d, per_device, 1)
    c = min(_positive_int(chunk_size, "chunk_size"), per_device)
    n = -(-per_device // c)
    return SwarmPlan(s, d, -(-per_device // n), n)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------


def _tree_bytes(tree) -> int:
    return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def estimate_memory(
    family: ModelFamily,
    model_config,
    train_config,
    num_particles: int,
    n_train: int,
    n_val: int,
    optimizers: Sequence[str] = ("adam",),
    folds: int = 1,
) -> dict:
    """Bytes one training run of S members needs, before anything is compiled.

    Per member (each device holds ``chunk_size`` of these at once):
      ``params``, ``batch_stats``: the family's max-size network;
      ``optimizer``: the states `optim.make_optimizer(optimizers)` keeps for
      the names given (`optim.optimizer_names(space)`); ``gradients``: one
      gradient; ``activations``: one minibatch forward + backward and
      ``eval_chunk``: one evaluation chunk of ``eval_batch_size`` rows (the
      family's `ModelFamily.memory`); ``shuffle``: the epoch's permutation;
      ``training_peak`` = the step's transients or the evaluation chunk,
      whichever is larger (they are not alive together).
    Shared (once per device): ``data`` = train and validation arrays (plus the
    padded validation copy `train.evaluate` makes when ``n_val`` is not a
    multiple of the chunk). The families' constants were fitted to XLA's
    `memory_analysis` on CPU (bench/results/scaling_cpu.md has the ratios).

    Args:
      family: the `models.ModelFamily` of the members.
      model_config: its static max-size config.
      train_config: `train.TrainConfig` (batch_size, eval_batch_size; with per-member
        ``batch_sizes``, the largest of them: the packed layout's per-size trainers step on whole
        batches; the other layouts on chunks of their gcd, for which it is an upper bound).
      num_particles: S.
      n_train, n_val: rows of the training and validation arrays.
      optimizers: the optimizer names whose states are alive.
      folds: k > 1: k-fold cross-validation (each member trains k networks
        at once under vmap; data is one pool of ``n_train + n_val`` rows).

    Returns:
      dict of ints (bytes): the terms above, ``per_member`` (their sum),
      ``shared``, ``total`` = shared + S * per_member, and ``num_particles``.

    Example:
      >>> from jaxswarm.models import FAMILIES
      >>> from jaxswarm.models.mlp import MLPConfig
      >>> from jaxswarm.train import TrainConfig
      >>> est = estimate_memory(FAMILIES["mlp"], MLPConfig(64, 10, 2, 64), TrainConfig(batch_size=64), 8, 1000, 200)
      >>> est["total"] == est["shared"] + 8 * est["per_member"]
      True
    """
    s = _positive_int(num_particles, "num_particles")
    n_train, n_val = _positive_int(n_train, "n_train"), _positive_int(n_val, "n_val")
    b = min(max((train_config.batch_size, *train_config.batch_sizes)), n_train)
    e = min(train_config.eval_batch_size, n_val)
    terms = family.memory(model_config, b, e)
    return _assemble(terms.variables, optimizers, terms.activations, terms.eval_chunk, s, n_train, n_val, e,
                     terms.in_features, folds)


def _assemble(variables, optimizers, activations: int, eval_chunk: int, s: int, n_train: int, n_val: int,
              e: int, f: int, folds) -> dict:
    """`estimate_memory`'s dict from one network's variables (shapes), activations and eval chunk."""
    folds = _positive_int(folds, "folds")
    opt = optim.make_optimizer(tuple(optimizers), total_steps=1)
    opt_state = jax.eval_shape(lambda p: opt.init(p, optim.default_hparams(tuple(optimizers))), variables["params"])
    params = _tree_bytes(variables["params"])
    per_network = dict(params=params, batch_stats=_tree_bytes(variables["batch_stats"]),
                       optimizer=_tree_bytes(opt_state), gradients=params, activations=activations,
                       eval_chunk=eval_chunk, shuffle=4 * 3 * n_train)
    per_network = {k: folds * v for k, v in per_network.items()}
    per_network["training_peak"] = max(per_network["gradients"] + per_network["activations"],
                                       per_network["eval_chunk"])
    per_member = sum(per_network[k] for k in ("params", "batch_stats", "optimizer", "training_peak", "shuffle"))
    n_pad_val = -(-n_val // e) * e if n_val % e else 0  # train.evaluate pads a copy only when needed
    data = _F32 * ((n_train + n_val + n_pad_val) * f) + 4 * (n_train + n_val + n_pad_val)
    return dict(per_network, per_member=per_member, data=data, shared=data,
                total=data + s * per_member, num_particles=s)


def device_memory_bytes(device=None, fraction: float | None = None) -> int:
    """Bytes a swarm may plan to use on `device` (default: the first local device).

    Accelerators: ``fraction`` (default 0.9) of ``device.memory_stats()
    ["bytes_limit"]``. CPU (``memory_stats()`` is None): ``fraction``
    (default 0.6) of physical RAM -- ``psutil.virtual_memory().total`` when
    psutil is installed, else ``os.sysconf`` pages x page size -- divided by
    the number of local devices of the platform (fake devices from
    ``--xla_force_host_platform_device_count`` share the same RAM).

    Example:
      >>> device_memory_bytes() > 0
      True
    """
    device = jax.local_devices()[0] if device is None else device
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 -- some backends raise instead of returning None
        stats = None
    if stats and stats.get("bytes_limit"):
        frac = ACCELERATOR_MEMORY_FRACTION if fraction is None else fraction
        return int(frac * stats["bytes_limit"])
    try:
        import psutil

        physical = int(psutil.virtual_memory().total)
    except ImportError:
        physical = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    frac = CPU_MEMORY_FRACTION if fraction is None else fraction
    sharing = max(1, sum(d.platform == device.platform for d in jax.local_devices()))
    return int(frac * physical / sharing)


def plan_chunks(estimate: dict, capacity: int, num_particles: int, num_devices: int) -> int:
    """Members per device per chunk so that shared + chunk x per_member fits `capacity`.

    Args:
      estimate: from `estimate_memory` (``per_member`` and ``shared`` are used).
      capacity: bytes one device may use (`device_memory_bytes`, or a cap).
      num_particles: S; num_devices: devices on the particle axis.

    Returns:
      The chunk size (all of a device's members when they fit), balanced so
      that the chunks are as even as the count requires.

    Raises:
      ValueError: when not even one member fits.

    Example:
      >>> plan_chunks({"per_member": 100, "shared": 50}, 450, 16, 2)
      4
    """
    per_device = -(-_positive_int(num_particles, "num_particles") // _positive_int(num_devices, "num_devices"))
    room = int(capacity) - int(estimate["shared"])
    fits = room // max(1, int(estimate["per_member"]))
    if fits < 1:
        raise ValueError(
            f"capacity {_gib(capacity)} cannot hold one member: shared data {_gib(estimate['shared'])} "
            f"+ one member {_gib(estimate['per_member'])}; use a smaller network, batch or eval_batch_size")
    if fits >= per_device:
        return per_device
    n_chunks = -(-per_device // fits)
    return -(-per_device // n_chunks)


def _gib(n) -> str:
    """Human-readable bytes: 1.50 GiB, 12.3 MiB, 900 KiB."""
    n = int(n)
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------
# Distributed
# ---------------------------------------------------------------------------


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, **kwargs) -> None:
    """Joins a multi-process (multi-host) JAX run; call before any other JAX work.

    A thin wrapper over `jax.distributed.initialize`. Missing arguments come
    from ``JAXSWARM_COORDINATOR`` (``host:port`` of process 0),
    ``JAXSWARM_NUM_PROCESSES`` and ``JAXSWARM_PROCESS_ID``, then from JAX's own
    cluster detection (SLURM, Open MPI, Kubernetes, Cloud TPU). CPU
    collectives use gloo (``jax_cpu_collectives_implementation``), so
    CPU-only hosts work too. Afterwards `jax.devices()` lists every process's
    devices: build `make_swarm_runner` over them (the default) and run the same
    study loop in every process.

    Args:
      coordinator_address, num_processes, process_id: as in
        `jax.distributed.initialize`.
      **kwargs: passed on (e.g. ``local_device_ids``, ``initialization_timeout``).
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAXSWARM_COORDINATOR")
    if num_processes is None and env.get("JAXSWARM_NUM_PROCESSES"):
        num_processes = int(env["JAXSWARM_NUM_PROCESSES"])
    if process_id is None and env.get("JAXSWARM_PROCESS_ID"):
        process_id = int(env["JAXSWARM_PROCESS_ID"])
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in 0..{num_processes - 1}, got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, **kwargs)


def is_primary() -> bool:
    """True in the process that writes results (`jax.process_index() == 0`)."""
    return jax.process_index() == 0


def put(x, sharding):
    """`x` (an array, or host values every process holds alike) laid out on `sharding`.

    One process: `jax.device_put`. Several: each process fills its own
    devices' shards from its host copy (`jax.make_array_from_callback`), so
    the same call works on one host and on many. An array already on
    `sharding` is returned as it is.
    """
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
        return x
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def particle_mesh(devices: Sequence | None = None) -> Mesh:
    """A 1-D mesh ``("particles",)`` over `devices` (default: all processes' devices).

    Built with `jax.sharding.Mesh` and an ``Auto`` axis (`jax.make_mesh`
    defaults to Explicit axes, under which indexing a sharded array needs a
    reshard).
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must not be empty")
    return Mesh(np.asarray(devices), (PARTICLE_AXIS,), axis_types=(AxisType.Auto,))


# ---------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------


class _ArgSpec(NamedTuple):
    treedef: Any
    leaves: tuple  # per leaf: (shape-without-S or full shape, dtype str, key impl or None)


class SwarmRunner:
    """Runs ``member_fn`` for every member of a swarm, sharded and chunked.

    Build it with `make_swarm_runner`. Calling it is like calling
    ``jit(vmap(member_fn, in_axes))``: per-member arguments have a leading S
    axis, shared ones (``in_axes`` None) do not. The program for a given swarm
    size and argument shapes compiles once (`compile`) and is reused.

    Attributes:
      mesh: the 1-D particle mesh; devices: its devices.
      compile_seconds: wall time of the last compilation.
      last_plan: the `SwarmPlan` of the last call.
    """

    def __init__(self, member_fn: Callable, *, in_axes: Sequence[int | None], state_argnum: int | None,
                 devices: Sequence | None, chunk_size: int | None, memory_cap_bytes: int | None,
                 estimate: dict | None, log: Callable[[str], Any] | None):
        self.member_fn = member_fn
        self.in_axes = tuple(in_axes)
        if any(a not in (0, None) for a in self.in_axes):
            raise ValueError(f"in_axes entries must be 0 or None, got {in_axes}")
        if 0 not in self.in_axes:
            raise ValueError(f"in_axes needs at least one per-member (0) argument, got {in_axes}")
        if state_argnum is not None and not (0 <= state_argnum < len(self.in_axes)
                                             and self.in_axes[state_argnum] == 0):
            raise ValueError(f"state_argnum {state_argnum} must name a per-member argument of in_axes {in_axes}")
        self.state_argnum = state_argnum
        self.mesh = particle_mesh(devices)
        self.devices = list(self.mesh.devices.flat)
        self.chunk_size = None if chunk_size is None else _positive_int(chunk_size, "chunk_size")
        self.memory_cap_bytes = None if memory_cap_bytes is None else int(memory_cap_bytes)
        if self.memory_cap_bytes is not None and self.memory_cap_bytes <= 0:
            raise ValueError(f"memory_cap_bytes must be positive, got {memory_cap_bytes}")
        if self.memory_cap_bytes is not None and estimate is None:
            raise ValueError("memory_cap_bytes needs an estimate (estimate_memory(...)) to plan chunks")
        self.estimate = estimate
        self.log = log
        self._batched = NamedSharding(self.mesh, P(PARTICLE_AXIS))
        self._replicated = NamedSharding(self.mesh, P())
        self._programs: dict = {}
        self._plans: dict = {}
        self.compile_seconds = 0.0
        self.last_plan: SwarmPlan | None = None

    # -- planning ----------------------------------------------------------

    def capacity(self) -> int:
        """Bytes per device the plan may use: the device's (`device_memory_bytes`) or the cap, the smaller."""
        local = [d for d in self.devices if d.process_index == jax.process_index()] or self.devices
        cap = device_memory_bytes(local[0])
        return cap if self.memory_cap_bytes is None else min(cap, self.memory_cap_bytes)

    def plan(self, num_particles: int) -> SwarmPlan:
        """The layout for S members (logged once per S when it pads or chunks)."""
        s = _positive_int(num_particles, "num_particles")
        if s in self._plans:
            return self._plans[s]
        d = len(self.devices)
        chunk, why = self.chunk_size, None
        if chunk is None and self.estimate is not None:
            capacity = self.capacity()
            chunk = plan_chunks(self.estimate, capacity, s, d)
            per_device = -(-s // d)
            if chunk < per_device:
                need = self.estimate["shared"] + per_device * self.estimate["per_member"]
                why = (f"estimated {_gib(need)} per device ({_gib(self.estimate['per_member'])} per member "
                       f"+ {_gib(self.estimate['shared'])} shared) exceeds {_gib(capacity)}"
                       + (" (memory cap)" if self.memory_cap_bytes is not None
                          and capacity == self.memory_cap_bytes else ""))
        plan = make_swarm_plan(s, d, chunk)
        self._plans[s] = plan
        if self.log is not None and (plan.num_chunks > 1 or plan.padded != s):
            self.log(f"swarm layout: {plan.describe()}" + (f"; chunked because {why}" if why else ""))
        return plan

    # -- arguments ---------------------------------------------------------

    def _num_particles(self, args) -> int:
        sizes = set()
        for i, (a, ax) in enumerate(zip(args, self.in_axes)):
            if ax == 0 and i != self.state_argnum:
                sizes |= {int(x.shape[0]) for x in jax.tree.leaves(a)}
        if not sizes and self.state_argnum is not None:
            sizes = {int(x.shape[0]) for x in jax.tree.leaves(args[self.state_argnum])}
        if len(sizes) != 1:
            raise ValueError(f"per-member arguments disagree on the swarm size: leading axes {sorted(sizes)}")
        return sizes.pop()

    def _place(self, x, sharding, plan: SwarmPlan | None):
        """x on `sharding`; per-member x (plan given) padded from S to plan.padded rows."""
        if plan is not None and x.shape[0] not in (plan.num_particles, plan.padded):
            raise ValueError(f"per-member argument has leading axis {x.shape[0]}, "
                             f"expected {plan.num_particles} (or padded {plan.padded})")
        if plan is not None and x.shape[0] != plan.padded:
            rows = np.arange(plan.padded) % plan.num_particles
            x = jnp.take(jnp.asarray(x), rows, axis=0) if jax.process_count() == 1 else np.take(np.asarray(x), rows, 0)
        return put(x, sharding)

    def _prepare(self, args):
        if len(args) != len(self.in_axes):
            raise ValueError(f"expected {len(self.in_axes)} arguments (in_axes={self.in_axes}), got {len(args)}")
        s = self._num_particles(args)
        plan = self.plan(s)
        flat, specs = [], []
        for a, ax in zip(args, self.in_axes):
            leaves, treedef = jax.tree.flatten(a)
            leaf_specs = []
            for x in leaves:
                impl = None
                if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
                    impl = str(jax.random.key_impl(x))
                    x = jax.random.key_data(x)
                elif not isinstance(x, jax.Array):
                    x = np.asarray(x)
                placed = self._place(x, self._batched if ax == 0 else self._replicated,
                                     plan if ax == 0 else None)
                flat.append(placed)
                shape = tuple(placed.shape[1:]) if ax == 0 else tuple(placed.shape)
                leaf_specs.append((shape, str(placed.dtype), impl))
            specs.append(_ArgSpec(treedef, tuple(leaf_specs)))
        return plan, flat, tuple(specs)

    # -- program -----------------------------------------------------------

    def _build(self, plan: SwarmPlan, specs):
        in_axes, state_i = self.in_axes, self.state_argnum
        member = self.member_fn
        counts = [len(sp.leaves) for sp in specs]
        offsets = np.cumsum([0] + counts)
        c, nc = plan.chunk_size, plan.num_chunks

        def unflatten(flat):
            args = []
            for i, sp in enumerate(specs):
                leaves = list(flat[offsets[i]:offsets[i + 1]])
                for j, (_, _, impl) in enumerate(sp.leaves):
                    if impl is not None:
                        leaves[j] = jax.random.wrap_key_data(leaves[j], impl=impl)
                args.append(jax.tree.unflatten(sp.treedef, leaves))
            return args

        if c == 1:  # one member at a time: no vmap, so the member's conditionals run one branch
            def swarm_fn(*args):
                one = [jax.tree.map(lambda x: x[0], a) if ax == 0 else a for a, ax in zip(args, in_axes)]
                return jax.tree.map(lambda x: x[None], member(*one))
        else:
            swarm_fn = jax.vmap(member, in_axes=in_axes)

        def local(*flat):  # one device's members: [plan.per_device, ...] per per-member leaf
            args = unflatten(flat)
            if nc == 1:
                return swarm_fn(*args)
            chunked = [jax.tree.map(lambda x: x.reshape((nc, c) + x.shape[1:]), a) if ax == 0 and i != state_i
                       else None for i, (a, ax) in enumerate(zip(args, in_axes))]
            state0 = args[state_i] if state_i is not None else ()

            def body(state, inputs):
                k, xs = inputs
                call = [xs[i] if xs[i] is not None else args[i] for i in range(len(args))]
                if state_i is not None:
                    call[state_i] = jax.tree.map(lambda s: lax.dynamic_slice_in_dim(s, k * c, c), state)
                    out, new = swarm_fn(*call)
                    state = jax.tree.map(lambda s, n: lax.dynamic_update_slice_in_dim(s, n, k * c, 0), state, new)
                    return state, out
                return state, swarm_fn(*call)

            state, outs = lax.scan(body, state0, (jnp.arange(nc), chunked))
            outs = jax.tree.map(lambda x: x.reshape((nc * c,) + x.shape[2:]), outs)
            return (outs, state) if state_i is not None else outs

        flat_specs = tuple(P(PARTICLE_AXIS) if ax == 0 else P()
                           for sp, ax in zip(specs, in_axes) for _ in sp.leaves)
        sharded = jax.shard_map(local, mesh=self.mesh, in_specs=flat_specs,
                                out_specs=P(PARTICLE_AXIS), check_vma=False)
        s = plan.num_particles

        def program(*flat):
            out = sharded(*flat)
            if state_i is not None:
                out, state = out
                return jax.tree.map(lambda x: x[:s], out), state
            return jax.tree.map(lambda x: x[:s], out)

        out_shardings = (self._replicated, self._batched) if state_i is not None else self._replicated
        donate = ()
        if state_i is not None:
            donate = tuple(range(offsets[state_i], offsets[state_i + 1]))
        return jax.jit(program, out_shardings=out_shardings, donate_argnums=donate)

    def compile(self, *args):
        """Lowers and compiles the program for these arguments' shapes (AOT); returns the `Compiled`.

        Sets `compile_seconds`. A later call with the same shapes reuses it.
        """
        plan, flat, specs = self._prepare(args)
        return self._compiled(plan, flat, specs)

    def _compiled(self, plan, flat, specs):
        sig = (plan, specs)
        if sig not in self._programs:
            t0 = time.perf_counter()
            self._programs[sig] = self._build(plan, specs).lower(*flat).compile()
            self.compile_seconds = time.perf_counter() - t0
        return self._programs[sig]

    def replicate(self, tree):
        """Puts a shared argument (e.g. the data) on every device of the mesh once, for reuse each round."""
        return jax.tree.map(lambda x: self._place(x if isinstance(x, jax.Array) else np.asarray(x),
                                                  self._replicated, None), tree)

    def memory_analysis(self, *args) -> dict:
        """`memory_analysis` of the compiled program for these arguments (per device)."""
        return memory_analysis(self.compile(*args))

    def __call__(self, *args):
        """Runs the swarm: outputs with leading S (state output: padded S, sharded; feed it back as is)."""
        plan, flat, specs = self._prepare(args)
        self.last_plan = plan
        return self._compiled(plan, flat, specs)(*flat)

    def unpad(self, tree, num_particles: int):
        """The first S rows of a padded per-member output (e.g. the warm state, for a checkpoint)."""
        return jax.tree.map(lambda x: x[:num_particles], tree)


def make_swarm_runner(
    member_fn: Callable,
    *,
    in_axes: Sequence[int | None] = (0, 0, None),
    state_argnum: int | None = None,
    devices: Sequence | None = None,
    chunk_size: int | None = None,
    memory_cap_bytes: int | None = None,
    estimate: dict | None = None,
    log: Callable[[str], Any] | None = print,
) -> SwarmRunner:
    """Builds a sharded, chunked swarm runner around a per-member function.

    Args:
      member_fn: trains ONE member, e.g. `Trainer.train_member`
        ``(key, position_D, data) -> Metrics`` or, with ``state_argnum=3``,
        `Trainer.train_member_warm` ``(key, position_D, data, variables, keep)
        -> (Metrics, variables)``.
      in_axes: per argument, 0 (per-member, leading S axis, sharded) or None
        (shared, replicated on every device), as in `jax.vmap`.
      state_argnum: index of a per-member argument that `member_fn` returns
        updated as the second element of its output; it is donated and
        updated in place chunk by chunk (one copy per round), and returned
        padded to `SwarmPlan.padded` rows, sharded, ready for the next call.
      devices: devices of the particle axis (default `jax.devices()`: every
        process's devices in a multi-host run).
      chunk_size: members a device trains at once; None: all of them, unless
        `estimate` says they do not fit (see below). With 1, each member runs
        without vmap (a `lax.scan` over members), so data-dependent
        `lax.cond` / `lax.switch` in `member_fn` run one branch.
      memory_cap_bytes: a per-device cap in bytes, below the device's memory.
      estimate: `estimate_memory(...)` for this training setup; with it the
        runner picks the chunk size with `plan_chunks` against
        `device_memory_bytes` (or the cap) and logs the decision.
      log: called with one line when the swarm is padded or chunked; None: quiet.

    Returns:
      A `SwarmRunner`: ``runner(*args)`` returns ``member_fn``'s outputs with a
      leading S axis, replicated on every device and process (the state
      output: sharded, padded).

    Example:
      >>> f = lambda k, x, w: (x * w).sum()
      >>> runner = make_swarm_runner(f, chunk_size=2, log=None)
      >>> keys = jax.random.split(jax.random.key(0), 5)
      >>> runner(keys, jnp.ones((5, 3)), jnp.arange(3.0)).tolist()
      [3.0, 3.0, 3.0, 3.0, 3.0]
    """
    return SwarmRunner(member_fn, in_axes=in_axes, state_argnum=state_argnum, devices=devices,
                       chunk_size=chunk_size, memory_cap_bytes=memory_cap_bytes, estimate=estimate, log=log)
