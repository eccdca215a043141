"""Host-side results of a study: JSONL per evaluation, round summaries, best config, CSV, plots, checkpoints.

This is the only module that writes result files. Every file is
written atomically (temporary file + rename) or appended one complete line at
a time, so a killed study never leaves a half-written result.

Layout of a results directory::

    study.json          the study's configuration (written once, at start)
    evaluations.jsonl   one line per trained member: round, particle, config, fitness, ...
    rounds.jsonl        one line per round: best so far, its config, median fitness, time
    best.json           best configuration and, after the final retrain, its test accuracy
    evaluations.csv     evaluations.jsonl flattened to CSV (written at the end)
    progress.png        best / median fitness per round        (with the `plot` extra)
    positions.png       particle positions per dimension        (with the `plot` extra)
    checkpoints/        orbax checkpoints, one per round (`Checkpointer`)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
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
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
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
    """Appends rows, one JSON object per line, in a single write."""
    text = "".join(json.dumps(clean(r)) + "\n" for r in rows)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def truncate_rounds(path: Path, num_rounds: int) -> None:
    """Keeps only the rows of rounds < num_rounds (used when resuming from a checkpoint)."""
    rows = [r for r in read_jsonl(path) if r["round"] < num_rounds]
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_csv(jsonl_path: Path, csv_path: Path) -> None:
    """Flattens evaluations.jsonl (config dict expanded to columns) into CSV."""
    rows = read_jsonl(jsonl_path)
    flat = []
    for r in rows:
        row = {k: v for k, v in r.items() if k != "config"}
        row.update({f"config.{k}": v for k, v in r.get("config", {}).items()})
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
        cols = min(3, len(dims))
        rows_ = -(-len(dims) // cols)
        fig, axes = plt.subplots(rows_, cols, figsize=(4 * cols, 2.6 * rows_), squeeze=False)
        for ax, name in zip(axes.flat, dims):
            ax.scatter([e["round"] for e in evals], [e["position"][name] for e in evals], s=6, alpha=0.5)
            ax.set_title(name, fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("round", fontsize=8)
        for ax in list(axes.flat)[len(dims):]:
            ax.axis("off")
        fig.suptitle("particle positions (unit box) per dimension")
        fig.tight_layout()
        fig.savefig(out_dir / "positions.png", dpi=110)
        plt.close(fig)
        written.append(out_dir / "positions.png")
    return written


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
        tree = jax.tree.map(np.asarray, tree)
        self.manager.save(step, args=ocp.args.StandardSave(tree))
        self.manager.wait_until_finished()

    def restore_latest(self, template: Any) -> tuple[int, Any] | None:
        """(step, tree) of the newest complete checkpoint, or None when there is none."""
        step = self.manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), template)
        tree = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return int(step), tree

    def close(self) -> None:
        self.manager.close()
