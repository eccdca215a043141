"""Tests for jaxswarm.sklearn: SwarmSearchClassifier under scikit-learn's conventions.

Every fit here runs a real (tiny) study; module-scoped fixtures share the fits.
"""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_iris, make_classification
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from jaxswarm.saved import SavedModel
from jaxswarm.sklearn import SwarmSearchClassifier, default_space, search_results

TINY = dict(swarm_size=4, rounds=2, epochs=20, batch_size=32)
CHECKS = dict(swarm_size=2, rounds=1, epochs=10, batch_size=32)  # the estimator_checks' instance


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def fitted(iris):
    """3-fold CV on standardized iris."""
    X, y = iris
    return SwarmSearchClassifier(**TINY, cv=3).fit(X, y)


def test_fit_predict_on_iris(fitted, iris):
    X, y = iris
    clf = fitted
    assert clf.n_features_in_ == 4 and clf.classes_.tolist() == [0, 1, 2] and clf.n_splits_ == 3
    assert isinstance(clf.best_model_, SavedModel)
    assert set(clf.best_params_) <= set(default_space().names)
    pred = clf.predict(X)
    assert pred.shape == (150,) and set(pred.tolist()) <= {0, 1, 2}
    assert clf.score(X, y) > 0.8
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(pred, clf.best_model_.predict(X))
    assert 0.0 < clf.best_score_ <= 1.0
    assert set(clf.best_model_.metrics) == {"train_accuracy"}  # the retrain's "test" set was X itself


def test_cv_results_has_grid_search_keys_and_ranks(fitted, iris):
    res = fitted.cv_results_
    n = TINY["swarm_size"] * TINY["rounds"]
    # The keys GridSearchCV itself writes for the same CV (a cheap one on the same data).
    X, y = iris
    grid = GridSearchCV(LogisticRegression(max_iter=200), {"C": [0.1, 1.0]}, cv=3).fit(X, y).cv_results_
    shared = {"params", "mean_test_score", "std_test_score", "rank_test_score", "mean_fit_time",
              "split0_test_score", "split1_test_score", "split2_test_score"}
    assert shared <= set(grid) and shared <= set(res)
    assert "split3_test_score" not in res
    for key in shared - {"params"}:
        assert isinstance(res[key], np.ndarray) and res[key].shape == (n,) and res[key].dtype.kind == grid[key].dtype.kind
    assert len(res["params"]) == n and all(isinstance(p, dict) for p in res["params"])
    for name in default_space().names:
        column = res[f"param_{name}"]
        assert isinstance(column, np.ma.MaskedArray) and isinstance(grid["param_C"], np.ma.MaskedArray)
        for p, value, masked in zip(res["params"], column.data, np.ma.getmaskarray(column)):
            assert masked == (name not in p) and (masked or value == p[name])
    splits = np.stack([res[f"split{k}_test_score"] for k in range(3)], 1)
    np.testing.assert_allclose(res["mean_test_score"], splits.mean(1), rtol=1e-6)
    np.testing.assert_allclose(res["std_test_score"], splits.std(1), rtol=1e-5, atol=1e-7)
    ranks = res["rank_test_score"]
    assert ranks.dtype == np.int32 and ranks.min() == 1
    for i in range(n):  # rank = 1 + how many score strictly better (ties share the smallest rank)
        assert ranks[i] == 1 + np.sum(res["mean_test_score"] > res["mean_test_score"][i])
    best = fitted.best_index_
    assert res["mean_test_score"][best] == np.float64(fitted.best_score_) and ranks[best] == 1
    assert res["params"][best] == fitted.best_params_
    assert sorted(zip(res["round"], res["particle"])) == [(r, i) for r in range(2) for i in range(4)]


