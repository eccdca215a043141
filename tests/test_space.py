"""Tests for jaxswarm.space: encoding rules, fairness, traceability, conditionals, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from jaxswarm.space import Choice, Fixed, Float, Int, SearchSpace
from jaxswarm.models import cnn_space, mlp_space

F32_BELOW_ONE = float(np.nextafter(np.float32(1), np.float32(0)))
F32_TINY = float(np.finfo(np.float32).tiny)
EDGE_US = [0.0, F32_TINY, 1e-7, 0.5, 1 - 1e-7, F32_BELOW_ONE, 1.0, -0.25, 1.25]

HYP = settings(max_examples=40, deadline=None)


@pytest.fixture
def key():
    return jax.random.key(0)


def one(param):
    """A one-parameter space."""
    return SearchSpace({"x": param})


def decode_many(space, u_N):
    """Decodes a batch of 1-D positions for a one-dim space (jit + vmap)."""
    return np.asarray(jax.jit(jax.vmap(space.decode))(jnp.asarray(u_N, jnp.float32)[:, None])["x"])


def midpoint_grid(m):
    """m float32 positions at the centres of m equal cells of [0, 1]."""
    return ((np.arange(m, dtype=np.float64) + 0.5) / m).astype(np.float32)


  # --- round trips ----------------------------------------------------------


@HYP
@given(lo=st.floats(-1e3, 1e3), width=st.floats(1e-3, 1e3), t=st.floats(0, 1))
def test_float_linear_round_trip(lo, width, t):
    hi = lo + width
    assume(all(b == 0 or abs(b) >= np.finfo(np.float32).tiny for b in (lo, hi)))  # subnormals are refused
    space = one(Float(lo, hi))
    v = min(lo + t * width, hi)
    x = float(space.decode(space.encode({"x": v}))["x"])
    assert abs(x - v) <= 1e-5 * max(abs(lo), abs(hi))
    assert np.float32(lo) <= x <= np.float32(hi)


@HYP
@given(lo=st.floats(1e-6, 1e2), log_ratio=st.floats(0.01, math.log(1e6)), t=st.floats(0, 1))
def test_float_log_round_trip(lo, log_ratio, t):
    hi = lo * math.exp(log_ratio)
    space = one(Float(lo, hi, log=True))
    v = min(lo * math.exp(t * log_ratio), hi)
    x = float(space.decode(space.encode({"x": v}))["x"])
    assert abs(x - v) <= 1e-5 * v
    assert space.to_python(space.encode({"x": v}))["x"] == pytest.approx(v, rel=1e-5)


@HYP
@given(lo=st.integers(-10_000, 10_000), n=st.integers(1, 100_000), t=st.floats(0, 1))
def test_int_linear_round_trip_exact(lo, n, t):
    hi = lo + n - 1
    space = one(Int(lo, hi))
    v = min(lo + int(t * n), hi)
    x = space.decode(space.encode({"x": v}))["x"]
    assert x.dtype == jnp.int32 and int(x) == v


@HYP
@given(lo=st.integers(1, 1000), log_ratio=st.floats(0, math.log(60)), t=st.floats(0, 1))
def test_int_log_round_trip_exact(lo, log_ratio, t):
    hi = int(lo * math.exp(log_ratio))
    space = one(Int(lo, hi, log=True))
    v = min(lo + int(t * (hi - lo + 1)), hi)
    assert int(space.decode(space.encode({"x": v}))["x"]) == v
    assert space.to_python(space.encode({"x": v})) == {"x": v}


@pytest.mark.parametrize("param", [
    Int(-5, 5), Int(0, 2**20 - 1), Int(16, 256, log=True), Int(1, 1, log=True),
    Int(1, 60_000, log=True), Int(1000, 80_000, log=True)])
def test_every_integer_round_trips(param):
    """Exhaustive: each integer's bin centre decodes to that integer (incl. widest allowed ranges)."""
    space = one(param)
    ks = np.arange(param.lo, param.hi + 1)
    u = np.array([param.encode(int(k)) for k in ks]) if ks.size < 100_000 else \
        (ks - param.lo + 0.5) / param.n  # same formula, vectorized for the 2**20 case
    np.testing.assert_array_equal(decode_many(space, u), ks)


