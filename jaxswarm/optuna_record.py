"""The Optuna record of a results folder: every evaluation one Optuna trial, for Optuna's tools.

A study (`study.Study`) and a baseline (`tuners.run_tuner`) keep their evaluations.jsonl as an
Optuna study too, in step as they run, so ``optuna-dashboard``, ``optuna.importance`` and
``optuna.visualization`` read any of them::

    optuna-dashboard sqlite:///runs/<study>/optuna.db

The JSONL files stay the primary record; this one is a view of them that `export` rebuilds at any
time (``jaxswarm export-optuna DIR``). One trial per row of evaluations.jsonl, in the file's order:

  params      the row's config, each with its Optuna distribution from the space: `space.Float` ->
              ``FloatDistribution``, `space.Int` -> ``IntDistribution`` (log scales kept), `space.Choice` ->
              ``CategoricalDistribution``. An inactive conditional parameter is absent, as in the row.
              A `space.Fixed` value is the same in every trial: it is the study's user attribute
              ``fixed``, not a param (a one-value param adds a constant axis to every plot).
  value       the built-in networks: the fitness, maximized (metric ``val_accuracy``, or
              ``neg_val_loss`` with fitness "loss"); your own task: its objective's metric, in its
              direction (the row's ``metrics[metric]``, not the fitness, which negates a minimized one).
  state       COMPLETE; FAIL for a diverged evaluation or one whose value is not finite (Optuna takes
              no NaN, and an infinite value would rank it); PRUNED for one that a schedule's rung or a
              baseline's pruner stopped before the study's epochs, its value the one it stopped with
              (also its intermediate value at the epochs it trained, as Optuna's pruners record it).
  user attrs  ``row`` (its index in evaluations.jsonl), ``pruned`` and ``diverged``, and the row's other
              fields: round, particle, epochs, rung, evaluation, copied_from, val_accuracy, metrics, ...

The Optuna study's user attributes say whose it is: ``results_dir``, ``study_json`` (a digest of the
folder's study.json), ``objective`` and ``fixed``.

Storage: by default the sqlite file ``optuna.db`` in the results folder, the file where an Optuna
strategy keeps its own study (`strategies.OPTUNA_STUDY`, its resumable state, which the record never
touches); the record is the study named ``evaluations/<folder name>`` there. Any storage URL Optuna
takes goes instead (``storage=``, ``--storage``); the name then tells one folder's record from
another's, and a name taken by another folder's record is refused.

In step: `Recorder.sync` adds the rows the record lacks. The record always holds the file's first
rows, in order, so syncing adds the rest and never a trial twice, whatever point a killed study
reached. The first sync of a process checks the trials there against the rows; a record that
disagrees (a resumed study retrained rows from an older checkpoint, another study's record in the
folder's place) is built again from the rows.

Never fatal: `Recorder.sync` never raises. Without optuna (an optional extra: ``optuna``, ``bench``,
``dev``) it says so in one line, once per process, and records nothing; a storage that fails (locked,
unreachable, full) says so in one line and the next sync catches up; a refusal that would come again
(the name taken by another folder's record, a row the space does not know) says so and records
nothing more.

Example:
    >>> rec = Recorder("runs/digits-1")  # doctest: +SKIP
    >>> rec.sync()  # doctest: +SKIP
    24
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxswarm import results
from jaxswarm.space import Choice, Fixed, Float, Int, SearchSpace
from jaxswarm.strategies import OPTUNA_DB

__all__ = ["RECORD_PREFIX", "RecordError", "StorageError", "Recorder", "study_name", "default_storage", "space_spec",
           "parse_space", "export"]

RECORD_PREFIX = "evaluations/"  # the record's Optuna study name: this + the results folder's name
_NOT_INSTALLED = []  # one notice per process that optuna is missing


class RecordError(ValueError):
    """The Optuna record of a folder cannot be written: no study there, an unreadable file, a name taken."""


class StorageError(RecordError):
    """The Optuna storage does not open (a bad URL, a server down, a folder missing): a study tries again."""


def study_name(out_dir) -> str:
    """The Optuna study name of `out_dir`'s record: ``evaluations/<folder name>``."""
    return RECORD_PREFIX + Path(out_dir).resolve().name


