"""Tests for jaxswarm.saved: a trained dense network as a model (predict, save, load)."""

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxswarm
from jaxswarm import data, saved, train
from jaxswarm.models import FAMILIES, cnn_space, family_of, mlp_space
from jaxswarm.saved import ModelError, SavedModel, load_model
from jaxswarm.study import retrain_model

REPO = Path(__file__).resolve().parent.parent


def _trained(space, values, ds, epochs=2):
    """Trains the configuration `values` densely on train+val (validated on test), as a study's retrain."""
    pool_x = np.concatenate([ds.x_train, ds.x_val])
    pool_y = np.concatenate([ds.y_train, ds.y_val])
    d = train.device_data(pool_x, pool_y, ds.x_test, ds.y_test)
    dense = train.make_dense_train(space, train.TrainConfig(epochs=epochs, batch_size=32), ds.num_features,
                                   ds.num_classes, input_shape=ds.input_shape)
    position = space.encode(values)
    metrics, variables = dense.fit_position(jax.random.key(0), position, d)
    arch, _ = dense.describe(position)
    return dense, metrics, variables, arch, d


@pytest.fixture(scope="module")
def digits():
    return jaxswarm.load_dataset("digits")


@pytest.fixture(scope="module")
def mlp(digits):
    """A 2-layer MLP with batch norm (running statistics to save) trained 2 epochs on digits."""
    space = mlp_space(max_layers=2, units=(8, 32), dropout=(0.0, 0.3), batch_norm=True)
    values = {"n_layers": 2, "units_1": 32, "units_2": 16, "activation": "relu", "learning_rate": 0.01,
              "dropout": 0.1, "batch_norm": True}
    dense, metrics, variables, arch, d = _trained(space, values, digits)
    assert arch["batch_norm"] and variables["batch_stats"]
    model = SavedModel(family_of(space), dense.model_config, arch, variables, digits.classes,
                       {"learning_rate": 0.01}, {"test_accuracy": float(metrics.val_accuracy)},
                       input_shape=digits.input_shape)
    return model, metrics, variables, arch, dense.model_config, d


