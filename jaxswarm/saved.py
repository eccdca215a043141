"""A trained network as a model you can use: predict, score, save and load it.

`SavedModel` wraps one family's dense network of its real size (what
`train.make_dense_train(...).fit_position` returns, e.g. a study's retrained
winner) with its class labels: `predict(X)` answers in the original labels,
`predict_proba(X)` gives the softmax. It runs one jitted function over
fixed-size batches (the last one padded), so predicting on any number of rows
compiles once.

`save(directory)` writes ``directory/model/`` atomically::

    model/
      model.json          family, model config, architecture, classes, input shape,
                          preprocessing, hyperparameters, metrics, jaxswarm version
      variables.msgpack   the network's variables (flax.serialization, NumPy arrays)

`load_model(directory)` reads it back (a results folder holding ``model/``, or
the model folder itself) without rebuilding a study; every problem with the
files is one `ModelError` line.

Example:
    >>> model = load_model("results/digits")  # doctest: +SKIP
    >>> model.predict(x[:3]), model.score(x, y)  # doctest: +SKIP
    (array([3, 1, 7]), 0.9833)
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm import results
from jaxswarm.models import FAMILIES, ModelFamily
from jaxswarm.task import Task, builder, load_task, predictor

__all__ = ["ModelError", "SavedModel", "TaskModel", "load_model", "model_leftovers",
           "MODEL_DIR", "MODEL_JSON", "VARIABLES", "version"]

MODEL_DIR = "model"  # the model's folder inside a results folder
MODEL_JSON = "model.json"
VARIABLES = "variables.msgpack"
TASK_STATE = "state.msgpack"  # a TaskModel's training state
FORMAT = 1  # model.json's layout; bump when it changes incompatibly
PREDICT_BATCH = 1024  # rows per jitted call: one compile whatever the number of rows asked for
# What predict does to X before the network, the same as data.from_arrays does to training data.
PREPROCESSING = "uint8 inputs divided by 255; other numeric inputs cast to float32; rows flattened"
_REQUIRED = ("family", "model_config", "arch", "classes", "in_features")


class ModelError(ValueError):
    """A saved model is missing or corrupt, or is asked to predict on inputs it cannot take."""


def version() -> str:
    """The installed jaxswarm's version (read from its metadata: no import of the package's face).

    Example:
        >>> version()  # doctest: +SKIP
        '0.1.0'
    """
    try:
        return importlib.metadata.version("jaxswarm")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class SavedModel:
    """A trained dense network with its class labels: predict, score, describe, save.

    Args:
        family: the network's `models.ModelFamily`.
        model_config: the family's config the network was built with (its input and classes).
        arch: the architecture dict (``family.arch_to_python``'s form).
        variables: the network's variables (``{"params": ..., "batch_stats": ...}``).
        classes: the original label of each class index (``Dataset.classes``).
        hyperparameters: what the network trained with (recorded, shown by `describe`).
        metrics: e.g. ``{"test_accuracy": ...}`` (recorded, shown by `describe`).
        input_shape: ``(H, W, C)`` of one example, when known (a CNN's config has it).
        batch_size: rows per jitted call.

    Example:
        >>> model = SavedModel(family, trainer.model_config, arch, variables, ds.classes)  # doctest: +SKIP
        >>> model.predict(ds.x_test[:2])  # doctest: +SKIP
        array([3, 8])
    """

    def __init__(self, family: ModelFamily, model_config, arch: dict, variables, classes: tuple,
                 hyperparameters: dict | None = None, metrics: dict | None = None, *,
                 input_shape: tuple | None = None, batch_size: int = PREDICT_BATCH):
        self.family = family
        self.model_config = model_config
        self.arch = _tuples(dict(arch))
        # Host copies: picklable, saved as they are, put on the device once when first used.
        self.variables = jax.tree.map(np.asarray, variables)
        self.classes_ = np.asarray(list(classes))
        self.hyperparameters = dict(hyperparameters or {})
        self.metrics = dict(metrics or {})
        shape = input_shape if input_shape is not None else getattr(model_config, "input_shape", None)
        self.input_shape = None if shape is None else tuple(int(d) for d in shape)
        if hasattr(model_config, "in_features"):
            self.n_features_in_ = int(model_config.in_features)
        elif self.input_shape is not None:
            self.n_features_in_ = int(np.prod(self.input_shape))
        else:
            raise ModelError(f"cannot tell the input size of {family.name} config {model_config!r}: "
                             "it has neither in_features nor input_shape; pass input_shape=")
        if self.input_shape is not None and int(np.prod(self.input_shape)) != self.n_features_in_:
            raise ModelError(f"input_shape {self.input_shape} has {int(np.prod(self.input_shape))} values "
                             f"but the network takes {self.n_features_in_} features")
        num_classes = int(model_config.num_classes)
        if self.classes_.ndim != 1 or len(self.classes_) != num_classes:
            raise ModelError(f"classes must list one label per class: the network has {num_classes} "
                             f"classes, got {len(self.classes_)} label(s) {self.classes_.tolist()[:10]}")
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ModelError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self._forward = None  # built on first use (and again after unpickling): one jit per model
        self._device_variables = None

    # -- predictions ---------------------------------------------------------

    def predict(self, X) -> np.ndarray:
        """The predicted class of each row, as the original labels.

        Args:
            X: ``[N, F]`` or ``[N, H, W, C]`` (NumPy or JAX array).

        Returns:
            ``[N]`` labels from ``classes_``.

        Example:
            >>> model.predict(x_test[:3])  # doctest: +SKIP
            array(['cat', 'dog', 'dog'], dtype='<U3')
        """
        index, _ = self._run(X)
        return self.classes_[index]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the logits), columns in the order of ``classes_``.

        Args:
            X: ``[N, F]`` or ``[N, H, W, C]``.

        Returns:
            f32 ``[N, C]``.

        Example:
            >>> model.predict_proba(x_test[:1]).sum()  # doctest: +SKIP
            1.0
        """
        _, proba = self._run(X)
        return proba

    def score(self, X, y) -> float:
        """Accuracy of `predict(X)` against the original labels `y`.

        Example:
            >>> model.score(x_test, y_test)  # doctest: +SKIP
            0.9833
        """
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        pred = self.predict(X)
        if y.shape != pred.shape:
            raise ModelError(f"score needs one label per row of X: X has {len(pred)} rows, y has shape {y.shape}")
        return float(np.mean(pred == y)) if len(y) else float("nan")

    def _inputs(self, X) -> np.ndarray:
        """X as f32 ``[N, F]`` after the training data's preprocessing, or one ModelError line."""
        x = np.asarray(X)
        if x.dtype.kind not in "biuf":
            raise ModelError(f"X must be a numeric array, got dtype {x.dtype}")
        f = self.n_features_in_
        image = self.input_shape is not None and self.input_shape[:2] != (1, 1)  # (1, 1, F): tabular rows
        expect = f"[N, {f}]" + (f" or [N, {', '.join(map(str, self.input_shape))}]" if image else "")
        if x.ndim < 2:
            raise ModelError(f"this model expects X of shape {expect}, got X of shape {x.shape}")
        if x.ndim == 2:
            ok = x.shape[1] == f
        elif self.input_shape is not None:  # images: their shape, or [N, H, W] for one channel
            ok = x.shape[1:] == self.input_shape or (self.input_shape[-1] == 1 and x.shape[1:] == self.input_shape[:-1])
        else:
            ok = int(np.prod(x.shape[1:])) == f
        if not ok:
            got = int(np.prod(x.shape[1:]))
            raise ModelError(f"this model expects {f} features per example (X of shape {expect}), "
                             f"got {got} (X of shape {x.shape})")
        x = x.reshape(len(x), f)
        x = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32)
        if not np.isfinite(x).all():
            raise ModelError(f"X has {int(x.size - np.isfinite(x).sum())} NaN or inf value(s); clean or impute them")
        return x

    def _run(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(class index i32[N], probabilities f32[N, C]) over fixed-size batches."""
        x = self._inputs(X)
        n, b = len(x), self.batch_size
        if n == 0:
            return np.zeros(0, np.int64), np.zeros((0, len(self.classes_)), np.float32)
        if self._forward is None:
            self._build()
        index, proba = [], []
        for start in range(0, n, b):
            chunk = x[start:start + b]
            rows = len(chunk)
            if rows < b:  # the same shape every call: padding rows are computed and dropped
                chunk = np.concatenate([chunk, np.zeros((b - rows, chunk.shape[1]), np.float32)])
            i, p = self._forward(self._device_variables, chunk)
            index.append(np.asarray(i)[:rows])
            proba.append(np.asarray(p)[:rows])
        return np.concatenate(index), np.concatenate(proba)

    def _build(self) -> None:
        family, cfg, arch = self.family, self.model_config, self.arch

        def forward(variables, x_BxF):
            # Evaluation mode: batch norm reads its running statistics, so each row's answer is its own.
            logits, _ = family.apply_dense(variables, x_BxF, arch, cfg, train=False)
            return jnp.argmax(logits, -1), jax.nn.softmax(logits, -1)

        self._device_variables = jax.device_put(self.variables)
        self._forward = jax.jit(forward)

    # -- description and pickling --------------------------------------------

    @property
    def num_parameters(self) -> int:
        """Trainable parameters of the network."""
        return int(sum(np.size(a) for a in jax.tree.leaves(self.variables.get("params", self.variables))))

    def describe(self) -> str:
        """A short multi-line summary: family, input, classes, architecture, hyperparameters, metrics.

        Example:
            >>> print(model.describe())  # doctest: +SKIP
            jaxswarm model: mlp, 64 inputs -> 10 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
            ...
        """
        shown = ", ".join(map(str, self.classes_.tolist()[:10])) + (", ..." if len(self.classes_) > 10 else "")
        shape = f" ({'x'.join(map(str, self.input_shape))})" if self.input_shape else ""
        lines = [
            f"jaxswarm model: {self.family.name}, {self.n_features_in_} inputs{shape} -> "
            f"{len(self.classes_)} classes ({shown})",
            f"architecture: {_pairs(self.arch)}",
            f"parameters: {self.num_parameters:,}",
        ]
        if self.hyperparameters:
            lines.append(f"hyperparameters: {_pairs(self.hyperparameters)}")
        if self.metrics:
            lines.append(f"metrics: {_pairs(self.metrics)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"SavedModel({self.family.name}, {self.n_features_in_} inputs -> {len(self.classes_)} classes, "
                f"{self.num_parameters:,} parameters)")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_forward"] = state["_device_variables"] = None  # rebuilt on first use after unpickling
        if FAMILIES.get(self.family.name) == self.family:  # a registered family travels by name
            state["family"] = self.family.name
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["family"], str):
            state["family"] = _family(state["family"], "the pickled model")
        self.__dict__.update(state)

    # -- files ---------------------------------------------------------------

    def spec(self) -> dict:
        """The contents of model.json (JSON-safe)."""
        return results.clean({
            "format": FORMAT,
            "family": self.family.name,
            "model_config": self.model_config._asdict(),
            "arch": self.arch,
            "classes": self.classes_.tolist(),
            "in_features": self.n_features_in_,
            "input_shape": self.input_shape,
            "num_classes": len(self.classes_),
            "preprocessing": PREPROCESSING,
            "parameters": self.num_parameters,
            "hyperparameters": self.hyperparameters,
            "metrics": self.metrics,
            "jaxswarm_version": version(),
        })

    def save(self, directory) -> Path:
        """Writes ``directory/model/`` (model.json and variables.msgpack) atomically.

        The files go to a temporary folder next to it, which is then renamed
        into place, so a reader never sees half a model; an existing model
        folder is replaced.

        Args:
            directory: a results folder (created if missing).

        Returns:
            The model folder's path.

        Example:
            >>> model.save("results/digits")  # doctest: +SKIP
            PosixPath('results/digits/model')
        """
        return _write_model(directory, self.spec(), "classes, hyperparameters or metrics", VARIABLES,
                            flax.serialization.to_bytes(self.variables))


def load_model(directory, task=None):
    """Loads a model saved by `SavedModel.save` or `TaskModel.save`: from a results folder or the model folder.

    Args:
        directory: a results folder holding ``model/``, or that ``model/`` folder.
        task: the `task.Task` a `TaskModel` was trained on (as a Flax restore is given its target): it builds
            the network the saved state belongs to. None: the task's import path recorded in model.json
            (``jaxswarm run --task``), imported again. A built-in network needs none.

    Returns:
        The `SavedModel` or `TaskModel`, ready to predict (nothing of the study is rebuilt).

    Raises:
        ModelError: one line for a missing folder or file, unparseable model.json, a format this version
            does not read, a truncated or corrupt variables file, an unknown model family, or a task
            model loaded without its task.

    Example:
        >>> import jaxswarm
        >>> jaxswarm.load_model("results/digits").describe()  # doctest: +SKIP
        'jaxswarm model: mlp, 64 inputs (8x8x1) -> 10 classes ...'
    """
    folder = _model_folder(Path(directory))
    spec_path = folder / MODEL_JSON
    try:
        spec = json.loads(spec_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{folder} has no {MODEL_JSON}: the model folder is incomplete; save the model again") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"cannot read {spec_path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{spec_path} is not valid JSON ({e}): the file is corrupt; save the model again") from None
    if not isinstance(spec, dict):
        raise ModelError(f"{spec_path} holds {type(spec).__name__}, not a model description; save the model again")
    if spec.get("format", FORMAT) != FORMAT:
        raise ModelError(f"{spec_path} is model format {spec.get('format')!r}; this jaxswarm ({version()}) reads "
                         f"format {FORMAT}: load it with the version that wrote it ({spec.get('jaxswarm_version')})")
    if spec.get("kind") == "task":
        return _load_task_model(folder, spec, task)
    if task is not None:
        raise ModelError(f"{folder} holds a built-in {spec.get('family')} network, not a task's model: load it "
                         "without task=")
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise ModelError(f"{spec_path} lacks {', '.join(missing)}; it was not written by SavedModel.save")
    family = _family(spec["family"], str(spec_path))
    try:
        cfg = family.config_type(**_tuples(spec["model_config"]))
    except TypeError as e:
        raise ModelError(f"{spec_path}: model_config does not fit the {family.name} family's config "
                         f"({e}); it was written by another jaxswarm version ({spec.get('jaxswarm_version')})") from None
    arch = _tuples(spec["arch"])
    variables = _read_blob(folder, VARIABLES)
    _check_variables(variables, family, arch, cfg, folder / VARIABLES)
    try:
        model = SavedModel(family, cfg, arch, variables, tuple(spec["classes"]), spec.get("hyperparameters"),
                           spec.get("metrics"), input_shape=spec.get("input_shape"))
    except ModelError as e:
        raise ModelError(f"{spec_path}: {e}") from None
    for name, actual in (("in_features", model.n_features_in_), ("num_classes", len(model.classes_)),
                         ("parameters", model.num_parameters)):  # what model.json states beside the config
        if name in spec and spec[name] != actual:
            raise ModelError(f"{spec_path}: {name} is {spec[name]!r} but the network holds {actual}: the file was "
                             "edited or is corrupt; save the model again")
    return model


class TaskModel:
    """Your own task's trained network: the member's static and traced hyperparameters and its training state.

    A study of a `task.Task` (or a `task.TrainingLoop`) returns its retrained winner as one
    (`StudyResult.model`) and saves it as ``model/`` (model.json: the static and traced hyperparameters,
    metrics, the task's import path when known; state.msgpack: the `task.SupervisedState`, or the loop's
    own state). `load_model(dir, task=task)` reads it back; only a Task's model can `predict`.

    Args:
        task: the `task.Task` it was trained on.
        static: its static hyperparameters (Python values).
        hp: its traced hyperparameters ({name: array scalar}).
        state: its `task.SupervisedState`.
        hyperparameters: what it trained with (recorded).
        metrics: e.g. ``{"test_mse": ...}`` (recorded).
        task_path: the task's ``module:attribute``, recorded so a later `load_model` can import it.
    """

    def __init__(self, task, static: dict, hp: dict, state, hyperparameters: dict | None = None,
                 metrics: dict | None = None, *, task_path: str | None = None):
        self.task, self.static, self.task_path = task, dict(static), task_path
        self.hp = {name: np.asarray(v) for name, v in hp.items()}
        self.state = jax.tree.map(lambda x: x if results.is_prng_key(x) else np.asarray(x), state)
        self.hyperparameters, self.metrics = dict(hyperparameters or {}), dict(metrics or {})
        self._forward = None

    def predict(self, batch):
        """The network's outputs on `batch`, evaluating (no dropout): a pytree of arrays shaped as the task's
        data (its inputs taken as `task.Task.inputs` takes them), every row at once."""
        if not isinstance(self.task, Task):
            raise ModelError("a training loop's model has no predict: its trained state is .state")
        if self._forward is None:
            self._forward = predictor(self.task, self.static)
        return jax.tree.map(np.asarray, self._forward(self.state, self.hp, batch))

    def spec(self) -> dict:
        """The contents of model.json (JSON-safe)."""
        return results.clean({
            "format": FORMAT, "kind": "task", "task": self.task_path, "static": self.static,
            "traced": {name: [v.item(), v.dtype.name] for name, v in self.hp.items()},
            "objective": self.task.objective._asdict(), "hyperparameters": self.hyperparameters,
            "metrics": self.metrics, "jaxswarm_version": version()})

    def describe(self) -> str:
        """One line: the static and traced hyperparameters and the metrics."""
        traced = {name: v.item() for name, v in self.hp.items()}
        return f"jaxswarm task model: static {_pairs(self.static)}; traced {_pairs(traced)}; {_pairs(self.metrics)}"

    def save(self, directory) -> Path:
        """Writes ``directory/model/`` (model.json and state.msgpack) atomically; returns its path."""
        return _write_model(directory, self.spec(), "static hyperparameters or metrics", TASK_STATE,
                            flax.serialization.to_bytes(results.keys_as_data(self.state)))


def _load_task_model(folder: Path, spec: dict, task) -> TaskModel:
    """`load_model` of a `TaskModel`: the saved state restored into the structure `task` builds at its static values."""
    path = spec.get("task")
    if task is None and path:
        try:
            task = load_task(path)
        except ValueError as e:
            raise ModelError(f"{folder} holds a model of task {path}, which does not load here ({e}); pass "
                             "load_model(dir, task=...)") from None
    if task is None:
        raise ModelError(f"{folder} holds a model of your own task: load it with load_model(dir, task=your_task), "
                         "the task it was trained on (it builds the network the weights belong to)")
    try:
        static = dict(spec["static"])
        hp = {name: np.asarray(value, dtype) for name, (value, dtype) in spec["traced"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{folder / MODEL_JSON} lacks a task model's static or traced hyperparameters ({e}); "
                         "save the model again") from None
    template = jax.eval_shape(lambda: builder(task)(static).init(jax.random.key(0), hp))
    restored = _read_blob(folder, TASK_STATE)
    stored = results.keys_as_data(template)  # keys are stored as their raw data
    want = jax.tree.map(lambda a: list(a.shape), flax.serialization.to_state_dict(stored))
    have = jax.tree.map(lambda a: list(np.shape(a)), restored)
    if want != have:
        raise ModelError(f"{folder / TASK_STATE} does not fit the network this task builds at {static}: "
                         "the task differs from the one the model was trained on")
    state = results.keys_from_data(flax.serialization.from_state_dict(stored, restored), template)
    return TaskModel(task, static, hp, state, spec.get("hyperparameters"), spec.get("metrics"), task_path=path)


def _read_blob(folder: Path, name: str):
    """The msgpack state dict in ``folder/name`` (one `ModelError` line for a missing or corrupt file)."""
    path = folder / name
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{folder} has no {name}: the model folder is incomplete; save the model again") from None
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e}") from None
    try:
        return flax.serialization.msgpack_restore(blob)
    except Exception as e:  # msgpack raises several types (ValueError, ExtraData, ...): all mean corrupt
        raise ModelError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); save the model again") from None


# -- helpers -----------------------------------------------------------------


def _model_folder(path: Path) -> Path:
    """The model folder a path names: ``path/model`` in a results folder, or `path` itself."""
    if not path.exists():
        raise ModelError(f"no saved model at {path}: the folder does not exist")
    if not path.is_dir():
        raise ModelError(f"{path} is a file; pass the results folder (holding {MODEL_DIR}/) or the model folder")
    if (path / MODEL_DIR).is_dir():
        return path / MODEL_DIR
    if (path / MODEL_JSON).exists() or (path / VARIABLES).exists() or (path / TASK_STATE).exists():
        return path
    raise ModelError(f"no saved model in {path}: it holds neither {MODEL_DIR}/ (a results folder) nor "
                     f"{MODEL_JSON} (a model folder); a study saves its model when it retrains its winner")


def _family(name, where: str) -> ModelFamily:
    if not isinstance(name, str) or name not in FAMILIES:
        raise ModelError(f"{where} names model family {name!r}, which this jaxswarm ({version()}) does not "
                         f"know; known families: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def _check_variables(variables, family: ModelFamily, arch: dict, cfg, path: Path) -> None:
    """One ModelError line unless `variables` has the shapes of the architecture's network."""
    try:
        template = jax.eval_shape(lambda: family.init_dense(jax.random.key(0), arch, cfg))
    except (ValueError, TypeError, KeyError) as e:
        raise ModelError(f"{path.parent / MODEL_JSON}: the architecture {arch} does not build a "
                         f"{family.name} network ({e})") from None
    want = _shapes(template)
    try:
        got = _shapes(variables)
    except (TypeError, ValueError):  # not a tree of arrays
        got = None
    if got != want:
        raise ModelError(f"{path} does not hold the weights of the architecture in {MODEL_JSON} "
                         "(names or shapes differ): the files do not belong together; save the model again")


def _shapes(tree) -> dict:
    """``{leaf path: (shape, dtype)}`` of a tree of arrays (or of ShapeDtypeStructs)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): (tuple(np.shape(leaf)), np.dtype(leaf.dtype) if hasattr(leaf, "dtype")
                                         else np.asarray(leaf).dtype) for path, leaf in leaves}


def _tuples(value: Any) -> Any:
    """JSON lists back to tuples (the configs' and architectures' sequence fields are tuples)."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def _pairs(d: dict) -> str:
    """``k=v, ...`` with floats in 4 significant digits."""
    def fmt(v):
        if isinstance(v, float) and math.isfinite(v):
            return f"{v:.4g}"
        return str(v)
    return ", ".join(f"{k}={fmt(v)}" for k, v in d.items())


def model_leftovers(directory) -> list[Path]:
    """The temporary folders (``.model.*``) a model save leaves in `directory` when it is killed before its
    renames finish: its new files half-written, or the model it was replacing."""
    return sorted(p for p in Path(directory).glob(f".{MODEL_DIR}.*") if p.is_dir())


def _write_model(directory, spec: dict, values: str, blob_name: str, blob: bytes) -> Path:
    """Writes ``directory/model/`` (model.json holding `spec`, `blob_name` holding `blob`) atomically, creating
    `directory`; `values` names what of `spec` may fail to be JSON (for the error)."""
    try:
        text = json.dumps(spec, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise ModelError(f"cannot save the model: its {values} are not JSON values ({e}); "
                         "use strings or numbers") from None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / MODEL_DIR
    tmp = directory / f".{MODEL_DIR}.{os.getpid()}.{os.urandom(6).hex()}"
    try:
        os.mkdir(tmp)  # mode 0777 less the umask, as the results folder (mkdtemp would make it 0700)
    except OSError as e:
        raise ModelError(f"cannot save the model in {directory}: {results.os_reason(e)}") from None
    try:
        results.write_text(tmp / MODEL_JSON, text)
        _write_bytes(tmp / blob_name, blob)
        if target.exists():
            # A directory cannot be renamed over a non-empty one: move the old aside first. Between
            # the two renames there is no model/ for an instant, never a half-written one.
            old = directory / f".{MODEL_DIR}.old.{os.getpid()}.{os.urandom(6).hex()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as e:  # a full disk: one line naming the file
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"cannot save the model in {directory}: {results.os_reason(e)}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _write_bytes(path: Path, blob: bytes) -> None:
    """Writes `blob` to a new file, mode 0666 less the umask (as results.write_text), synced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