@given(options=st.lists(st.one_of(st.text(max_size=3), st.integers(-5, 5), st.booleans()),
                        min_size=1, max_size=12, unique_by=lambda o: (type(o) is bool, o)))
@HYP
def test_choice_round_trip_exact(options):
    space = one(Choice(options))
    for i, o in enumerate(options):
        u = space.encode({"x": o})
        assert int(space.decode(u)["x"]) == i
        out = space.to_python(u)["x"]
        assert out == o and type(out) is type(o)


def test_choice_bool_and_int_options_are_distinct():
    c = Choice([0, 1, False, True])
    assert c.index(True) == 3 and c.index(1) == 1 and c.index(False) == 2 and c.index(np.True_) == 3


def test_to_python_reencodes_and_stays_in_bounds():
    """float32(1e-4) < 1e-4: reported values are still inside [lo, hi] and encode again."""
    space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "m": Float(0.1, 0.7)})
    for u in ([0.0, 0.0], [1.0, 1.0], [0.3, 0.9]):
        py = space.to_python(np.array(u, np.float32))
        assert 1e-4 <= py["lr"] <= 1e-1 and 0.1 <= py["m"] <= 0.7
        assert space.to_python(space.encode(py)) == pytest.approx(py, rel=1e-6)
    assert space.to_python(np.zeros(2))["lr"] == 1e-4


  # --- range, reachability, edges ------------------------------------------


@pytest.mark.parametrize("param", [
    Int(0, 1), Int(-3, 7), Int(1, 3), Int(0, 2**20 - 1), Int(16, 256, log=True),
    Int(1, 2, log=True), Int(1, 80_000, log=True), Choice(list("abcde"))])
def test_ints_and_choices_in_range_at_edges(param):
    space = one(param)
    lo, hi = (param.lo, param.hi) if isinstance(param, Int) else (0, param.k - 1)
    near_one = np.nextafter(np.float32(1), np.float32(0)) - np.arange(200, dtype=np.float32) * np.float32(2**-24)
    near_zero = np.arange(200, dtype=np.float32) * np.float32(2**-30)
    u = np.concatenate([EDGE_US, near_one, near_zero, [np.nan]]).astype(np.float32)
    x = decode_many(space, u)
    assert x.min() >= lo and x.max() <= hi
    assert x[0] == lo and x[EDGE_US.index(-0.25)] == lo and (x[len(EDGE_US) + 200:-1] == lo).all()
    assert x[EDGE_US.index(1.0)] == hi and x[EDGE_US.index(1.25)] == hi
    assert x[EDGE_US.index(F32_BELOW_ONE)] == hi


@pytest.mark.parametrize("param", [Float(-2.0, 3.0), Float(1e-4, 1e-1, log=True), Float(0.3, 0.30001)])
def test_floats_in_range_at_edges(param):
    x = decode_many(one(param), np.array(EDGE_US, np.float32))
    assert x.dtype == np.float32
    assert (x >= np.float32(param.lo)).all() and (x <= np.float32(param.hi)).all()
    assert x[0] == np.float32(param.lo) and x[EDGE_US.index(1.0)] == np.float32(param.hi)


@pytest.mark.parametrize("param,k", [(Int(-3, 7), 100), (Int(1, 3), 1000), (Choice(list("abcde")), 300)])
def test_linear_bins_are_exactly_fair(param, k):
    """On a fine midpoint grid each integer / option gets exactly its share."""
    n = param.n if isinstance(param, Int) else param.k
    x = decode_many(one(param), midpoint_grid(n * k))
    offset = param.lo if isinstance(param, Int) else 0
    np.testing.assert_array_equal(np.bincount(x - offset, minlength=n), np.full(n, k))


@pytest.mark.parametrize("lo,hi", [(16, 256), (1, 10), (3, 3)])
def test_log_int_share_proportional_to_log_width(lo, hi):
    m = 200_000
    x = decode_many(one(Int(lo, hi, log=True)), midpoint_grid(m))
    counts = np.bincount(x - lo, minlength=hi - lo + 1)
    ks = np.arange(lo, hi + 1)
    expected = m * np.log((ks + 0.5) / (ks - 0.5)) / math.log((hi + 0.5) / (lo - 0.5))
    assert (counts > 0).all()  # every integer reachable
    assert np.abs(counts - expected).max() <= 2  # grid resolution + float32 edge error
    assert counts.sum() == m


