"""The study loop: initial design -> decode -> train the swarm -> fitness -> PSO tell -> report -> checkpoint.

One round trains every particle's network at once (`train.make_train`'s
`train_swarm`, compiled ahead of time once per study) and then moves the
particles with one PSO step. Host code runs once per round: it writes the
round's evaluations, prints a one-line summary and saves a checkpoint.

Two modes:
  fresh  every round trains each member from new weights: the classic PSO
         hyperparameter search of the original study.
  warm   a member whose architecture did not change since the last round keeps
         its weights and trains on (PBT-like); a member whose architecture
         changed starts from new weights.

Determinism: round r's keys are `fold_in(key(seed), r)`, so a study resumed
from the checkpoint of round r draws the same numbers as the uninterrupted one
and ends with the same result (bit for bit on CPU).

Example (a research script; ~20 lines):
    >>> import numpy as np, jaxswarm as js
    >>> x = np.random.rand(300, 10).astype(np.float32); y = (x.sum(1) > 5).astype(int)
    >>> data = js.from_arrays(x, y, seed=0)
    >>> space = js.SearchSpace({"n_layers": js.Int(1, 2), "units_1": js.Int(4, 32, log=True),
    ...     "units_2": js.Int(4, 32, log=True, when=lambda v: v["n_layers"] >= 2),
    ...     "learning_rate": js.Float(1e-3, 1e-1, log=True)})
    >>> result = js.tune(space, data, swarm_size=4, rounds=2, epochs=2, progress=False)
    >>> sorted(result.best_config)[:2]
    ['learning_rate', 'n_layers']
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm import pso as pso_lib
from jaxswarm import report, sampling, scale, train
from jaxswarm.data import Dataset, kfold_indices
from jaxswarm.space import SearchSpace, mlp_space

MODES = ("fresh", "warm")
LAYOUTS = ("masked", "packed", "serial")


@dataclasses.dataclass
class StudyConfig:
    """Everything that defines a study besides its data and space (the CLI's flags)."""

    swarm_size: int = 16
    rounds: int = 8
    epochs: int = 10
    batch_size: int = 64
    folds: int = 1  # 1: hold-out validation split; k > 1: k-fold CV on train+val
    mode: str = "fresh"
    init: str = "lhs"  # initial design: lhs (maximin Latin hypercube), sobol, uniform
    fitness: str = "accuracy"  # accuracy | loss
    patience: int | None = None  # stop after this many rounds without improvement
    seed: int = 0
    retrain: bool = True  # retrain the best config on train+val and report test accuracy
    retrain_epochs: int | None = None  # epochs of that final retrain (None: the search's epochs)
    layout: str = "masked"  # masked: one vmapped max-size program; packed: jaxswarm/packed.py; serial: members
    #                         one after another in one program (train.make_train; the CNN's choice on CPU)
    pso: dict = dataclasses.field(default_factory=dict)  # keyword arguments of pso.make_pso
    chunk_size: int | None = None  # members per device trained at once (None: planned from memory)
    memory_cap_gb: float | None = None  # per-device memory cap for that plan (None: the device's own)

    def validate(self) -> None:
        if self.swarm_size < 2:
            raise ValueError(f"swarm_size must be >= 2, got {self.swarm_size}")
        for name in ("rounds", "epochs", "batch_size", "folds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.init not in sampling.SAMPLERS:
            raise ValueError(f"init must be one of {sorted(sampling.SAMPLERS)}, got {self.init!r}")
        if self.fitness not in train.FITNESS_KINDS:
            raise ValueError(f"fitness must be one of {train.FITNESS_KINDS}, got {self.fitness!r}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.retrain_epochs is not None and self.retrain_epochs < 1:
            raise ValueError(f"retrain_epochs must be >= 1 or None, got {self.retrain_epochs}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {self.chunk_size}")
        if self.memory_cap_gb is not None and self.memory_cap_gb <= 0:
            raise ValueError(f"memory_cap_gb must be > 0 or None, got {self.memory_cap_gb}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.layout == "packed" and (self.mode != "fresh" or self.folds > 1):
            raise ValueError("layout 'packed' trains fresh members on one hold-out split: "
                             "use mode 'fresh' and folds 1, or layout 'masked'")
        if self.layout == "serial" and self.chunk_size not in (None, 1):
            raise ValueError(f"layout 'serial' trains one member at a time; chunk_size must be 1 or None, "
                             f"got {self.chunk_size}")
        if self.mode == "warm" and self.folds > 1:
            raise ValueError("mode 'warm' keeps one network per particle; it cannot be combined with folds > 1")


class StudyResult(NamedTuple):
    best_config: dict  # the best configuration found (Python values)
    best_fitness: float  # its validation fitness
    test_accuracy: float | None  # after a final retrain on train+val (None if retrain=False)
    rounds_run: int
    wall_time: float  # seconds, this process only
    out_dir: Path | None


def architecture_limits(space: SearchSpace) -> tuple[int, int]:
    """(max_layers, max_units) that the space can ask for: the masked network's size."""
    layers = units = 1
    for name, p in space.params.items():
        hi = getattr(p, "hi", getattr(p, "value", 1))
        if name == "n_layers":
            layers = int(hi)
        elif name.startswith("units_"):
            layers = max(layers, int(name.split("_")[1]))
            units = max(units, int(hi))
    return layers, units


class Study:
    """A PSO study over `space` on `dataset`; `run()` drives it round by round.

    Args:
      space: the search space (names as in `space.mlp_space`).
      dataset: a `data.Dataset` (see `data.load_dataset`, `data.from_arrays`).
      config: the study's `StudyConfig`.
      out_dir: results directory (None: keep results in memory only; no checkpoints).
      progress: show a progress bar and one line per round.
      settings: the CLI's merged settings, stored in study.json so `--resume` can rebuild the study.
    """

    def __init__(self, space: SearchSpace, dataset: Dataset, config: StudyConfig,
                 out_dir: str | Path | None = None, progress: bool = True, settings: dict | None = None):
        config.validate()
        self.settings = settings  # what the CLI was given; stored in study.json for --resume
        self.space, self.dataset, self.config, self.progress = space, dataset, config, progress
        self.out_dir = None if out_dir is None else Path(out_dir).absolute()
        max_layers, max_units = architecture_limits(space)
        self.train_config = train.TrainConfig(
            epochs=config.epochs, batch_size=config.batch_size, max_layers=max_layers,
            max_units=max_units, fitness=config.fitness)
        x_train = dataset.x_train.reshape(len(dataset.x_train), -1)
        self.model = train.model_of(space)
        if self.model == "cnn" and (config.mode == "warm" or config.layout == "packed"):
            raise ValueError("the CNN space trains with mode 'fresh' and layout 'masked' or 'serial' only (for now)")
        self.trainer = train.make_train(space, self.train_config, x_train.shape[1], dataset.num_classes,
                                        input_shape=dataset.input_shape,
                                        layout="serial" if config.layout == "serial" else "masked")
        self.packed = None
        if config.layout == "packed":
            from jaxswarm import packed

            if not packed.supports(space):
                raise ValueError("layout 'packed' does not support spaces with batch_norm or dropout; "
                                 "use layout 'masked'")
            self.packed = packed.make_packed_train(space, self.train_config, x_train.shape[1],
                                                   dataset.num_classes)
        self.swarm = pso_lib.make_pso(
            config.swarm_size, space.num_dims, maximize=True,
            **{"num_iterations": config.rounds, **config.pso})
        if config.folds > 1:
            x = np.concatenate([dataset.x_train, dataset.x_val])
            y = np.concatenate([dataset.y_train, dataset.y_val])
            tr, va = kfold_indices(len(x), config.folds, seed=config.seed)
            self.data = train.fold_data(x, y, tr, va)
        else:
            self.data = train.device_data(dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val)
        self.key = jax.random.key(config.seed)
        # Shard the particle axis over every device (all processes' in a multi-host run) and
        # chunk the swarm when the estimate says it does not fit (jaxswarm.scale).
        n_train, n_val = len(dataset.x_train), len(dataset.x_val)
        if config.folds > 1:  # one pool, k (train, val) splits
            n_val = (n_train + n_val) // config.folds
            n_train = len(dataset.x_train) + len(dataset.x_val) - n_val
        self.memory_estimate = scale.estimate_memory(  # MLPConfig or CNNConfig (estimate_memory_cnn)
            self.trainer.model_config, self.train_config, config.swarm_size, n_train, max(n_val, 1),
            optimizers=train.optimizer_names(space), folds=config.folds)
        cap = None if config.memory_cap_gb is None else int(config.memory_cap_gb * 2**30)
        if config.mode == "warm":
            member, in_axes, state_argnum = self.trainer.train_member_warm, (0, 0, None, 0, 0), 3
        else:
            member, in_axes, state_argnum = self.trainer.train_member, (0, 0, None), None
        self.runner = scale.make_swarm_runner(
            member, in_axes=in_axes, state_argnum=state_argnum,
            chunk_size=1 if config.layout == "serial" else config.chunk_size,
            memory_cap_bytes=cap, estimate=self.memory_estimate, log=self._log)
        if self.packed is None:
            self.data = self.runner.replicate(self.data)  # on every device once, not every round

    # -- one round ---------------------------------------------------------

    def _round_keys(self, r: int):
        k = jax.random.fold_in(self.key, r)
        k_train, k_tell = jax.random.split(k)
        return jax.random.split(k_train, self.config.swarm_size), k_tell

    def _compile(self, state):
        keys, _ = self._round_keys(0)
        t0 = time.perf_counter()
        if self.packed is not None:
            # The packed program's shapes follow the particles; it compiles (and caches) per plan shape.
            # Compiling happens inside the rounds, so it is part of each round's seconds.
            def compiled(keys, positions, data):
                return self.packed.train_swarm(keys, positions, data, jax.random.fold_in(keys[0], 1))
            return compiled, 0.0
        if self.config.mode == "warm":
            variables = self._fresh_variables(keys, state.position)
            self.runner.compile(keys, state.position, self.data, variables,
                                jnp.zeros(self.config.swarm_size, bool))
        else:
            self.runner.compile(keys, state.position, self.data)
        return self.runner, time.perf_counter() - t0

    def _fresh_variables(self, keys, positions):
        return jax.vmap(self.trainer.init_member)(keys, positions)

    # -- the loop ----------------------------------------------------------

    def run(self, resume: bool = False) -> StudyResult:
        cfg, t_start = self.config, time.perf_counter()
        init_key = jax.random.fold_in(self.key, -1 % (2**31))
        design = sampling.initial_design(init_key, cfg.init, cfg.swarm_size, self.space.num_dims)
        state = self.swarm.init(jax.random.fold_in(init_key, 1), design)
        warm_vars, prev_arch = None, None
        start, stale, best_seen = 0, 0, -np.inf
        ckpt = None
        if self.out_dir is not None:
            from jaxswarm import checkpoint

            self._prepare_out_dir(resume)
            ckpt = checkpoint.Checkpointer(self.out_dir / "checkpoints")
            if resume:
                restored = ckpt.restore_latest(self._checkpoint_tree(state, warm_vars))
                if restored is not None:
                    start, tree = restored
                    state = pso_lib.PSOState(**tree["pso"])
                    stale, best_seen = int(tree["stale"]), float(tree["best_seen"])
                    if cfg.mode == "warm":
                        warm_vars, prev_arch = tree["variables"], tree["arch"]
                    for name in (report.EVALUATIONS, report.ROUNDS):
                        report.truncate_rounds(self.out_dir / name, start)
        compiled, compile_s = None, 0.0
        if start >= cfg.rounds:  # a finished study resumed (e.g. to retrain): nothing to compile
            self._log(f"all {cfg.rounds} rounds are in the checkpoint; no training rounds to run")
        else:
            compiled, compile_s = self._compile(state)
            self._log(f"compiled the swarm program in {compile_s:.1f}s "
                      f"({cfg.swarm_size} members, {self.space.num_dims} dims, mode {cfg.mode}; "
                      f"{self.runner.plan(cfg.swarm_size).describe()})"
                      if self.packed is None else
                      f"packed layout: {cfg.swarm_size} members; programs compile per plan shape during rounds")
        bar = _progress(cfg.rounds, start, self.progress)
        r = start
        for r in range(start, cfg.rounds):
            t0 = time.perf_counter()
            keys, k_tell = self._round_keys(r)
            positions = self.swarm.ask(state)
            if cfg.mode == "warm":
                arch = self._arch_signature(positions)
                keep = (np.zeros(cfg.swarm_size, bool) if prev_arch is None
                        else np.all(np.asarray(prev_arch) == arch, axis=1))
                if warm_vars is None:
                    warm_vars = self._fresh_variables(keys, positions)
                metrics, warm_vars = compiled(keys, positions, self.data, warm_vars, jnp.asarray(keep))
                prev_arch = arch
            else:
                metrics = compiled(keys, positions, self.data)
            state = self.swarm.tell(k_tell, state, metrics.fitness)
            metrics = jax.tree.map(np.asarray, metrics)
            seconds = time.perf_counter() - t0
            best_fitness = float(state.global_best_fitness)
            best_config = self.space.to_python(np.asarray(state.global_best_position))
            improved = best_fitness > best_seen
            stale = 0 if improved else stale + 1
            best_seen = max(best_seen, best_fitness)
            summary = {
                "round": r, "best_fitness": best_fitness, "best_config": best_config,
                "median_fitness": float(np.median(np.where(np.isfinite(metrics.fitness), metrics.fitness, np.nan)))
                if np.isfinite(metrics.fitness).any() else None,
                "round_best_fitness": float(np.max(metrics.fitness)),
                "diverged": int(metrics.diverged.sum()), "seconds": seconds,
            }
            if self.out_dir is not None:
                if scale.is_primary():  # multi-host: every process runs the loop, one writes
                    report.append_jsonl(self.out_dir / report.EVALUATIONS,
                                        self._evaluation_rows(r, positions, metrics, seconds))
                    report.append_jsonl(self.out_dir / report.ROUNDS, [summary])
                saved_vars = None if warm_vars is None else self.runner.unpad(warm_vars, cfg.swarm_size)
                tree = self._checkpoint_tree(state, saved_vars, stale, best_seen, prev_arch)
                ckpt.save(r + 1, tree)
            self._round_line(bar, summary)
            if cfg.patience is not None and stale >= cfg.patience:
                self._log(f"no improvement for {stale} rounds: stopping early after round {r}")
                break
        if bar is not None:
            bar.close()
        rounds_run = (r + 1) if cfg.rounds > start else start
        best_position = np.asarray(state.global_best_position)
        best_config = self.space.to_python(best_position)
        best_fitness = float(state.global_best_fitness)
        test_acc = self.retrain(best_position) if cfg.retrain else None
        wall = time.perf_counter() - t_start
        if self.out_dir is not None and scale.is_primary():
            report.write_json(self.out_dir / report.BEST, {
                "best_config": best_config, "best_fitness": best_fitness, "fitness": cfg.fitness,
                "test_accuracy": test_acc, "rounds_run": rounds_run,
                "position": best_position.tolist(), "compile_seconds": compile_s})
            report.write_csv(self.out_dir / report.EVALUATIONS, self.out_dir / report.CSV)
            report.plot(self.out_dir)
        if ckpt is not None:
            ckpt.close()
        self._log(f"best {cfg.fitness} {best_fitness:.4f} with {best_config}"
                  + (f"; test accuracy after retrain {test_acc:.4f}" if test_acc is not None else ""))
        return StudyResult(best_config, best_fitness, test_acc, rounds_run, wall, self.out_dir)

    def retrain(self, position_D) -> float:
        """Trains the configuration at `position_D` on train+val; returns its test accuracy.

        The winner trains as its real-size network (`train.make_dense_train`,
        the same function as its masked member, without the padding).
        `StudyConfig.retrain_epochs` sets the length of this run (searching on
        short runs and retraining the winner longer is the usual budget split).
        """
        return float(self.retrain_metrics(position_D).val_accuracy)

    def retrain_metrics(self, position_D, dataset: Dataset | None = None) -> train.Metrics:
        """`retrain`'s whole `train.Metrics` (validation fields = the test set, one entry per epoch).

        `dataset` (default: the study's) is the data of the retrain, e.g. the
        full training set when the search ran on a part of it.
        """
        ds = self.dataset if dataset is None else dataset
        data = train.device_data(np.concatenate([ds.x_train, ds.x_val]),
                                 np.concatenate([ds.y_train, ds.y_val]), ds.x_test, ds.y_test)
        key = jax.random.fold_in(self.key, 2**30)
        epochs = self.config.retrain_epochs or self.train_config.epochs
        dense = train.make_dense_train(self.space, self.train_config._replace(epochs=epochs),
                                       data.x_train.shape[1], ds.num_classes, input_shape=ds.input_shape,
                                       on_epoch=_retrain_progress(epochs, self._log) if self.progress else None)
        arch, hp = dense.describe(position_D)
        self._log(f"retraining {arch} (lr {float(hp.learning_rate):.2e}) for {epochs} epochs "
                  f"on {len(data.y_train)} images")
        return dense.train_position(key, np.asarray(position_D), data)

    # -- helpers -----------------------------------------------------------

    def _arch_signature(self, positions_SxD) -> np.ndarray:
        arch, _ = jax.vmap(self.trainer.hparams)(positions_SxD)
        layers = np.arange(self.train_config.max_layers)[None, :]
        n = np.asarray(arch.n_layers)[:, None]
        units = np.where(layers < n, np.asarray(arch.units), 0)
        return np.concatenate([n, units], axis=1)

    def _checkpoint_tree(self, state, warm_vars, stale=0, best_seen=-np.inf, prev_arch=None):
        tree: dict[str, Any] = {
            "pso": state._asdict(),
            "stale": np.asarray(stale, np.int32),
            "best_seen": np.asarray(best_seen, np.float32),
        }
        if self.config.mode == "warm":
            if warm_vars is None:  # a template for restore: shapes only matter
                keys, _ = self._round_keys(0)
                warm_vars = self._fresh_variables(keys, state.position)
            tree["variables"] = warm_vars
            tree["arch"] = (np.zeros((self.config.swarm_size, self.train_config.max_layers + 1), np.int64)
                            if prev_arch is None else np.asarray(prev_arch))
        return tree

    def _evaluation_rows(self, r, positions, metrics, seconds):
        rows = []
        pos = np.asarray(positions)
        for i in range(self.config.swarm_size):
            rows.append({
                "round": r, "particle": i, "config": self.space.to_python(pos[i]),
                "fitness": float(metrics.fitness[i]), "val_accuracy": float(metrics.val_accuracy[i]),
                "best_val_accuracy": float(metrics.best_val_accuracy[i]),
                "val_loss": float(metrics.val_loss[i]), "diverged": bool(metrics.diverged[i]),
                "seconds": seconds / self.config.swarm_size,
                "position": dict(zip(self.space.dim_names, pos[i].tolist())),
            })
        return rows

    def _prepare_out_dir(self, resume: bool) -> None:
        out = self.out_dir
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise StudyError(f"cannot write to the output directory {out}: {e.strerror or e}") from None
        existing = (out / report.EVALUATIONS).exists()
        if resume and not (out / "checkpoints").exists():
            raise StudyError(f"--resume: {out} holds no checkpoints to resume from")
        if not resume and existing:
            raise StudyError(f"{out} already holds a study; pass --resume to continue it or choose a new directory")
        if not resume:
            report.write_json(out / report.STUDY, {
                "config": dataclasses.asdict(self.config), "dataset": self.dataset.name,
                "settings": self.settings,
                "space": repr(self.space), "train": self.train_config._asdict(),
                "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]})

    def _log(self, msg: str) -> None:
        if self.progress:
            from tqdm import tqdm

            tqdm.write(msg)

    def _round_line(self, bar, s: dict) -> None:
        if bar is None:
            return
        cfg = ", ".join(f"{k}={_short(v)}" for k, v in s["best_config"].items())
        bar.update(1)
        bar.set_postfix(best=f"{s['best_fitness']:.4f}")
        bar.write(f"round {s['round'] + 1}/{self.config.rounds}  best {s['best_fitness']:.4f}  "
                  f"round max {s['round_best_fitness']:.4f}  diverged {s['diverged']}  "
                  f"{s['seconds']:.1f}s  | {cfg}")


def _retrain_progress(epochs: int, log: Callable[[str], None]) -> Callable:
    """An `on_epoch` for `train.make_dense_train` that logs each epoch of a retrain (its data: train+val vs test)."""
    def on_epoch(epoch, train_loss, test_accuracy):
        log(f"retrain epoch {int(epoch) + 1}/{epochs}: train loss {float(train_loss):.4f}, "
            f"test accuracy {float(test_accuracy):.4f}")
    return on_epoch


class StudyError(ValueError):
    """A study cannot start or continue (bad output directory, nothing to resume, ...)."""


def _short(v):
    return f"{v:.3g}" if isinstance(v, float) else v


def _progress(total: int, start: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="rounds", unit="round", dynamic_ncols=True)


def tune(space: SearchSpace | None, dataset: Dataset, *, out_dir=None, progress=True,
         resume=False, **config) -> StudyResult:
    """Runs a PSO study in one call: `tune(space, dataset, swarm_size=16, rounds=8, ...)`.

    Keyword arguments are `StudyConfig` fields; `space=None` uses `mlp_space()`.
    """
    study = Study(space or mlp_space(), dataset, StudyConfig(**config), out_dir, progress)
    return study.run(resume=resume)


def load_result(out_dir) -> dict:
    """Reads a finished study's best.json."""
    return json.loads((Path(out_dir) / report.BEST).read_text())
