"""`SwarmSearchClassifier` and `SwarmSearchRegressor`: a PSO study behind scikit-learn's estimator interface.

`fit(X, y)` runs a study (`study.Study`) on the arrays, k-fold cross-validated
when ``cv > 1`` (the folds vectorized with the swarm, as in any study), and keeps
the retrained winner (`saved.SavedModel`) as ``best_model_``; `predict`,
`predict_proba` and `score` ask it. The search is reported the way
``GridSearchCV`` reports its own: ``best_params_``, ``best_score_`` and
``cv_results_`` (one row per evaluated configuration, every round's particles).
`SwarmSearchRegressor` tunes a Flax MLP (a `task.Task`, its depth and width static)
for the mean squared error of a standardized target and predicts in y's units.

Example:
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(), SwarmSearchClassifier(swarm_size=4, rounds=2, epochs=20))
    >>> clf.fit(X, y).score(X, y) > 0.8  # doctest: +SKIP
    True
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6: the estimator's own method (pyproject allows >= 1.3)
    def validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

from jaxswarm import data
from jaxswarm.models import mlp_space
from jaxswarm.space import SearchSpace
from jaxswarm.study import Study, StudyConfig
from jaxswarm.task import TaskData, mlp_task, mlp_task_space

__all__ = ["SwarmSearchClassifier", "SwarmSearchRegressor", "SCORINGS", "default_space", "regression_space",
           "search_results"]


MIN_STEPS = 500  # minibatch steps a member takes at least when `epochs` is None (small data: more epochs)

# scikit-learn scoring name -> the study's fitness (both higher-is-better: fitness "loss" is minus the loss).
SCORINGS = {"accuracy": "accuracy", "neg_log_loss": "loss"}


def default_space():
    """The search space of ``space=None``: a small MLP (1-2 hidden layers of 16-128 units).

    Example:
        >>> default_space().names
        ('n_layers', 'units_1', 'units_2', 'activation', 'learning_rate')
    """
    return mlp_space(max_layers=2, units=(16, 128))


class SwarmSearchClassifier(ClassifierMixin, BaseEstimator):
    """Tunes and trains a network by particle swarm search, as a scikit-learn classifier.

    Args:
        space: the `SearchSpace` (None: `default_space()`, a small MLP). Its
            family picks the network; image spaces (`cnn_space`) need X as
            ``[N, H, W, C]``.
        swarm_size: particles per round (the study's ``swarm_size``).
        rounds: PSO rounds; ``swarm_size * rounds`` configurations are evaluated.
        epochs: training epochs of each evaluation (None: enough for `MIN_STEPS` minibatch steps, at
            least 10: small data needs more epochs than large data for the same training).
        cv: 1: a hold-out validation split of ``val_fraction``; k > 1: k-fold
            cross-validation over all of X.
        scoring: ``"accuracy"`` or ``"neg_log_loss"`` (the study's fitness
            ``"loss"``); None means ``"accuracy"``.
        batch_size: minibatch size (None: 64, or an eighth of the training rows when that is smaller,
            at least 16).
        standardize: center and scale each feature of 2-D X by its mean and standard deviation over
            the X that `fit` is given (kept, and applied by `predict`), as a `StandardScaler` in a
            pipeline would; images (X of more than two dimensions) are left as they are.
        val_fraction: the hold-out validation fraction when ``cv == 1``.
        random_state: int seed, None, or a ``numpy.random.RandomState`` (an int is drawn from it).
        layout: the study's layout ("auto" or a key of `layouts.LAYOUTS`).
        retrain_epochs: epochs of the final retrain of the winner on all of X
            (None: ``epochs``).
        verbose: show the study's progress.

    Attributes:
        best_params_: the best configuration (dict of the space's parameters).
        best_score_: its validation score (mean over folds when ``cv > 1``).
        best_index_: its row in ``cv_results_``.
        best_model_: the winner retrained on all of X (`saved.SavedModel`; ``.save(dir)`` keeps it).
        cv_results_: dict of arrays in ``GridSearchCV``'s layout (see `search_results`).
        classes_: the class labels, sorted.
        n_features_in_: features per example.

    Example:
        >>> clf = SwarmSearchClassifier(swarm_size=4, rounds=2, epochs=5).fit(X, y)  # doctest: +SKIP
        >>> clf.best_params_["n_layers"], clf.predict(X[:2])  # doctest: +SKIP
        (2, array([0, 1]))
    """

    def __init__(self, space=None, swarm_size=8, rounds=4, epochs=None, cv=1, scoring="accuracy", batch_size=None,
                 val_fraction=0.1, random_state=0, layout="auto", retrain_epochs=None, verbose=False,
                 standardize=True):
        # scikit-learn's convention: store every argument as given; fit validates them.
        self.space = space
        self.swarm_size = swarm_size
        self.rounds = rounds
        self.epochs = epochs
        self.cv = cv
        self.scoring = scoring
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.layout = layout
        self.retrain_epochs = retrain_epochs
        self.verbose = verbose
        self.standardize = standardize

    def fit(self, X, y):
        """Runs the study on ``(X, y)`` and retrains its winner on all of X.

        Args:
            X: ``[N, F]`` features (or ``[N, H, W(, C)]`` images).
            y: ``[N]`` class labels (integers or strings).

        Returns:
            self.

        Example:
            >>> SwarmSearchClassifier(swarm_size=2, rounds=1, epochs=2).fit(X, y).best_score_  # doctest: +SKIP
            0.91
        """
        fitness = self._fitness()
        folds = self._folds()
        if _ndim(X) > 2:  # images: no feature names; the features per example are H*W*C
            X, y = check_X_y(X, y, allow_nd=True)
            n_features = int(np.prod(X.shape[1:]))
        else:
            X, y = validate_data(self, X, y)
            n_features = X.shape[1]
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"SwarmSearchClassifier needs at least 2 classes in y, got 1 class ({classes[0]!r})")
        seed = _seed(self.random_state)
        self.scaler_ = _Scaler.of(X) if self.standardize and np.ndim(X) == 2 else None
        if self.scaler_ is not None:
            X = self.scaler_(X)
        n_train = len(X) * (folds - 1) // folds if folds > 1 else len(X) - max(1, round(self.val_fraction * len(X)))
        batch_size = self.batch_size or min(64, max(16, n_train // 8))
        epochs = self.epochs or max(10, -(-MIN_STEPS // max(1, n_train // batch_size)))
        # All of X is searched on (a validation split or k folds) and the winner retrains on all of it, as
        # GridSearchCV refits on all of X. The study's test set is X itself: its "test accuracy" is the
        # training accuracy, and nothing is held out of the final model.
        dataset = data.from_arrays(X, y, x_test=X, y_test=y, val_fraction=self.val_fraction, seed=seed,
                                   name="sklearn")
        config = StudyConfig(swarm_size=self.swarm_size, rounds=self.rounds, epochs=epochs,
                             batch_size=batch_size, folds=folds, fitness=fitness, seed=seed, retrain=True,
                             retrain_epochs=self.retrain_epochs, layout=self.layout)
        space = default_space() if self.space is None else self.space
        _search(self, Study(space, dataset, config, progress=bool(self.verbose)), folds,
                "narrow the space's learning_rate or standardize X")
        # Its "test" set was X itself (above): say what that accuracy is.
        if "test_accuracy" in self.best_model_.metrics:
            self.best_model_.metrics["train_accuracy"] = self.best_model_.metrics.pop("test_accuracy")
        self.classes_ = classes
        self.n_features_in_ = n_features
        return self

    def predict(self, X) -> np.ndarray:
        """The predicted class of each row (labels from ``classes_``)."""
        X = self._inputs(X)
        # best_model_ answers in the labels data.from_arrays kept (integral floats there became ints):
        # cast back to y's own dtype.
        return np.asarray(self.best_model_.predict(X)).astype(self.classes_.dtype, copy=False)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities f32 ``[N, C]``, columns in the order of ``classes_``."""
        X = self._inputs(X)  # first: unfitted is NotFittedError, not an AttributeError
        return self.best_model_.predict_proba(X)

    # score: ClassifierMixin's accuracy of predict(X), i.e. best_model_'s predictions.

    # -- helpers ---------------------------------------------------------------

    def _inputs(self, X) -> np.ndarray:
        check_is_fitted(self, "best_model_")
        if _ndim(X) > 2:
            return check_array(X, allow_nd=True)
        X = validate_data(self, X, reset=False)
        return X if getattr(self, "scaler_", None) is None else self.scaler_(X)

    def _fitness(self) -> str:
        scoring = "accuracy" if self.scoring is None else self.scoring
        if not isinstance(scoring, str) or scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {sorted(SCORINGS)} (or None for accuracy), got {scoring!r}; "
                             "the swarm's fitness is computed inside its training program")
        return SCORINGS[scoring]

    def _folds(self) -> int:
        cv = self.cv
        if isinstance(cv, (bool, np.bool_)) or not isinstance(cv, numbers.Integral) or cv < 1:
            raise ValueError(f"cv must be an integer >= 1 (1: a hold-out validation split; k: k folds), got {cv!r}; "
                             "splitter objects are not supported (the folds train inside the swarm's program)")
        return int(cv)



def regression_space() -> SearchSpace:
    """`SwarmSearchRegressor`'s space when given none: the MLP preset's (`task.mlp_task_space`), 1-2 hidden
    layers of 32 or 128 ReLU units (static: four programs), Adam's learning rate and AdamW's weight decay
    (traced).

    Example:
        >>> regression_space().names
        ('depth', 'width', 'learning_rate', 'weight_decay')
    """
    return mlp_task_space()


class SwarmSearchRegressor(RegressorMixin, BaseEstimator):
    """Tunes and trains a Flax MLP regressor by particle swarm search, as a scikit-learn regressor.

    X and y are standardized with their own mean and standard deviation (kept, so `predict` answers in
    y's units); a ``val_fraction`` of the rows scores the members (the mean squared error of the
    standardized target, minimized), and the winner retrains on all of X, as ``GridSearchCV`` refits.

    Args:
        space: the `SearchSpace` (None: `regression_space()`); the MLP preset's (`task.mlp_task`): its
            ``depth``, ``width`` and ``activation`` (static, 1, 64 and relu when absent) shape the MLP, its
            ``learning_rate``, ``weight_decay`` (and ``optimizer``, ``dropout``) the training.
            64 when absent) shape the MLP, its ``learning_rate`` and ``weight_decay`` the optimizer.
        swarm_size, rounds, epochs, batch_size: the study's.
        val_fraction: the hold-out validation fraction.
        random_state: int seed, None, or a ``numpy.random.RandomState``.
        retrain_epochs: epochs of the winner's retrain on all of X (None: ``epochs``).
        verbose: show the study's progress.

    Attributes:
        best_params_, best_score_ (minus the validation MSE of the standardized target), best_index_,
        cv_results_ (as `SwarmSearchClassifier`'s), best_model_ (a `saved.TaskModel`), n_features_in_.

    Example:
        >>> from sklearn.datasets import load_diabetes
        >>> X, y = load_diabetes(return_X_y=True)
        >>> SwarmSearchRegressor(swarm_size=4, rounds=2, epochs=20).fit(X, y).score(X, y) > 0.3  # doctest: +SKIP
        True
    """

    def __init__(self, space=None, swarm_size=8, rounds=4, epochs=50, batch_size=32, val_fraction=0.2,
                 random_state=0, retrain_epochs=None, verbose=False):
        self.space = space
        self.swarm_size = swarm_size
        self.rounds = rounds
        self.epochs = epochs
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.retrain_epochs = retrain_epochs
        self.verbose = verbose

    def fit(self, X, y):
        """Runs the study on ``(X, y)`` (y of shape ``[N]`` or ``[N, K]``) and retrains its winner on all of X."""
        X, y = validate_data(self, X, y, y_numeric=True, multi_output=True, dtype=np.float64)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        n = len(X)
        n_val = max(1, int(round(self.val_fraction * n)))
        if n - n_val < 1:
            raise ValueError(f"SwarmSearchRegressor needs at least 2 rows (one to train, one to validate), got {n}")
        Y = y.reshape(n, -1)
        self.scaler_, self.y_scaler_ = _Scaler.of(X), _Scaler.of(Y)
        rows = {"x": self.scaler_(X), "y": self.y_scaler_(Y)}
        seed = _seed(self.random_state)
        order = np.random.default_rng(seed).permutation(n)
        train, val = ({k: v[idx] for k, v in rows.items()} for idx in (order[n_val:], order[:n_val]))
        space = regression_space() if self.space is None else self.space
        task = mlp_task(TaskData(train, val), loss="mse", space=space, batch_size=min(int(self.batch_size), n - n_val))
        config = StudyConfig(swarm_size=self.swarm_size, rounds=self.rounds, epochs=self.epochs, seed=seed,
                             retrain_epochs=self.retrain_epochs)
        _search(self, Study(space, task, config, progress=bool(self.verbose)), 1, "narrow the space's learning_rate")
        self._single_output = y.ndim == 1
        return self

    def predict(self, X) -> np.ndarray:
        """The predicted target of each row, in y's units (``[N]``, or ``[N, K]`` for a 2-D y)."""
        check_is_fitted(self, "best_model_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = np.asarray(self.best_model_.predict({"x": self.scaler_(X)}), np.float64)
        out = out * self.y_scaler_.scale + self.y_scaler_.mean
        return out[:, 0] if self._single_output else out

    # score: RegressorMixin's R^2 of predict(X).


def _seed(random_state) -> int:
    """The study's seed from an estimator's ``random_state`` (an int drawn from a RandomState or None)."""
    rs = random_state
    if isinstance(rs, numbers.Integral) and not isinstance(rs, (bool, np.bool_)):
        return int(rs)
    if rs is None or isinstance(rs, np.random.RandomState):
        return int(check_random_state(rs).randint(2**31 - 1))
    raise ValueError(f"random_state must be an int, None or a numpy.random.RandomState, got {rs!r}")


def _search(estimator, study: Study, folds: int, hint: str) -> None:
    """Runs `study` and sets the search's attributes on `estimator` as ``GridSearchCV`` names them:
    ``best_params_``, ``best_score_``, ``best_model_`` (the retrained winner), ``n_splits_``, ``cv_results_``
    and ``best_index_``. A study that kept nothing (every evaluation diverged) is a RuntimeError ending in
    `hint`."""
    result = study.run()
    if result.status != "ok" or result.model is None:
        raise RuntimeError(f"the study found no configuration to keep (status {result.status!r}): every "
                           f"evaluation diverged; {hint}")
    estimator.best_params_ = dict(result.best_config)
    estimator.best_score_ = float(result.best_fitness)
    estimator.best_model_ = result.model
    estimator.n_splits_ = folds
    estimator.cv_results_ = search_results(study.evaluations, folds)
    estimator.best_index_ = _best_index(estimator.cv_results_, estimator.best_params_, estimator.best_score_)


def _scale(std: np.ndarray) -> np.ndarray:
    """A standard deviation to divide by: 1 where a column is constant."""
    return np.where(std > 0, std, 1.0)


class _Scaler(NamedTuple):
    """A feature's mean and standard deviation (1 for a constant feature), as `StandardScaler` keeps them."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, X) -> _Scaler:
        X = np.asarray(X, np.float64)
        return cls(X.mean(0), _scale(X.std(0)))

    def __call__(self, X) -> np.ndarray:
        return ((np.asarray(X, np.float64) - self.mean) / self.scale).astype(np.float32)


def _ndim(X) -> int:
    """Dimensions of an array-like without np.ndim (array-likes may refuse __array_function__)."""
    ndim = getattr(X, "ndim", None)  # arrays, DataFrames, sparse matrices
    return int(ndim) if isinstance(ndim, numbers.Integral) else np.asarray(X).ndim


def search_results(rows: list[dict], folds: int) -> dict:
    """``cv_results_`` in ``GridSearchCV``'s layout from a study's evaluation rows.

    One entry per evaluated configuration, in the order the study ran them
    (round by round, particle by particle): ``params``, ``param_<name>``
    (masked where a configuration lacks the parameter, e.g. an inactive
    conditional), ``split{k}_test_score`` for ``k < folds``,
    ``mean_test_score`` (the study's fitness), ``std_test_score`` (over folds),
    ``rank_test_score`` (1 = best, ties share the smallest rank),
    ``mean_fit_time`` (the round's seconds per configuration) and the study's
    own ``round`` and ``particle``. A diverged configuration scores nan, as a
    failed fit under ``GridSearchCV(error_score=np.nan)``, and ranks last.

    Args:
        rows: `Study.evaluations` (dicts with config, fitness, fold_fitness, seconds, round, particle).
        folds: the study's folds (1: a hold-out split).

    Returns:
        A dict of arrays (``params`` a list).

    Example:
        >>> r = search_results([{"config": {"a": 1}, "fitness": 0.5, "fold_fitness": [0.5], "seconds": 1.0,
        ...                      "round": 0, "particle": 0}], 1)
        >>> r["rank_test_score"].tolist(), r["split0_test_score"].tolist()
        ([1], [0.5])
    """
    n = len(rows)
    params = [dict(r["config"]) for r in rows]
    mean = _scores([r["fitness"] for r in rows])
    splits = np.full((n, folds), np.nan)
    for i, r in enumerate(rows):
        fold = r.get("fold_fitness")
        if fold is None and folds == 1:  # a hold-out split: its one fold is the fitness
            fold = [r["fitness"]]
        if fold is not None:
            splits[i] = _scores(np.ravel(fold)[:folds])
    out: dict = {"mean_fit_time": np.array([np.nan if r.get("seconds") is None else float(r["seconds"])
                                            for r in rows])}
    names = list(dict.fromkeys(name for p in params for name in p))
    for name in names:
        column = np.ma.MaskedArray(np.empty(n, dtype=object), mask=True)
        for i, p in enumerate(params):
            if name in p:
                column[i] = p[name]
        out[f"param_{name}"] = column
    out["params"] = params
    for k in range(folds):
        out[f"split{k}_test_score"] = splits[:, k]
    out["mean_test_score"] = mean
    with np.errstate(invalid="ignore"):
        out["std_test_score"] = np.std(splits, axis=1)
    out["rank_test_score"] = _rank(mean)
    out["round"] = np.array([int(r.get("round", -1)) for r in rows], np.int64)
    out["particle"] = np.array([int(r.get("particle", -1)) for r in rows], np.int64)
    return out


def _best_index(results: dict, best_params: dict, best_score: float) -> int:
    """The row of the study's winner: the first with its score and configuration (else its score)."""
    scores = np.asarray(results["mean_test_score"], float)
    if scores.size == 0 or np.isnan(scores).all():
        return 0
    ties = np.flatnonzero(scores == np.float64(best_score))
    if ties.size == 0:  # the winner's fitness came back rounded differently: the best row instead
        ties = np.flatnonzero(scores == np.nanmax(scores))
    same = [i for i in ties if results["params"][i] == best_params]
    return int(same[0] if same else ties[0])


def _scores(values) -> np.ndarray:
    """Floats, a diverged (non-finite or missing) score as nan."""
    a = np.array([np.nan if v is None else float(v) for v in values], float)
    return np.where(np.isfinite(a), a, np.nan)


def _rank(mean: np.ndarray) -> np.ndarray:
    """GridSearchCV's ranks: 1 = best, ties share the smallest rank, nan after every score."""
    if mean.size == 0 or np.isnan(mean).all():
        return np.ones(mean.shape, np.int32)
    filled = np.where(np.isnan(mean), np.nanmin(mean) - 1, mean)
    return rankdata(-filled, method="min").astype(np.int32)