def test_log_int_probabilities_method_matches_counts():
    p = Int(16, 256, log=True)
    m = 100_000
    counts = np.bincount(decode_many(one(p), midpoint_grid(m)) - 16, minlength=241)
    np.testing.assert_allclose(counts / m, p.probabilities(), atol=2 / m)
    np.testing.assert_allclose(Int(2, 9).probabilities(), np.full(8, 1 / 8))


  # --- traceability ---------------------------------------------------------


def full_space():
    return mlp_space(optimizers=["adam", "sgd", "rmsprop"], momentum=(0.0, 0.99),
                     weight_decay=(1e-6, 1e-2), dropout=(0.0, 0.5), batch_norm=True)


def assert_same_decoded(a, b):
    """Ints/bools bitwise; floats to an ulp or two (XLA may fuse a + u*b into an FMA under jit)."""
    assert a.dtype == b.dtype
    if jnp.issubdtype(a.dtype, jnp.floating):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
    else:
        np.testing.assert_array_equal(a, b)


def test_decode_jit_vmap_equals_rows(key):
    space = full_space()
    u = jax.random.uniform(key, (12, space.num_dims), minval=-0.1, maxval=1.1)
    batched = jax.jit(jax.vmap(space.decode))(u)
    plain_vmap = jax.vmap(space.decode)(u)
    row_jit = jax.jit(space.decode)
    for s in range(u.shape[0]):
        row = space.decode(u[s])
        for name in space.names:
            assert batched[name].shape == (12,)
            assert_same_decoded(batched[name][s], row[name])
            assert_same_decoded(plain_vmap[name][s], row[name])
            assert_same_decoded(batched[name][s], row_jit(u[s])[name])


def test_decoded_dtypes():
    space = SearchSpace({"f": Float(0, 1), "i": Int(1, 4), "c": Choice(["a", "b"]),
                         "fi": Fixed(3), "ff": Fixed(0.25), "fb": Fixed(True), "fs": Fixed("adam")})
    d = space.decode(jnp.full((3,), 0.5))
    assert {k: v.dtype for k, v in d.items()} == {
        "f": jnp.float32, "i": jnp.int32, "c": jnp.int32, "fi": jnp.int32, "ff": jnp.float32,
        "fb": jnp.bool_}
    assert space.dim_names == ("f", "i", "c") and space.num_dims == 3 and len(space.names) == 7
    assert space.to_python(np.full(3, 0.5))["fs"] == "adam"


def test_active_under_jit_and_vmap(key):
    space = mlp_space(max_layers=4)
    u = jax.random.uniform(key, (64, space.num_dims))
    decoded, active = jax.jit(jax.vmap(lambda x: (lambda d: (d, space.active(d)))(space.decode(x))))(u)
    n = np.asarray(decoded["n_layers"])
    assert set(n.tolist()) == {1, 2, 3, 4}
    for k in range(2, 5):
        np.testing.assert_array_equal(np.asarray(active[f"units_{k}"]), n >= k)
    assert active["units_1"] is True or np.all(active["units_1"])


  # --- conditionals and to_python ------------------------------------------


def test_conditional_params_omitted_in_to_python():
    space = mlp_space(max_layers=3)
    for n_layers in (1, 2, 3):
        values = {"n_layers": n_layers, "activation": "tanh", "learning_rate": 1e-3,
                  **{f"units_{k}": 16 * k for k in range(1, n_layers + 1)}}
        u = space.encode(values)
        py = space.to_python(u)
        assert py.pop("learning_rate") == pytest.approx(values.pop("learning_rate"), rel=1e-6)
        assert py == values
        assert list(space.to_python(u)) == [n for n in space.names if n in py or n == "learning_rate"]
        for k in range(n_layers + 1, 4):  # missing inactive params sit at the centre
            assert u[space.dim_names.index(f"units_{k}")] == 0.5