def test_search_results_rank_ties_and_diverged_like_grid_search():
    rows = [
        {"config": {"n_layers": 1, "units_1": 8}, "fitness": 0.5, "fold_fitness": [0.4, 0.6], "seconds": 1.0},
        {"config": {"n_layers": 2, "units_1": 8, "units_2": 4}, "fitness": 0.9, "fold_fitness": [0.9, 0.9],
         "seconds": 2.0},
        {"config": {"n_layers": 1, "units_1": 16}, "fitness": 0.9, "fold_fitness": [1.0, 0.8], "seconds": 3.0},
        {"config": {"n_layers": 1, "units_1": 32}, "fitness": float("-inf"), "fold_fitness": [float("-inf"), 0.7],
         "seconds": 4.0},
        {"config": {"n_layers": 1, "units_1": 4}, "fitness": 0.7, "fold_fitness": [0.7, 0.7], "seconds": 5.0},
    ]
    res = search_results(rows, 2)
    assert res["rank_test_score"].tolist() == [4, 1, 1, 5, 3]  # a diverged configuration (nan) ranks last
    assert np.isnan(res["mean_test_score"][3]) and np.isnan(res["split0_test_score"][3])
    np.testing.assert_allclose(res["std_test_score"][[0, 1, 2, 4]], [0.1, 0.0, 0.1, 0.0], atol=1e-12)
    assert np.ma.getmaskarray(res["param_units_2"]).tolist() == [True, False, True, True, True]
    assert res["param_units_2"][1] == 4 and res["mean_fit_time"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert search_results([{"config": {}, "fitness": float("nan"), "fold_fitness": [float("nan")],
                            "seconds": 0.0}], 1)["rank_test_score"].tolist() == [1]


def test_pipeline_with_standard_scaler_fits_and_scores():
    X, y = make_classification(n_samples=400, n_features=8, n_informative=5, n_classes=3, random_state=0)
    X = X * 50 + 100  # far from standardized: the scaler's work
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", SwarmSearchClassifier(**TINY))])
    assert pipe.get_params()["clf__swarm_size"] == 4
    pipe.fit(X_tr, y_tr)
    assert pipe.score(X_te, y_te) > 0.6  # chance is 1/3
    assert pipe.predict(X_te).shape == (100,) and pipe.predict_proba(X_te).shape == (100, 3)
    assert pipe.set_params(clf__rounds=1).named_steps["clf"].rounds == 1


@pytest.fixture(scope="module")
def named(iris):
    """String labels, fitted for minus the log loss."""
    X, y = iris
    names = np.array(["virginica", "setosa", "versicolor"])[y]  # sorted: setosa, versicolor, virginica
    return SwarmSearchClassifier(**TINY, scoring="neg_log_loss").fit(X, names), X, names


def test_string_labels_round_trip(named):
    clf, X, names = named
    assert clf.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    pred = clf.predict(X)
    assert pred.dtype == names.dtype and set(pred.tolist()) <= set(names.tolist())
    assert clf.score(X, names) > 0.8
    assert clf.best_model_.classes_.tolist() == clf.classes_.tolist()
    np.testing.assert_array_equal(clf.classes_[clf.predict_proba(X).argmax(1)], pred)


def test_neg_log_loss_scores_minus_the_loss(named):
    clf = named[0]
    assert clf.scoring == "neg_log_loss" and clf.best_score_ < 0
    assert np.nanmax(clf.cv_results_["mean_test_score"]) == np.float64(clf.best_score_)


def test_picklable_after_fit(fitted, iris):
    X, _ = iris
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict(X), fitted.predict(X))
    assert again.predict_proba(X).tobytes() == fitted.predict_proba(X).tobytes()
    assert again.best_params_ == fitted.best_params_


def test_wrong_feature_count_at_predict(fitted, iris):
    with pytest.raises(ValueError, match="X has 3 features, but SwarmSearchClassifier is expecting 4"):
        fitted.predict(iris[0][:, :3])


def test_unfitted_estimator_raises_not_fitted():
    with pytest.raises(NotFittedError):
        SwarmSearchClassifier().predict(np.zeros((2, 3)))


@pytest.mark.parametrize("params, match", [
    (dict(scoring="f1"), r"scoring must be one of \['accuracy', 'neg_log_loss'\]"),
    (dict(cv=0), "cv must be an integer >= 1"),
    (dict(cv=True), "cv must be an integer >= 1"),
    (dict(random_state="seed"), "random_state must be"),
])
def test_bad_settings_are_value_errors_at_fit(iris, params, match):
    clf = SwarmSearchClassifier(**params)  # never raises in __init__ (scikit-learn's convention)
    with pytest.raises(ValueError, match=match):
        clf.fit(*iris)


def test_params_are_stored_verbatim_and_clone():
    space = default_space()
    clf = SwarmSearchClassifier(space=space, swarm_size=3, cv=5, random_state=None)
    params = clf.get_params()
    assert params["space"] is space and params["swarm_size"] == 3 and params["cv"] == 5
    assert sorted(params) == sorted(["space", "swarm_size", "rounds", "epochs", "cv", "scoring", "batch_size",
                                     "val_fraction", "random_state", "layout", "retrain_epochs", "verbose",
                                     "standardize"])
    copy = clone(clf)
    assert copy.get_params()["swarm_size"] == 3 and copy.get_params()["space"].names == space.names