def default_storage(out_dir) -> str:
    """The record's default storage: the sqlite file optuna.db in `out_dir`."""
    return f"sqlite:///{Path(out_dir).resolve() / OPTUNA_DB}"


# -- the space: one spec per parameter, from the SearchSpace or from study.json's description ------------


def space_spec(space: SearchSpace) -> dict[str, tuple]:
    """Each parameter's kind and range: ``("float"|"int", lo, hi, log)``, ``("choice", options)``, ``("fixed", v)``.

    Example:
        >>> space_spec(SearchSpace({"lr": Float(1e-3, 1e-1, log=True), "act": Choice(["relu", "tanh"])}))
        {'lr': ('float', 0.001, 0.1, True), 'act': ('choice', ('relu', 'tanh'))}
    """
    spec = {}
    for name, p in space.params.items():
        if isinstance(p, Float):
            spec[name] = ("float", p.lo, p.hi, p.log)
        elif isinstance(p, Int):
            spec[name] = ("int", p.lo, p.hi, p.log)
        elif isinstance(p, Choice):
            spec[name] = ("choice", p.options)
        elif isinstance(p, Fixed):
            spec[name] = ("fixed", p.value)
        else:  # pragma: no cover - no other kinds today
            raise RecordError(f"parameter {name!r}: no Optuna distribution for {p!r}")
    return spec


# One line of `SearchSpace.describe`: name, kind and range, then "dim k" or "fixed", then the condition.
_LINE = re.compile(r"^  (?P<name>\S.*?)  +(?P<kind>Float|Int|Choice|Fixed)(?P<range>[\[(].*[\])])(?P<log> log)?"
                   r" +(?:dim \d+|fixed)(?:  when .*)?$")
_HEAD = re.compile(r"^SearchSpace\((\d+) params?, \d+ dims?\)$")


def parse_space(text: str) -> dict[str, tuple]:
    """`space_spec` read back from a space's description, as study.json records it (``repr(space)``).

    Float bounds come with 6 significant digits there; `export` widens a bound to a recorded value
    beyond it.

    Raises:
      RecordError: the text is not a space's description.

    Example:
        >>> parse_space(repr(SearchSpace({"n": Int(1, 3), "act": Choice(["relu", "tanh"])})))
        {'n': ('int', 1, 3, False), 'act': ('choice', ('relu', 'tanh'))}
    """
    lines = str(text).splitlines()
    head = _HEAD.match(lines[0]) if lines else None
    spec = {}
    for line in lines[1:]:
        m = _LINE.match(line)
        if m is None:
            raise RecordError(f"study.json's space has a line this version cannot read: {line.strip()!r}")
        kind, inside = m["kind"], m["range"][1:-1]
        if kind in ("Float", "Int"):
            lo, hi = (float(x) if kind == "Float" else int(x) for x in inside.split(", "))
            spec[m["name"]] = (kind.lower(), lo, hi, m["log"] is not None)
        elif kind == "Choice":
            spec[m["name"]] = ("choice", tuple(ast.literal_eval(f"[{inside}]")))
        else:
            try:
                spec[m["name"]] = ("fixed", ast.literal_eval(inside))
            except (ValueError, SyntaxError):  # a value without a literal repr: its text
                spec[m["name"]] = ("fixed", inside)
    if head is None or int(head[1]) != len(spec):
        raise RecordError(f"study.json's space is not a space's description: {str(text)[:80]!r}")
    return spec


def _distributions(optuna, spec: dict[str, tuple], rows: list[dict]) -> dict[str, Any]:
    """The Optuna distribution of every tuned parameter; a Float's bounds reach every recorded value."""
    out = {}
    for name, (kind, *args) in spec.items():
        if kind == "float":
            lo, hi, log = args
            seen = [r["config"][name] for r in rows if isinstance((r.get("config") or {}).get(name), (int, float))]
            out[name] = optuna.distributions.FloatDistribution(min([lo, *seen]), max([hi, *seen]), log=log)
        elif kind == "int":
            out[name] = optuna.distributions.IntDistribution(args[0], args[1], log=args[2])
        elif kind == "choice":
            out[name] = optuna.distributions.CategoricalDistribution(args[0])
    return out