def test_inactive_values_still_decode_and_may_be_given():
    space = mlp_space(max_layers=2)
    u = space.encode({"n_layers": 1, "units_1": 32, "units_2": 100, "activation": "relu",
                      "learning_rate": 0.01})
    d = space.decode(u)
    assert int(d["units_2"]) == 100 and not bool(space.active(d)["units_2"])
    assert "units_2" not in space.to_python(u)


def test_to_python_types_and_batch(key):
    space = full_space()
    u = np.asarray(jax.random.uniform(key, (10, space.num_dims)))
    batch = space.to_python_batch(u)
    assert batch == [space.to_python(row) for row in u]
    for py in batch:
        assert type(py["n_layers"]) is int and type(py["units_1"]) is int
        assert type(py["learning_rate"]) is float and type(py["batch_norm"]) is bool
        assert py["optimizer"] in ("adam", "sgd", "rmsprop")
        assert all(f"units_{k}" in py for k in range(1, py["n_layers"] + 1))
        assert not any(f"units_{k}" in py for k in range(py["n_layers"] + 1, 4))


def test_condition_on_choice_index():
    opt = Choice(["adam", "sgd"])
    sgd = lambda v: v["optimizer"] == opt.index("sgd")
    space = SearchSpace({"optimizer": opt, "momentum": Float(0, 0.99, when=sgd)})
    assert "momentum" in space.to_python(space.encode({"optimizer": "sgd", "momentum": 0.9}))
    assert "momentum" not in space.to_python(space.encode({"optimizer": "adam"}))
    with pytest.raises(ValueError, match="missing value for active parameter 'momentum'"):
        space.encode({"optimizer": "sgd"})


    # --- mlp_space ---------------------------------------------------------------


def test_mlp_space_names():
    assert mlp_space().names == ("n_layers", "units_1", "units_2", "units_3", "activation", "learning_rate")
    assert full_space().names == ("n_layers", "units_1", "units_2", "units_3", "activation",
                                  "learning_rate", "optimizer", "momentum", "weight_decay", "dropout",
                                  "batch_norm")
    s1 = mlp_space(max_layers=1)
    assert s1.names == ("n_layers", "units_1", "activation", "learning_rate")
    assert s1.dim_names == ("units_1", "activation", "learning_rate")
    assert isinstance(s1["n_layers"], Fixed) and int(s1.decode(jnp.full(3, 0.5))["n_layers"]) == 1
    s = mlp_space(units=(8, 64), activations=("relu",), learning_rate=(1e-3, 1e-2))
    assert (s["units_2"].lo, s["units_2"].hi, s["units_2"].log) == (8, 64, True)
    assert s["learning_rate"].log and s["activation"].options == ("relu",)


def test_describe_lists_params_and_conditions():
    text = repr(full_space())
    for name in full_space().names:
        assert name in text
    assert "n_layers >= 2" in text and "log" in text and "11 dims" in text
    assert repr(Int(16, 256, log=True)) == "Int(16, 256, log=True)"


  # --- bad input -------------------------------------------------------------------


def _later():
    return SearchSpace({"a": Int(1, 3, when=lambda v: v["b"] >= 2), "b": Int(1, 3)})


def _self_ref():
    return SearchSpace({"a": Int(1, 3, when=lambda v: v["a"] >= 2)})


def _string_fixed_ref():
    return SearchSpace({"opt": Fixed("sgd"), "m": Float(0, 1, when=lambda v: v["opt"] == 0)})