def test_predictions_equal_the_dense_network_bitwise(mlp, digits):
    model, metrics, variables, arch, cfg, d = mlp
    logits, _ = jax.jit(lambda v, x: FAMILIES["mlp"].apply_dense(v, x, arch, cfg, train=False))(variables, d.x_val)
    expected = np.asarray(digits.classes)[np.argmax(np.asarray(logits), -1)]
    np.testing.assert_array_equal(model.predict(digits.x_test), expected)
    # The retrain's own test accuracy (its validation split was the test set) is the model's score.
    n = len(digits.y_test)
    assert round(model.score(digits.x_test, digits.y_test) * n) == round(float(metrics.val_accuracy) * n)
    # Images, flat rows and JAX arrays are the same inputs.
    flat = digits.x_test.reshape(n, -1)
    np.testing.assert_array_equal(model.predict(flat), expected)
    np.testing.assert_array_equal(model.predict(jax.numpy.asarray(flat)), expected)
    proba = model.predict_proba(digits.x_test)
    assert proba.dtype == np.float32 and proba.shape == (n, 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(proba, np.asarray(jax.nn.softmax(logits, -1)), rtol=1e-5, atol=1e-7)
    assert model.classes_.tolist() == list(range(10)) and model.n_features_in_ == 64


def test_a_studys_retrained_model_predicts_as_its_retrain(digits):
    """`study.retrain_model`'s SavedModel scores the retrain's own test accuracy, prediction for prediction."""
    space = mlp_space(max_layers=1, units=(8, 16))
    position = space.encode({"units_1": 16, "activation": "tanh", "learning_rate": 0.05})
    metrics, model = retrain_model(space, digits, position, seed=0, epochs=2, batch_size=32, fitness="accuracy")
    cfg = model.model_config
    x = digits.x_test.reshape(len(digits.x_test), -1)
    logits, _ = jax.jit(lambda v, x: model.family.apply_dense(v, x, model.arch, cfg, train=False))(model.variables, x)
    np.testing.assert_array_equal(model.predict(digits.x_test), np.argmax(np.asarray(logits), -1))
    n = len(digits.y_test)
    assert round(model.score(digits.x_test, digits.y_test) * n) == round(float(metrics.val_accuracy) * n)
    assert model.metrics["test_accuracy"] == float(metrics.val_accuracy)


def test_one_compile_for_any_number_of_rows(mlp, digits):
    model, _, variables, arch, cfg, _ = mlp
    small = SavedModel(FAMILIES["mlp"], cfg, arch, variables, digits.classes, batch_size=100)
    x = np.concatenate([digits.x_test] * 3)  # 1080 rows: 11 batches, the last padded
    for rows in (1, 7, 100, 101, len(x)):
        np.testing.assert_array_equal(small.predict(x[:rows]), model.predict(x[:rows]))
    assert small._forward._cache_size() == 1
    assert small.predict(x[:0]).shape == (0,) and small.predict_proba(x[:0]).shape == (0, 10)


def test_uint8_inputs_are_scaled_as_from_arrays_scales_them(mlp, digits):
    model = mlp[0]
    images = np.random.default_rng(0).integers(0, 256, size=(20, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_array_equal(model.predict_proba(images),
                                  model.predict_proba(images.astype(np.float32) / np.float32(255)))


@pytest.mark.parametrize("x, match", [
    (np.zeros((3, 10), np.float32), r"expects 64 features per example .*got 10 \(X of shape \(3, 10\)\)"),
    (np.zeros((3, 8, 4, 1), np.float32), r"expects 64 features .*got 32"),
    (np.zeros(64, np.float32), r"expects X of shape \[N, 64\] or \[N, 8, 8, 1\], got X of shape \(64,\)"),
    (np.array([["a"] * 64]), "numeric"),
    (np.full((2, 64), np.nan, np.float32), "NaN"),
])
def test_wrong_inputs_are_one_model_error_line(mlp, x, match):
    with pytest.raises(ModelError, match=match) as info:
        mlp[0].predict(x)
    assert "\n" not in str(info.value)


def test_classes_must_match_the_network(mlp):
    model, _, variables, arch, cfg, _ = mlp
    with pytest.raises(ModelError, match="10 classes, got 3"):
        SavedModel(FAMILIES["mlp"], cfg, arch, variables, ("a", "b", "c"))


def test_save_writes_the_model_folder(mlp, tmp_path):
    model = mlp[0]
    folder = model.save(tmp_path / "results")
    assert folder == tmp_path / "results" / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "variables.msgpack"]
    spec = json.loads((folder / "model.json").read_text())
    assert spec["family"] == "mlp" and spec["classes"] == list(range(10)) and spec["in_features"] == 64
    assert spec["input_shape"] == [8, 8, 1] and spec["jaxswarm_version"] == jaxswarm.__version__
    assert spec["arch"]["units"] == [32, 16] and spec["metrics"] == model.metrics
    assert spec["model_config"]["activations"] == list(model.model_config.activations)
    for p in folder.iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_save_replaces_an_existing_model_and_leaves_no_temporary_folder(mlp, tmp_path):
    model = mlp[0]
    model.save(tmp_path)
    other = SavedModel(model.family, model.model_config, model.arch, model.variables, model.classes_,
                       metrics={"test_accuracy": 0.5})
    other.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no .model.* left behind
    assert load_model(tmp_path).metrics == {"test_accuracy": 0.5}


def test_load_in_a_fresh_process_predicts_bitwise_the_same(mlp, digits, tmp_path):
    model = mlp[0]
    model.save(tmp_path / "run")
    np.save(tmp_path / "x.npy", digits.x_test)
    script = textwrap.dedent(f"""
        import numpy as np, jaxswarm
        model = jaxswarm.load_model({str(tmp_path / "run")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "proba.npy")!r}, model.predict_proba(x))
        np.save({str(tmp_path / "pred.npy")!r}, model.predict(x))
        print(model.describe())
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "jaxswarm model: mlp" in out.stdout
    proba = np.load(tmp_path / "proba.npy")
    assert proba.tobytes() == model.predict_proba(digits.x_test).tobytes()
    np.testing.assert_array_equal(np.load(tmp_path / "pred.npy"), model.predict(digits.x_test))


def test_load_accepts_the_model_folder_itself(mlp, digits, tmp_path):
    model = mlp[0]
    folder = model.save(tmp_path)
    loaded = jaxswarm.load_model(folder)
    assert loaded.model_config == model.model_config  # tuples again, not JSON lists
    assert loaded.arch == model.arch and loaded.input_shape == (8, 8, 1)
    np.testing.assert_array_equal(loaded.predict(digits.x_test), model.predict(digits.x_test))


def _corrupt(tmp_path, mlp, how):
    root = tmp_path / "run"
    folder = mlp[0].save(root)
    spec = folder / "model.json"
    blob = folder / "variables.msgpack"
    if how == "no folder":
        return tmp_path / "nowhere"
    if how == "no model":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    if how == "a file":
        return spec
    if how == "no model.json":
        spec.unlink()
    elif how == "no variables":
        blob.unlink()
    elif how == "bad json":
        spec.write_text(spec.read_text()[:-20])
    elif how == "not a dict":
        spec.write_text("[1, 2]")
    elif how == "missing field":
        d = json.loads(spec.read_text())
        del d["arch"]
        spec.write_text(json.dumps(d))
    elif how == "unknown family":
        d = json.loads(spec.read_text())
        d["family"] = "transformer"
        spec.write_text(json.dumps(d))
    elif how == "bad config":
        d = json.loads(spec.read_text())
        d["model_config"]["depth"] = 3
        spec.write_text(json.dumps(d))
    elif how == "truncated variables":
        blob.write_bytes(blob.read_bytes()[:-100])
    elif how == "garbage variables":
        blob.write_bytes(b"\xc1 not msgpack at all")
    elif how == "wrong weights":
        d = json.loads(spec.read_text())
        d["arch"]["units"] = [16, 16]  # the saved kernels are 32 and 16 wide
        spec.write_text(json.dumps(d))
    elif how in ("other format", "other sizes"):
        d = json.loads(spec.read_text())
        d.update({"format": 99} if how == "other format" else {"in_features": 32})
        spec.write_text(json.dumps(d))
    return root


@pytest.mark.parametrize("how, match", [
    ("no folder", "does not exist"),
    ("no model", "holds neither model/"),
    ("a file", "is a file"),
    ("no model.json", "has no model.json"),
    ("no variables", "has no variables.msgpack"),
    ("bad json", "is not valid JSON"),
    ("not a dict", "not a model description"),
    ("missing field", "lacks arch"),
    ("unknown family", "model family 'transformer'.*known families: mlp, cnn"),
    ("bad config", "model_config does not fit the mlp family"),
    ("truncated variables", "truncated or corrupt"),
    ("garbage variables", "truncated or corrupt"),
    ("wrong weights", "does not hold the weights of the architecture"),
    ("other format", "is model format 99; this jaxswarm .* reads format 1"),
    ("other sizes", "in_features is 32 but the network holds 64"),
])
def test_missing_or_corrupt_files_are_one_model_error_line(mlp, tmp_path, how, match):
    path = _corrupt(tmp_path, mlp, how)
    with pytest.raises(ModelError, match=match) as info:
        load_model(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_pickles_without_its_compiled_function(mlp, digits):
    model = mlp[0]
    model.predict(digits.x_test[:2])  # build the jitted function first
    blob = pickle.dumps(model)
    again = pickle.loads(blob)
    assert again._forward is None and again.family is FAMILIES["mlp"]
    assert again.predict_proba(digits.x_test).tobytes() == model.predict_proba(digits.x_test).tobytes()


def test_describe_is_a_short_summary(mlp):
    text = mlp[0].describe()
    lines = text.splitlines()
    assert lines[0] == "jaxswarm model: mlp, 64 inputs (8x8x1) -> 10 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)"
    assert "units=(32, 16)" in lines[1] and "batch_norm=True" in lines[1]
    assert any(line.startswith("metrics: test_accuracy=") for line in lines) and len(lines) <= 6


def test_string_labels_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6)) * 3
    y_index = np.arange(300) % 3
    x = centres[y_index] + rng.normal(size=(300, 6))
    names = np.array(["cat", "ant", "bee"])  # not sorted: classes come out sorted
    y = names[y_index]
    ds = data.from_arrays(x, y, seed=0)
    assert ds.classes == ("ant", "bee", "cat")
    space = mlp_space(max_layers=1, units=(8, 16))
    dense, _, variables, arch, d = _trained(space, {"units_1": 16, "activation": "tanh", "learning_rate": 0.05},
                                            ds, epochs=5)
    model = SavedModel(family_of(space), dense.model_config, arch, variables, ds.classes)
    pred = model.predict(ds.x_test)
    assert pred.dtype.kind == "U" and set(pred.tolist()) <= {"ant", "bee", "cat"}
    # Back to the caller's labels: the test rows' own string labels.
    y_test = np.asarray(ds.classes)[ds.y_test]
    assert model.score(ds.x_test, y_test) > 0.9
    loaded = load_model(model.save(tmp_path))
    np.testing.assert_array_equal(loaded.predict(ds.flat(ds.x_test)), pred)
    assert loaded.classes_.tolist() == ["ant", "bee", "cat"]


def test_a_cnn_saves_and_loads(digits, tmp_path):
    space = cnn_space(max_blocks=1, filters=(4, 8), kernels=(3,), dense_units=(8, 16))
    values = {"n_blocks": 1, "filters_1": 8, "kernel_1": 3, "dense_units": 16, "activation": "relu",
              "learning_rate": 0.01}
    values = {k: v for k, v in values.items() if k in space.names}
    dense, metrics, variables, arch, d = _trained(space, values, digits, epochs=1)
    model = SavedModel(FAMILIES["cnn"], dense.model_config, arch, variables, digits.classes)
    assert model.input_shape == (8, 8, 1)
    n = len(digits.y_test)
    assert round(model.score(digits.x_test, digits.y_test) * n) == round(float(metrics.val_accuracy) * n)
    loaded = load_model(model.save(tmp_path))
    assert loaded.model_config == model.model_config and loaded.family is FAMILIES["cnn"]
    assert loaded.predict_proba(digits.x_test).tobytes() == model.predict_proba(digits.x_test).tobytes()
    np.testing.assert_array_equal(loaded.predict(digits.x_test[..., 0]), model.predict(digits.x_test))  # [N, H, W]


def test_the_package_exports_it():
    assert jaxswarm.load_model is saved.load_model and jaxswarm.ModelError is ModelError
    assert {"load_model", "SavedModel", "ModelError"} <= set(jaxswarm.__all__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