# -- rows -> trials ------------------------------------------------------------------------------------


class _Objective:
    """What study.json says a row's value is: its metric's name, the direction, the largest epochs."""

    def __init__(self, saved: dict):
        objective = saved.get("objective")
        config = saved.get("config") if isinstance(saved.get("config"), dict) else saved  # a baseline's: flat
        if isinstance(objective, dict):  # your own task's
            self.metric, self.direction, self.task = objective["metric"], objective.get("direction", "max"), True
        else:
            fitness = config.get("fitness", "accuracy")
            self.metric = "val_accuracy" if fitness == "accuracy" else f"neg_val_{fitness}"
            self.direction, self.task = "max", False
        self.epochs = config.get("epochs")

    def value(self, row: dict) -> float | None:
        value = (row.get("metrics") or {}).get(self.metric) if self.task else row.get("fitness")
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _same(a, b) -> bool:
    """Whether two trials record the same evaluation (the times aside)."""
    return (a.state == b.state and a.values == b.values and a.params == b.params
            and a.distributions == b.distributions and a.user_attrs == b.user_attrs
            and a.intermediate_values == b.intermediate_values)


# -- the record ----------------------------------------------------------------------------------------


class Recorder:
    """Keeps the Optuna record of one results folder in step with its evaluations.jsonl.

    Args:
      out_dir: the results folder (its study.json written: the record reads what the value is there).
      storage: an Optuna storage URL (None: `default_storage`, the folder's optuna.db).
      space: the study's space, for the distributions' exact bounds (None: read from study.json).
      log: called with each notice, one line (None: silent).

    Example:
        >>> rec = Recorder(out_dir, space=space, log=print)  # doctest: +SKIP
        >>> rec.sync(rows)  # every row so far: adds those the record lacks  # doctest: +SKIP
    """

    def __init__(self, out_dir, storage: str | None = None, space: SearchSpace | None = None,
                 log: Callable[[str], None] | None = None):
        self.out_dir = Path(out_dir).resolve()
        self.storage = storage or default_storage(self.out_dir)
        self.name = study_name(self.out_dir)
        self._space = space
        self._log = log or (lambda msg: None)
        self._study = None
        self._done: int | None = None  # rows recorded, checked against the rows this process has seen
        self._off = False  # a refusal that the next sync would meet again: record nothing more
        self._behind = False  # the last sync failed; the next one catches up

    def sync(self, rows: Sequence[dict] | None = None) -> int:
        """Adds the rows the record lacks; never raises (a failure is one `log` line).

        Args:
          rows: every evaluation row so far, as evaluations.jsonl holds them (None: read the file).

        Returns:
          The number of trials added.
        """
        if self._off:
            return 0
        try:
            added = self._sync(rows)
        except ImportError:
            self._off = True
            if not _NOT_INSTALLED:
                _NOT_INSTALLED.append(True)
                self._log(f"no Optuna record of {self.out_dir}: optuna is not installed (pip install "
                          f"'jaxswarm[optuna]'); `jaxswarm export-optuna {self.out_dir}` writes it later")
            return 0
        except RecordError as e:
            if not isinstance(e, StorageError):  # the next sync would meet it again
                self._off = True
                self._log(f"no Optuna record of {self.out_dir} from now on: {e}")
                return 0
            self._fell_behind(str(e))
            return 0
        except Exception as e:  # noqa: BLE001 - the storage's own errors (locked, unreachable, full): never fatal
            self._fell_behind(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")
            return 0
        if self._behind:
            self._log(f"the Optuna record of {self.out_dir} caught up")
            self._behind = False
        return added

    def _fell_behind(self, why: str) -> None:
        """A failed sync: said once until one succeeds; the next opens the study again and catches up."""
        self._study, self._done = None, None
        if not self._behind:
            self._log(f"the Optuna record of {self.out_dir} is behind ({why}); the next sync catches up "
                      "(the JSONL files are complete)")
        self._behind = True

    def rebuild(self, rows: Sequence[dict] | None = None) -> int:
        """Builds the record again from the rows (None: the file), replacing the trials there; returns their number.

        Raises:
          RecordError: no study in the folder, an unreadable file, the name taken by another folder's record.
          ImportError: optuna is not installed.
        """
        rows = self._rows(rows)
        self._open(rows)
        self._recreate()
        self._done = 0
        return self._add(rows)

    # -- inside --------------------------------------------------------------------------------------

    def _sync(self, rows) -> int:
        rows = self._rows(rows)
        study = self._open(rows)
        if self._done is None:  # this process's first look: does the record hold the rows' first trials?
            there = study.get_trials(deepcopy=False)
            expected = self._trials(rows[:len(there)], 0) if len(there) <= len(rows) else None
            if expected is None or not all(map(_same, there, expected)):
                self._log(f"the Optuna record of {self.out_dir} ({len(there)} trials) disagrees with its "
                          f"{results.EVALUATIONS} ({len(rows)} rows): built again from the rows")
                self._recreate()
                there = []
            self._done = len(there)
        return self._add(rows)

    def _add(self, rows) -> int:
        new = self._trials(rows[self._done:], self._done)
        self._study.add_trials(new)
        self._done += len(new)
        return len(new)

    def _rows(self, rows) -> Sequence[dict]:
        """The rows given, or evaluations.jsonl's."""
        if rows is not None:
            return rows
        try:
            return results.read_jsonl(self.out_dir / results.EVALUATIONS)
        except (OSError, ValueError) as e:
            raise RecordError(f"cannot read {self.out_dir / results.EVALUATIONS}: {e}") from None

    def _open(self, rows):
        """The Optuna study of the record, created or loaded (and checked: this folder's study's)."""
        if self._study is not None:
            return self._study
        import optuna  # optional: the optuna extra

        saved, digest = _read_study(self.out_dir)
        self._objective = _Objective(saved)
        spec = parse_space(saved["space"]) if self._space is None else space_spec(self._space)
        self._fixed = {name: args[0] for name, (kind, *args) in spec.items() if kind == "fixed"}
        self._dists = _distributions(optuna, spec, rows)
        self._attrs = {"results_dir": str(self.out_dir), "study_json": digest,
                       "objective": {"metric": self._objective.metric, "direction": self._objective.direction},
                       "fixed": json.loads(json.dumps(results.clean(self._fixed), default=repr))}
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not one line per study (Optuna's global setting)
        try:
            self._storage = optuna.storages.get_storage(self.storage)
        except Exception as e:  # noqa: BLE001 - a URL Optuna cannot open: one line
            raise StorageError(f"cannot open the Optuna storage {self.storage}: {type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]}") from None
        if self.name in optuna.get_all_study_names(self._storage):
            study = optuna.load_study(study_name=self.name, storage=self._storage)
            if study.user_attrs.get("study_json") == digest:
                self._study = study
                return study
            if study.user_attrs.get("results_dir") != str(self.out_dir):
                owner = study.user_attrs.get("results_dir") or "not a jaxswarm record"
                raise RecordError(f"{self.storage} holds another Optuna study named {self.name!r} ({owner}); "
                                  "give another storage, or remove that study (optuna delete-study)")
            self._log(f"the Optuna study {self.name!r} in {self.storage} recorded an earlier study of {self.out_dir}: "
                      "replaced by this one's")
            self._done = None  # this folder holds a new study: its old record goes
            return self._recreate()
        return self._create(optuna)

    def _create(self, optuna):
        direction = "maximize" if self._objective.direction == "max" else "minimize"
        study = optuna.create_study(storage=self._storage, study_name=self.name, direction=direction)
        for key, value in self._attrs.items():
            study.set_user_attr(key, value)
        if hasattr(study, "set_metric_names"):  # Optuna >= 3.2, "experimental"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([self._objective.metric])
        self._study = study
        return study

    def _recreate(self):
        import optuna  # optional: the optuna extra

        optuna.delete_study(study_name=self.name, storage=self._storage)
        return self._create(optuna)

    def _trials(self, rows, start: int) -> list:
        """Rows ``start, start + 1, ...`` of evaluations.jsonl as Optuna trials."""
        import optuna  # optional: the optuna extra

        now = datetime.datetime.now()
        # As evaluations.jsonl holds them: a study's rows in memory have numpy numbers and -inf.
        return [self._trial(optuna, start + i, results.clean(row), now) for i, row in enumerate(rows)]

    def _trial(self, optuna, index: int, row: dict, now: datetime.datetime):
        """Row `index` as an Optuna trial (see the module docstring)."""
        states, objective = optuna.trial.TrialState, self._objective
        config = row.get("config") or {}
        unknown = sorted(set(config) - set(self._dists) - set(self._fixed))
        if unknown:
            raise RecordError(f"row {index} of {results.EVALUATIONS} has parameter(s) {unknown}, which the "
                              "study's space does not tune")
        params = {name: v for name, v in config.items() if name in self._dists}
        value = objective.value(row)
        # A row of a schedule's rung says where it stopped; a baseline's says whether a pruner stopped it.
        pruned = bool(row["pruned"]) if "pruned" in row else (
            "rung" in row and objective.epochs is not None and row.get("epochs", objective.epochs) < objective.epochs)
        diverged = bool(row.get("diverged", False))
        state = states.FAIL if diverged or value is None else states.PRUNED if pruned else states.COMPLETE
        user_attrs = {k: v for k, v in row.items() if k not in ("config", "position")}
        user_attrs.update(row=index, pruned=pruned, diverged=diverged)
        steps = {row["epochs"]: value} if "epochs" in row and state != states.FAIL else None
        trial = optuna.trial.create_trial(
            state=state, value=None if state == states.FAIL else value, params=params,
            distributions={name: self._dists[name] for name in params}, user_attrs=user_attrs,
            intermediate_values=steps)
        seconds = row.get("seconds")
        if isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0:  # the dashboard's durations
            trial.datetime_start = now - datetime.timedelta(seconds=seconds)
            trial.datetime_complete = now
        return trial


def _read_study(out_dir: Path) -> tuple[dict, str]:
    """(study.json's contents, a digest of its bytes: which study this is)."""
    path = out_dir / results.STUDY
    if not path.is_file():
        raise RecordError(f"{out_dir} holds no {results.STUDY}: not a study's results directory")
    try:
        data = path.read_bytes()
        saved = json.loads(data)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RecordError(f"cannot read {path} (cut short, or not JSON): {type(e).__name__}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("space"), str):
        raise RecordError(f"{path} records no space: not written by a study or a baseline")
    return saved, hashlib.blake2b(data, digest_size=8).hexdigest()


def export(out_dir, storage: str | None = None) -> tuple[str, str, int]:
    """Builds the Optuna record of a results folder again from its study.json and evaluations.jsonl.

    The folder's lock is held meanwhile (a running study keeps its own record in step).

    Args:
      out_dir: a study's or a baseline's results folder.
      storage: an Optuna storage URL (None: the folder's optuna.db).

    Returns:
      ``(storage URL, study name, trials)``.

    Raises:
      RecordError: no study or no evaluation in the folder, an unreadable file, a storage that does not
        open, or the name taken there by another folder's record.
      results.FolderLocked: a study is running in the folder.
      ImportError: optuna is not installed.

    Example:
        >>> export("runs/digits-1")  # doctest: +SKIP
        ('sqlite:////home/me/runs/digits-1/optuna.db', 'evaluations/digits-1', 24)
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise RecordError(f"{out} is not a directory")
    _read_study(out.resolve())  # a clear line before anything else
    try:
        lock = results.lock_folder(out)
    except OSError:  # a read-only folder: nothing writes there (the record goes to a storage elsewhere)
        lock = None
    try:
        recorder = Recorder(out, storage)
        rows = recorder._rows(None)
        if not rows:
            raise RecordError(f"{out} holds no evaluations yet ({results.EVALUATIONS} is empty or missing)")
        return recorder.storage, recorder.name, recorder.rebuild(rows)
    finally:
        if lock is not None:
            lock.release()