BAD = {
    "float lo > hi": (lambda: Float(1.0, 0.0), "lo=1.0 > hi=0.0"),
    "float lo == hi": (lambda: Float(2.0, 2.0), "Fixed"),
    "float log lo=0": (lambda: Float(0.0, 1.0, log=True), "lo > 0"),
    "float log lo<0": (lambda: Float(-1.0, 1.0, log=True), "lo=-1.0"),
    "float inf": (lambda: Float(0.0, math.inf), "finite"),
    "float str bound": (lambda: Float("0", 1.0), "'0'"),
    "float range overflows f32": (lambda: Float(-3e38, 3e38), "overflows"),
    "int lo > hi": (lambda: Int(5, 1), "lo=5 > hi=1"),
    "int log lo=0": (lambda: Int(0, 10, log=True), "lo >= 1"),
    "int non-integer lo": (lambda: Int(1.5, 3), "1.5"),
    "int non-integer hi": (lambda: Int(1, 2.5), "2.5"),
    "int bool bound": (lambda: Int(True, 3), "bool"),
    "int too fine": (lambda: Int(0, 2**21), "2\\*\\*-20"),
    "int log too fine": (lambda: Int(1, 10**6, log=True), "2\\*\\*-20"),
    "int beyond int32": (lambda: Int(0, 2**40), "int32"),
    "choice empty": (lambda: Choice([]), "at least one option"),
    "choice duplicate": (lambda: Choice(["a", "b", "a"]), "'a' appears twice"),
    "choice string": (lambda: Choice("abc"), "sequence"),
    "choice unhashable": (lambda: Choice([[1], [2]]), "hashable"),
    "when not callable": (lambda: Int(1, 3, when=True), "callable"),
    "fixed big int": (lambda: Fixed(2**40), "int32"),
    "space empty": (lambda: SearchSpace({}), "at least one"),
    "space name not str": (lambda: SearchSpace({1: Float(0, 1)}), "names must be"),
    "space value not param": (lambda: SearchSpace({"x": 3}), "'x'"),
    "space not mapping": (lambda: SearchSpace([("x", Float(0, 1))]), "mapping"),
    "when references later": (_later, "references 'b'"),
    "when references itself": (_self_ref, "references 'a'"),
    "when references non-numeric fixed": (_string_fixed_ref, "references 'opt'"),
    "when returns vector": (lambda: SearchSpace({"a": Int(1, 3), "b": Int(1, 3, when=lambda v: jnp.ones(2) > 0)}),
                            "scalar"),
    "mlp max_layers 0": (lambda: mlp_space(max_layers=0), "max_layers"),
    "mlp bad units": (lambda: mlp_space(units=16), "units"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_raises_value_error(case):
    make, match = BAD[case]
    with pytest.raises(ValueError, match=match):
        make()


BAD_ENCODE = {
    "unknown name": ({"lr": 0.01, "n": 2, "act": "relu", "bogus": 1}, "bogus"),
    "float above": ({"lr": 0.5, "n": 2, "act": "relu"}, "0.5"),
    "float below": ({"lr": 1e-5, "n": 2, "act": "relu"}, "1e-05"),
    "float nan": ({"lr": math.nan, "n": 2, "act": "relu"}, "nan"),
    "int above": ({"lr": 0.01, "n": 4, "act": "relu"}, "4"),
    "int non-integer": ({"lr": 0.01, "n": 2.5, "act": "relu"}, "2.5"),
    "unknown option": ({"lr": 0.01, "n": 2, "act": "gelu"}, "'gelu'"),
    "fixed mismatch": ({"lr": 0.01, "n": 2, "act": "relu", "k": 4}, "Fixed\\(3\\)"),
    "missing active": ({"lr": 0.01, "act": "relu"}, "'n'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENCODE))
def test_bad_encode_raises_value_error(case):
    space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "n": Int(1, 3),
                         "act": Choice(["relu", "tanh"]), "k": Fixed(3)})
    values, match = BAD_ENCODE[case]
    with pytest.raises(ValueError, match=match):
        space.encode(values)


def test_decode_wrong_shape_raises():
    space = mlp_space()
    with pytest.raises(ValueError, match="vmap"):
        space.decode(jnp.zeros((2, space.num_dims)))
    with pytest.raises(ValueError, match="shape"):
        space.to_python(np.zeros(space.num_dims + 1))


def test_float_refuses_subnormal_bounds():
    """A float32 subnormal bound would decode as 0 (XLA flushes them), outside [lo, hi]."""
    with pytest.raises(ValueError, match="subnormal"):
        Float(1e-45, 1.0)
    assert Float(0.0, 1.0).lo == 0.0


# --- preset ranges: the setting's name in the message ---------------------------------


BAD_PRESET = {
    "mlp dropout 1": (dict(dropout=(0.0, 1.0)), r"dropout must lie in \[0, 1\), got \(0, 1\)"),
    "mlp dropout negative": (dict(dropout=(-0.1, 0.5)), r"dropout must lie in \[0, 1\)"),
    "mlp momentum 1": (dict(momentum=(0.5, 1.0)), r"momentum must lie in \[0, 1\), got \(0.5, 1\)"),
    "mlp momentum negative": (dict(momentum=(-0.5, 0.5)), r"momentum must lie in \[0, 1\)"),
    "mlp weight_decay negative": (dict(weight_decay=(-1e-3, 1e-2)), "weight_decay must be >= 0"),
    "mlp weight_decay 0": (dict(weight_decay=(0.0, 1e-2)), "weight_decay is tuned on a log scale"),
    "mlp lr_decay above 1": (dict(lr_decay=(0.1, 2.0)), r"lr_decay must lie in \(0, 1\], got \(0.1, 2\)"),
    "mlp lr_decay 0": (dict(lr_decay=(0.0, 1.0)), r"lr_decay must lie in \(0, 1\]"),
    "mlp units log 0": (dict(units=(0, 8)), "units: Int with log=True needs lo >= 1"),
    "mlp units float": (dict(units=(4.5, 8)), "units: Int lo must be an integer, got 4.5"),
    "mlp learning_rate 0": (dict(learning_rate=(0.0, 0.1)), "learning_rate: Float with log=True needs lo > 0"),
    "mlp momentum str": (dict(momentum=("a", 0.9)), "momentum: Float bounds must be real numbers"),
    "mlp activations str": (dict(activations="relu"), "activations must be a list of names"),
    "mlp activations unknown": (dict(activations=("relu", "mish")), r"activations \['mish'\]"),
    "mlp activations empty": (dict(activations=()), "activations: Choice needs at least one option"),
    "mlp optimizers str": (dict(optimizers="adam"), "optimizers must be a list of names"),
    "mlp optimizers unknown": (dict(optimizers=("adam", "adamx")), r"optimizers \['adamx'\]"),
    "mlp optimizers twice": (dict(optimizers=("adam", "adam")), "optimizers: Choice options must be distinct"),
    "mlp batch_norm str": (dict(batch_norm="no"), "batch_norm must be True or False, got 'no'"),
}


@pytest.mark.parametrize("case", sorted(BAD_PRESET))
def test_bad_mlp_preset_argument_names_it(case):
    kwargs, match = BAD_PRESET[case]
    with pytest.raises(ValueError, match=match):
        mlp_space(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(dropout=(0.0, 1.0)), r"dropout must lie in \[0, 1\)"),
    (dict(lr_decay=(0.5, 1.5)), r"lr_decay must lie in \(0, 1\]"),
    (dict(momentum=(0.0, 1.0)), r"momentum must lie in \[0, 1\)"),
    (dict(weight_decay=(-1.0, 1.0)), "weight_decay must be >= 0"),
    (dict(kernels=(3.5,)), "kernels must be a list of odd integers"),
    (dict(kernels="3"), "kernels must be a list of odd integers"),
    (dict(activations="relu"), "activations must be a list of names"),
    (dict(poolings="max"), "poolings must be a list of names"),
    (dict(poolings=("max", "min")), "poolings must be a list of names"),
    (dict(filters=(0, 8)), "filters: Int with log=True needs lo >= 1"),
    (dict(dense_units=(4.5, 8)), "dense_units: Int lo must be an integer"),
    (dict(batch_norm=1), "batch_norm must be True or False, got 1"),
])
def test_bad_cnn_preset_argument_names_it(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cnn_space(**kwargs)


def test_preset_ranges_accept_their_edges():
    space = mlp_space(dropout=(0.0, 0.999), momentum=(0.0, 0.99), weight_decay=(1e-6, 1e-2), lr_decay=(1e-3, 1.0),
                      batch_norm=np.bool_(True), optimizers=["sgd", "adam"])
    assert (space["dropout"].lo, space["lr_decay"].hi, space["momentum"].lo) == (0.0, 1.0, 0.0)
    assert space["weight_decay"].log and space["lr_decay"].log and "batch_norm" in space