# Checks that never fit successfully (interface, parameters, errors): cheap, run with the default suite.
QUICK_CHECKS = [
    "check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order", "check_parameters_default_constructible",
    "check_get_params_invariance", "check_set_params", "check_estimators_unfitted", "check_fit2d_1sample",
    "check_classifiers_one_label", "check_classifiers_regression_target", "check_supervised_y_no_nan",
    "check_estimators_empty_data_messages", "check_complex_data", "check_fit1d",
]


@pytest.mark.parametrize("check", QUICK_CHECKS)
def test_quick_estimator_checks(check):
    getattr(estimator_checks, check)(SwarmSearchClassifier.__name__, SwarmSearchClassifier(**CHECKS))


@pytest.mark.slow
@parametrize_with_checks([SwarmSearchClassifier(**CHECKS)])
def test_sklearn_estimator_checks(estimator, check):
    """scikit-learn's estimator checks, all of those its `parametrize_with_checks` yields for this classifier.

    About 5 minutes on CPU (some 45 tiny studies, each a swarm compile plus a retrain), hence `slow`.
    None is expected to fail; `check_classifiers_train`'s accuracy bar (0.83 on blobs) is met without the
    `poor_score` tag. Not run, because they do not apply: the sample-weight checks (`fit` takes no
    `sample_weight`: the swarm's loss weights rows equally), `partial_fit`, `decision_function`,
    multi-output and multilabel checks (one label per row). Two are skipped by scikit-learn itself:
    `check_array_api_input` unless ``SCIPY_ARRAY_API=1`` (the estimator converts inputs to NumPy), and
    `check_dataframe_column_names_consistency` when pandas is not installed.
    """
    check(estimator)


def test_a_custom_space_survives_clone_and_pickle():
    space = default_space()
    clf = SwarmSearchClassifier(space=space)
    for copy in (clone(clf).space, pickle.loads(pickle.dumps(clf)).space):
        assert copy.names == space.names and copy.dim_names == space.dim_names
        assert copy.to_python(np.full(space.num_dims, 0.3)) == space.to_python(np.full(space.num_dims, 0.3))


def test_the_regressor_predicts_in_y_units_for_one_target_or_several():
    """A Flax MLP tuned for MSE on a standardized target: held-out R^2 of a noisy linear map far above a
    constant's 0, predictions in y's units and shape."""
    from sklearn.base import clone

    from jaxswarm.sklearn import SwarmSearchRegressor
    from jaxswarm.space import Choice, Float, SearchSpace

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)) * [1.0, 10.0, 0.1, 1.0] + 5.0  # columns of other scales and means
    w = np.array([[2.0, -1.0], [0.3, 0.1], [-10.0, 4.0], [0.0, 1.0]])
    Y = 1000.0 + X @ w + rng.normal(scale=0.1, size=(300, 2))
    space = SearchSpace({"width": Choice([16]), "learning_rate": Float(3e-3, 3e-2, log=True)})
    reg = SwarmSearchRegressor(space=space, swarm_size=2, rounds=1, epochs=30)
    one = clone(reg).fit(X[:200], Y[:200, 0])
    assert one.predict(X[200:]).shape == (100,) and one.score(X[200:], Y[200:, 0]) > 0.9
    two = clone(reg).fit(X[:200], Y[:200])
    assert two.predict(X[200:]).shape == (100, 2) and two.score(X[200:], Y[200:]) > 0.9
    assert one.best_score_ == max(one.cv_results_["mean_test_score"]) and one.best_score_ < 0  # minus an MSE


def test_small_raw_data_trains_with_the_defaults():
    """Iris unscaled, as a user meets it: the old defaults (10 epochs of ~2 steps, raw features) scored 0.76;
    standardizing and sizing the epochs by minibatch steps brings the defaults to MLPClassifier's level."""
    X, y = load_iris(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    clf = SwarmSearchClassifier(swarm_size=4, rounds=2, random_state=0).fit(Xtr, ytr)
    assert clf.score(Xte, yte) > 0.9
    assert np.allclose(clf.scaler_.mean, Xtr.mean(0)) and clf.predict(Xte).shape == yte.shape
