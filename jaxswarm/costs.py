"""The engine's cost model: the machine figures that `layout="auto"` and the packed plans weigh.

Every constant a default choice reads lives in `CostModel`, each field with the
bench command that measures it. The built-in values are conservative figures
for a small CPU; ``jaxswarm calibrate`` (`layouts.auto.calibrate`) measures
them on the user's machine and `save`s them where `load` finds them:

  1. ``$JAXSWARM_COST_MODEL``: a file, or the word ``builtin`` (`BUILTIN`,
     whatever file there is; the test suite pins it);
  2. else `default_path()`: ``$XDG_CACHE_HOME/jaxswarm/cost_model.json``
     (``~/.cache/...`` without it);
  3. else, no file: `BUILTIN`.

A study resolves its model once (`of`, from ``StudyConfig.cost_model``) and
records it in study.json, so a resumed study plans as it did, whatever was
calibrated in between.

Example:
    >>> model = from_dict({"packed_compile_s": 2.0})  # as StudyConfig.cost_model; the rest built-in
    >>> model.packed_compile_s, model.train_flops == BUILTIN.train_flops
    (2.0, True)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["CostModel", "BUILTIN", "ENV", "DEFAULT_PATH", "default_path", "load", "save", "of", "from_dict",
           "describe", "memory_analysis"]

ENV = "JAXSWARM_COST_MODEL"  # a cost model file, or "builtin"


class CostModel(NamedTuple):
    """What compiling and training cost on this machine (seconds, FLOP/s)."""

    # FLOP/s a training step sustains (forward + backward, useful and wasted alike): the rate that turns
    # a layout's FLOPs into seconds. `bench/bench_trainer.py --layout masked,packed` reports it (GFLOP/s
    # computed); the built-in figure is a busy 2-core CPU's, below what it reaches when quiet.
    train_flops: float = 60e9
    # One packed swarm program's compile (`layouts.packed`: the reuse rule weighs it against padding).
    # `bench/bench_trainer.py --layout packed` ("compile s"; N = 32, the default MLP space).
    packed_compile_s: float = 10.0
    # One span program's compile (a schedule's rung). A constant per study, not a per-run timing, so
    # that a study's plans (and so its float32 rounding) do not depend on how busy the machine was.
    # `bench/bench_schedules.py` ("compile s" of the sha swarm over its rung programs).
    span_compile_s: float = 3.0
    # What one more tail group adds to a packed compile (a fresh plan merges groups below it).
    # `bench/bench_trainer.py --layout packed --groups G` for two G, side by side.
    group_compile_s: float = 0.6
    # Useful / computed FLOPs of a packed plan (its padding): a property of the plans, not of the
    # machine, so calibration keeps it. `bench/bench_trainer.py --layout packed` ("useful/computed").
    packed_efficiency: float = 0.8
    # How much longer the serial CNN program compiles than the masked one (branches for every block,
    # kernel and filter bucket). `bench/bench_cnn.py --sizes 8` ("swarm compile s", serial - masked).
    serial_compile_s: float = 50.0
    source: str = "built-in"  # where these figures came from: "built-in", or "calibrated <date> on <machine>"


BUILTIN = CostModel()
_FIGURES = tuple(f for f in CostModel._fields if f != "source")


def default_path() -> Path:
    """Where `save` writes and `load` reads without ``$JAXSWARM_COST_MODEL``: the user's cache folder."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "jaxswarm" / "cost_model.json"


DEFAULT_PATH = default_path()  # at import; `default_path()` reads the environment at each call


def _chosen_path(path: str | os.PathLike | None) -> Path | None:
    """The file `path` names, else ``$JAXSWARM_COST_MODEL``'s, else `default_path()`; None: ``builtin``."""
    if path is not None:
        return Path(path)
    env = os.environ.get(ENV, "").strip()
    if env.lower() == "builtin":
        return None
    return Path(env).expanduser() if env else default_path()


def from_dict(figures: dict, source: str = "given") -> CostModel:
    """A `CostModel` from a dict of its fields (those left out are `BUILTIN`'s, `source` if it has none).

    Raises:
      ValueError: one line naming an unknown field or a bad figure.
    """
    if not isinstance(figures, dict):
        raise ValueError(f"a cost model is a table of {list(CostModel._fields)}, got {figures!r}")
    unknown = sorted(set(figures) - set(CostModel._fields), key=str)
    if unknown:
        raise ValueError(f"unknown cost model field(s) {unknown}; known: {list(CostModel._fields)}")
    model = BUILTIN._replace(**{"source": source, **figures})
    for name in _FIGURES:
        value = getattr(model, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"cost model {name} must be a finite number > 0, got {value!r}")
    if model.packed_efficiency > 1:
        raise ValueError(f"cost model packed_efficiency is a fraction in (0, 1], got {model.packed_efficiency!r}")
    if not isinstance(model.source, str):
        raise ValueError(f"cost model source must be a string, got {model.source!r}")
    return model._replace(**{name: float(getattr(model, name)) for name in _FIGURES})


def load(path: str | os.PathLike | None = None) -> CostModel:
    """The cost model in `path` (default: ``$JAXSWARM_COST_MODEL``, else `default_path()`), or `BUILTIN`.

    A missing file is `BUILTIN`; a file that is not a cost model raises a
    one-line ValueError naming it.
    """
    file = _chosen_path(path)
    if file is None or not file.is_file():
        return BUILTIN
    try:
        return from_dict(json.loads(file.read_text()), source=f"from {file}")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"cost model file {file}: {' '.join(str(e).split())} "
                         "(run `jaxswarm calibrate` to write it again, or delete it)") from None


def save(model: CostModel, path: str | os.PathLike | None = None) -> Path:
    """Writes `model` as JSON to `path` (default: where `load` reads; `default_path()` under ``builtin``).

    Returns:
      The file written (its folder made; the file replaced whole, never half-written).
    """
    file = _chosen_path(path) or default_path()
    model = from_dict(model._asdict())  # a bad figure fails here, not at the next study
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(file.name + ".partial")
    partial.write_text(json.dumps(model._asdict(), indent=2) + "\n")
    partial.replace(file)
    return file


def of(config: Any) -> CostModel:
    """The cost model a study weighs: its ``config.cost_model`` (a dict of fields, or a `CostModel`), else `load()`.

    `study.Study` resolves it once and stores the dict, so every layout and
    `layouts.auto` read the same figures.
    """
    given = getattr(config, "cost_model", None)
    if given is None:
        return load()
    if isinstance(given, CostModel):
        given = given._asdict()
    return from_dict(given)


def describe(model: CostModel) -> str:
    """One line: where the figures come from and the ones that decide most.

    Example:
        >>> describe(BUILTIN)
        'cost model (built-in): training 60 GFLOP/s, packed compile 10 s, serial CNN compile +50 s'
    """
    return (f"cost model ({model.source}): training {model.train_flops / 1e9:.3g} GFLOP/s, "
            f"packed compile {model.packed_compile_s:.3g} s, serial CNN compile +{model.serial_compile_s:.3g} s")


def memory_analysis(compiled) -> dict:
    """`compiled.memory_analysis()` as a dict of ints, with ``total`` = args + outputs + temps - aliased.

    Returns {} where the backend reports nothing.
    """
    m = compiled.memory_analysis()
    if m is None:
        return {}
    out = {k: int(getattr(m, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                           "alias_size_in_bytes", "temp_size_in_bytes",
                                           "generated_code_size_in_bytes")}
    out["total"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                    + out["temp_size_in_bytes"] - out["alias_size_in_bytes"])
    return out
