"""Host-side results of a study: JSONL per evaluation, round summaries, best config, CSV, plots, checkpoints.

This is the only module that writes result files (optuna.db aside: Optuna writes it, for
`optuna_record` and an Optuna strategy). Every file is
written atomically (temporary file + rename) or appended one complete line at
a time, so a killed study never leaves a half-written result.

Layout of a results directory::

    study.json          the study's configuration (written once, at start)
    evaluations.jsonl   one line per trained member: round, particle, config, fitness, ...
    rounds.jsonl        one line per round: best so far, its config, median fitness, time
    best.json           best configuration and, after the final retrain, its test accuracy
    evaluations.csv     evaluations.jsonl flattened to CSV (written at the end)
    progress.png        best / median fitness per round (a schedule: each rung's best too)  (with the `plot` extra)
    positions.png       particle positions per dimension        (with the `plot` extra)
    checkpoints/        orbax checkpoints of the 2 newest rounds (`Checkpointer`)
    optuna.db           the Optuna record: one trial per row of evaluations.jsonl (params with their
                        distributions, the value, the row's fields as user attributes), written by
                        `optuna_record` (an Optuna strategy's own study lives there too)
    .lock               the running study's PID; one writer per folder (`lock_folder`)

Every file is mode 0644 (0666 less the umask).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Iterable

import jax
import numpy as np
import orbax.checkpoint as ocp

EVALUATIONS = "evaluations.jsonl"
ROUNDS = "rounds.jsonl"
BEST = "best.json"
STUDY = "study.json"
CSV = "evaluations.csv"
LOCK = ".lock"


class CheckpointError(ValueError):
    """No checkpoint of a study restores."""


def os_reason(e: BaseException) -> str:
    """The operating system's words for `e` (``No space left on device: 'path'``) when an OSError lies in its
    chain of causes, else its type and first line."""
    first, seen = e, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return e.strerror + (f": {e.filename!r}" if e.filename else "")
        e = e.__cause__ or e.__context__
    return f"{type(first).__name__}: {_first_line(first)}"


def _first_line(e: BaseException, limit: int = 160) -> str:
    """An exception's message, first line only, cut at `limit` characters (orbax's run to kilobytes)."""
    text = (str(e).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit] + "..."


class FolderLocked(ValueError):
    """Another process holds a results folder's lock: a study is running there."""


class FolderLock:
    """An exclusive `flock` on a results folder itself, held until `release()`.

    The lock is on the folder, not on a file in it: deleting the .lock file (which
    only names the holder's PID, for a refused taker's message) lets no second
    writer in. The kernel drops the lock when the holder exits, however it dies,
    so a killed study never blocks a later `--resume`.
    """

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    def release(self) -> None:
        """Drops the lock (again: no-op)."""
        if self._fd is None:
            return
        try:
            self.path.write_text("")  # no holder any more
        except OSError:
            pass
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_folder(out_dir: Path) -> FolderLock:
    """Takes `out_dir`'s lock (one writer per results folder) and writes this process's PID into its .lock file.

    Args:
      out_dir: an existing results folder.

    Returns:
      The `FolderLock`; hold it while writing, `release()` it at the end.

    Raises:
      FolderLocked: another process holds the lock (a study is running there).
      OSError: the folder cannot be opened, or the .lock file not written (e.g. the folder is not writable).
    """
    path = Path(out_dir) / LOCK
    fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.write_text(f"{os.getpid()}\n")
    except BlockingIOError:
        os.close(fd)
        try:
            holder = path.read_text().strip()
        except OSError:
            holder = ""
        # Empty when the holder has the lock but has not written its PID yet (or the file was deleted).
        raise FolderLocked(f"{Path(out_dir)}: a study is running there (process {holder or 'unknown'} "
                           f"holds it); wait for it to end or choose another directory") from None
    except BaseException:
        os.close(fd)
        raise
    return FolderLock(path, fd)


def clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / jax scalars and arrays
        return clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, obj: Any) -> None:
    """Writes `obj` as JSON atomically."""
    write_text(path, json.dumps(clean(obj), indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Writes `text` atomically (temporary file + rename), mode 0644 (0666 less the umask)."""
    path = Path(path)
    # Not mkstemp: it creates 0600. Mode 0666 with O_EXCL gets the umask applied, as open() does,
    # without reading the umask (setting it to read it races with other threads).
    tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Appends rows, one JSON object per line, in a single write (a new file: 0666 less the umask)."""
    text = "".join(json.dumps(clean(r)) + "\n" for r in rows)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file ([] when it does not exist).

    A last line without its newline is a killed writer's partial append and is
    skipped; a line that does not parse anywhere else raises.

    Raises:
      ValueError: a corrupt line before the last one (one line naming the file and line).
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")  # the last item is "" when the file ends in a newline
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines):  # no newline after it: an append cut short
                break
            raise ValueError(f"{path}: line {i} is not valid JSON ({e.msg}, column {e.colno})") from None
    return rows


def truncate_rounds(path: Path, num_rounds: int) -> None:
    """Keeps only the rows of rounds < num_rounds (used when resuming from a checkpoint)."""
    rows = [r for r in read_jsonl(path) if r["round"] < num_rounds]
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_csv(jsonl_path: Path, csv_path: Path) -> None:
    """Flattens evaluations.jsonl into CSV (its config and position dicts as `config.<name>`, `position.<dim>`)."""
    rows = read_jsonl(jsonl_path)
    flat = []
    for r in rows:
        nested = [k for k in ("config", "position") if isinstance(r.get(k), dict)]
        row = {k: v for k, v in r.items() if k not in nested}
        for k in nested:  # after the scalar columns, as config.<name> always was
            row.update({f"{k}.{name}": x for name, x in r[k].items()})
        flat.append(row)
    columns: list[str] = []
    for row in flat:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(flat)
    write_text(csv_path, buf.getvalue())


def plot(out_dir: Path) -> list[Path]:
    """Draws progress.png and positions.png; returns the written paths ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir = Path(out_dir)
    rounds = read_jsonl(out_dir / ROUNDS)
    evals = read_jsonl(out_dir / EVALUATIONS)
    if not rounds:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    r = [x["round"] for x in rounds]
    ax.plot(r, [x["best_fitness"] for x in rounds], marker="o", label="best so far")
    ax.plot(r, [x["median_fitness"] for x in rounds], marker=".", label="round median")
    for rung in sorted({e["rung"] for e in evals if "rung" in e}):  # a schedule's rungs: each one's best
        best_at = {}
        for e in evals:
            if e.get("rung") == rung and e.get("fitness") is not None and not e.get("diverged"):
                best_at[e["round"]] = max(best_at.get(e["round"], -float("inf")), e["fitness"])
        ax.plot(sorted(best_at), [best_at[k] for k in sorted(best_at)], linestyle=":", marker="x", markersize=4,
                label=f"best of those stopped at rung {rung}")
    ax.set_xlabel("round")
    ax.set_ylabel("fitness (higher is better)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "progress.png", dpi=120)
    plt.close(fig)
    written.append(out_dir / "progress.png")

    dims = list(evals[0]["position"].keys()) if evals and "position" in evals[0] else []
    if dims:
        finite = [e for e in evals if e.get("fitness") is not None and not e.get("diverged")]
        best = max(finite, key=lambda e: e["fitness"]) if finite else None
        cols = min(3, len(dims))
        rows_ = -(-len(dims) // cols)
        fig, axes = plt.subplots(rows_, cols, figsize=(4 * cols, 2.6 * rows_), squeeze=False)
        for ax, name in zip(axes.flat, dims):
            _plot_values(ax, name, evals, best)
        for ax in list(axes.flat)[len(dims):]:
            ax.axis("off")
        fig.suptitle("hyperparameter values per round (star: the best evaluation)")
        fig.tight_layout()
        fig.savefig(out_dir / "positions.png", dpi=110)
        plt.close(fig)
        written.append(out_dir / "positions.png")
    return written


def _plot_values(ax, name: str, evals: list[dict], best: dict | None) -> None:
    """One hyperparameter's values over the rounds, in its own units: numbers as they are, choices as labels.

    A value of an inactive (conditional) parameter is not drawn.
    """
    shown = [(e["round"], e["config"][name]) for e in evals if name in e.get("config", {})]
    labels = sorted({str(v) for _, v in shown if not _is_number(v)})
    as_y = (lambda v: labels.index(str(v))) if labels else (lambda v: v)
    ax.scatter([r for r, _ in shown], [as_y(v) for _, v in shown], s=6, alpha=0.5)
    if best is not None and name in best.get("config", {}):
        ax.scatter([best["round"]], [as_y(best["config"][name])], marker="*", s=90, color="red", zorder=3)
    if labels:
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
    elif shown and min(v for _, v in shown) > 0 and max(v for _, v in shown) > 20 * min(v for _, v in shown):
        ax.set_yscale("log")  # e.g. learning rates: log-uniform priors
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("round", fontsize=8)
    ax.xaxis.get_major_locator().set_params(integer=True)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@contextlib.contextmanager
def _interrupt_after():
    """Holds a SIGINT (Ctrl-C) until the block ends, then raises it: a checkpoint is never cut in half, and
    orbax's threads never log a traceback of an interrupted save."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


@contextlib.contextmanager
def _quiet(logger: str):
    """Only critical records of `logger` while the block runs (the error it would log is raised instead)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def is_prng_key(x) -> bool:
    """True for a typed PRNG key array (or its `ShapeDtypeStruct`)."""
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def keys_as_data(tree):
    """`tree` with its typed PRNG keys (a state's own rng, PureJaxRL-style) as their raw data, for files that
    store plain arrays (orbax, msgpack). On shapes (`ShapeDtypeStruct`s) too: a restore's target."""
    def plain(x):
        if not is_prng_key(x):
            return x
        return jax.eval_shape(jax.random.key_data, x) if isinstance(x, jax.ShapeDtypeStruct) else \
            jax.random.key_data(x)

    return jax.tree.map(plain, tree)


def keys_from_data(restored, shapes):
    """`restored` (stored through `keys_as_data`) with the keys of `shapes` (its tree of arrays or
    `ShapeDtypeStruct`s) wrapped again, each of its own PRNG implementation."""
    def back(x, shape):
        if not is_prng_key(shape):
            return x
        impl = []  # the key type's implementation, read where a traced key has one
        jax.eval_shape(lambda k: impl.append(jax.random.key_impl(k)), shape)
        return jax.random.wrap_key_data(x, impl=impl[0])

    return jax.tree.map(back, restored, shapes)


class Checkpointer:
    """Per-round study checkpoints with orbax (atomic: orbax writes a temporary directory and renames).

    One pytree per finished round, the step being the number of rounds done:
    the PSO state, the early-stopping counters and, in warm mode, every
    member's weights. Keys are not stored: round r's keys derive from the seed.
    """

    def __init__(self, directory: Path, max_to_keep: int = 2):
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def save(self, step: int, tree: Any) -> None:
        """Saves step's tree and waits for it; a Ctrl-C meanwhile takes effect once it is on disk."""
        tree = jax.tree.map(np.asarray, tree)
        with _interrupt_after(), _quiet("absl"):  # orbax's save thread logs a failure's traceback (110 lines)
            try:
                self.manager.save(step, args=ocp.args.StandardSave(tree))
                self.manager.wait_until_finished()
            except Exception as e:  # noqa: BLE001 - orbax wraps the OSError (a full disk) in kilobytes of its own
                raise CheckpointError(f"cannot save the checkpoint after round {step - 1} in "
                                      f"{self.manager.directory}: {os_reason(e)}; "
                                      "the rounds before it are saved") from None

    def restore_latest(self, template: Any, log: Callable[[str], None] | None = None) -> tuple[int, Any] | None:
        """(step, tree) of the newest checkpoint that restores, or None when there is none.

        `template` is the tree's structure (its leaves' shapes and dtypes matter), or a function of the
        checkpoint's tree as saved (plain containers) returning it: where the structure depends on what
        was saved (a task's warm members, each its own static group's state).

        A checkpoint that fails to restore (cut short, overwritten, from another study) is moved to
        ``damaged_checkpoints/`` beside the checkpoints folder, said in one `log` line, and the one
        before it is tried: a study keeps two, so one damaged file costs a round, not the study.

        Raises:
          CheckpointError: every checkpoint there is damaged.
        """
        def zeros(x):  # an array, a ShapeDtypeStruct or a Python number
            return np.zeros(np.shape(x), x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)

        damaged = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                target = template
                if callable(template):  # read the checkpoint as saved, then restore it into its structure
                    target = template(self.manager.restore(step, args=ocp.args.StandardRestore()))
                target = jax.tree.map(zeros, target)
                return int(step), self.manager.restore(step, args=ocp.args.StandardRestore(target))
            except Exception as e:  # noqa: BLE001 - orbax raises many kinds; the file is what matters
                aside = self._set_aside(step)
                damaged.append(f"round {step}: {type(e).__name__}: {_first_line(e)}")
                if log is not None:
                    log(f"the checkpoint of round {step} does not restore ({type(e).__name__}: {_first_line(e)}); "
                        f"moved to {aside}, trying the one before")
        if damaged:
            raise CheckpointError(f"no checkpoint in {self.manager.directory} restores ({'; '.join(damaged)}); "
                                  "they were moved to damaged_checkpoints/")
        return None

    def _set_aside(self, step: int) -> Path:
        """Moves step's checkpoint out of the manager's folder (a later save of that step must not meet it)."""
        source = Path(self.manager.directory) / str(step)
        target = Path(self.manager.directory).parent / "damaged_checkpoints" / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(source), str(target))
        self.manager.reload()
        return target

    def close(self) -> None:
        self.manager.close()


# --------------------------------------------------------------------------
# Equal wall clock: crediting a recorded history at a time T
# --------------------------------------------------------------------------


def best_by(events: Iterable[tuple[float, float]], T: float) -> float | None:
    """The best value among the evaluations that FINISHED by `T` seconds (None: none did, or none is finite).

    `events` are ``(finish seconds, value)`` pairs, higher values better: a
    sequential tuner's trials, or every member of a swarm round at the end of
    its round (its members finish together). An evaluation still running at
    `T` does not count, however close it was.

    Example:
        >>> best_by([(1.0, 0.5), (2.0, 0.9), (3.5, 0.95)], T=3.0)
        0.9
    """
    done = [v for t, v in events if t <= T and np.isfinite(v)]
    return max(done) if done else None


def first_reaching(events: Iterable[tuple[float, float]], threshold: float) -> float | None:
    """The earliest finish time of an evaluation whose value is at least `threshold` (None: never).

    Example:
        >>> first_reaching([(1.0, 0.5), (2.0, 0.9), (3.5, 0.95)], 0.9)
        2.0
    """
    hits = [t for t, v in events if np.isfinite(v) and v >= threshold]
    return min(hits) if hits else None
