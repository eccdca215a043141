"""Independent references for the dense networks: flax.linen and plain jax.numpy.

The equivalence tests in test_mlp.py / test_cnn.py compare the masked model
with the project's own dense network, and both sides share the helpers of
``jaxswarm.models.layers`` (batch norm, dropout, activations). A bug in a
helper (say a ``stop_gradient`` on the batch statistics) would show on both
sides and pass. Here the dense networks (``apply_dense``, ``apply_dense_cnn``,
``conv2d``, pooling, ``layers.dropout``) are checked against code that shares
nothing with them: flax.linen ``Dense`` / ``BatchNorm`` / ``Conv`` /
``max_pool`` / ``avg_pool``, activations written out as formulas, and dropout
masks rebuilt from the same uniforms. Outputs, running statistics and the
gradient of a cross-entropy loss w.r.t. every parameter and the input are
compared in float64 (tight tolerances), plus one float32 run.

Speed: every comparison runs as ONE jitted function (train and eval mode,
both sides); data and parameters are made with numpy, parameter structures
read with ``jax.eval_shape``, so few XLA compiles happen.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxswarm.models import cnn as cnn_mod
from jaxswarm.models import layers, mlp
from jaxswarm.models.cnn import apply_dense_cnn, conv2d, init_dense_cnn
from jaxswarm.models.layers import BN_EPS, BN_MOMENTUM
from jaxswarm.models.mlp import MLPConfig, apply_dense, apply_mlp, dense_params, init_dense, init_mlp, make_arch

RTOL, ATOL = 1e-9, 1e-11  # float64
MODES = (False, True)  # train


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def x64():
    """float64 for the test's duration (restored afterwards)."""
    previous = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


# --------------------------------------------------------------------------
# Reference pieces, written apart from jaxswarm.models.layers
# --------------------------------------------------------------------------

REF_ACTIVATIONS = {
    "relu": lambda x: jnp.maximum(x, 0.0),
    "tanh": lambda x: (jnp.exp(x) - jnp.exp(-x)) / (jnp.exp(x) + jnp.exp(-x)),
    "sigmoid": lambda x: 1.0 / (1.0 + jnp.exp(-x)),
    "elu": lambda x: jnp.where(x > 0, x, jnp.exp(jnp.minimum(x, 0.0)) - 1.0),
    "leaky_relu": lambda x: jnp.where(x >= 0, x, 0.01 * x),
    "gelu": lambda x: 0.5 * x * (1.0 + lax.erf(x / math.sqrt(2.0))),  # exact (erf) form, as Keras
    "swish": lambda x: x / (1.0 + jnp.exp(-x)),
}


def _ref_dropout(key, h_BxU, rate):
    """Inverted dropout of the documented contract: uniforms [U, B], keep u >= rate, scale 1/(1-rate)."""
    u_UxB = jax.random.uniform(key, (h_BxU.shape[1], h_BxU.shape[0]), h_BxU.dtype)
    keep = jnp.swapaxes(u_UxB, 0, 1) >= rate
    return h_BxU * keep.astype(h_BxU.dtype) * (1.0 / (1.0 - rate))


def _ref_dropout_maps(key, h_BxHxWxF, rate):
    """Map dropout: uniforms [F, B, H, W] (channel first), keep u >= rate."""
    b, hh, ww, f = h_BxHxWxF.shape
    u = jax.random.uniform(key, (f, b, hh, ww), h_BxHxWxF.dtype)
    keep = jnp.moveaxis(u, 0, -1) >= rate
    return h_BxHxWxF * keep.astype(h_BxHxWxF.dtype) * (1.0 / (1.0 - rate))


def _xent(logits, y):
    logp = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
    return -jnp.mean(jnp.sum(logp * jax.nn.one_hot(y, logits.shape[1], dtype=logits.dtype), axis=1))


def _loss_and_grads(apply_fn, params, x, y):
    """``apply_fn(params, x) -> (logits, new_stats)``; returns (logits, new_stats, d/d params, d/d x)."""
    def loss(p, x):
        logits, new = apply_fn(p, x)
        return _xent(logits, y), (logits, new)

    (_, (logits, new)), (gp, gx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    return logits, new, gp, gx


def _flax_fn(module, stats, train, k_drop):
    """A flax module as ``(params, x) -> (logits, new batch_stats)``."""
    def fn(params, x):
        v = {"params": params, **({"batch_stats": stats} if stats else {})}
        logits, upd = module.apply(v, x, train, k_drop, mutable=["batch_stats"])
        return logits, dict(upd).get("batch_stats", {})
    return fn


def _numpy_like(tree, seed, scale=0.3, dtype=np.float64):
    """Random values in the shapes of `tree` (a ShapeDtypeStruct or array tree): normals around the
    init values (kernels, biases), 1 + noise for BN scales, positive running variances."""
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = jax.tree_util.keystr(path)
        base = 1.0 if ("'scale'" in name or "'var'" in name) else 0.0
        v = base + scale * rng.normal(size=s.shape)
        return (np.abs(v) + 0.1 if "'var'" in name else v).astype(dtype)

    return jax.tree_util.tree_map_with_path(leaf, tree)


def _data(seed, shape, classes, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=shape).astype(dtype)), jnp.asarray(rng.integers(0, classes, shape[0]))


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(np.shape(a)), tree)


def _same_structure_and_shapes(ours, theirs):
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    assert _shapes(ours) == _shapes(theirs)


def _assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL, what=""):
    assert jax.tree.structure(actual) == jax.tree.structure(expected), what
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
        assert np.shape(a) == np.shape(b), (what, jax.tree_util.keystr(path))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol,
                                   err_msg=f"{what} {jax.tree_util.keystr(path)}")


def _check_against_reference(got, ref, stats_before, dtype=jnp.float64, rtol=RTOL, atol=ATOL, grad_rtol=None,
                             modes=MODES):
    """got / ref: per mode, (logits, new_stats, grads of params, grad of x)."""
    assert len(got) == len(ref) == len(modes)
    for train, g, r in zip(modes, got, ref):
        assert g[0].dtype == dtype
        np.testing.assert_allclose(g[0], r[0], rtol=rtol, atol=atol, err_msg=f"logits train={train}")
        # Running statistics: flax's momentum update in train mode, unchanged in eval mode.
        _assert_trees_close(g[1], r[1] if train else stats_before, rtol, atol, f"batch_stats train={train}")
        _assert_trees_close(g[2], r[2], grad_rtol or rtol, atol, f"d loss / d params train={train}")
        np.testing.assert_allclose(g[3], r[3], rtol=grad_rtol or rtol, atol=atol, err_msg=f"d x train={train}")
        if train:  # the running statistics really moved (m * old + (1 - m) * batch)
            for name, s in g[1].items():
                assert np.abs(np.asarray(s["mean"]) - np.asarray(stats_before[name]["mean"])).max() > 1e-5


# --------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------


def test_activations_match_formulas_values_and_gradients(x64):
    x = jnp.linspace(-4.0, 4.0, 81) + 0.013  # avoid exactly 0 (relu kinks)
    names = layers.ACTIVATION_NAMES
    assert set(names) == set(REF_ACTIVATIONS)

    @jax.jit
    def run(x):
        out = {}
        for i, n in enumerate(names):
            ours, ref = layers.ACTIVATIONS[n], REF_ACTIVATIONS[n]
            pair = (n, names[(i + 1) % len(names)])  # activate() over a subset picks the same function
            out[n] = (ours(x), ref(x), jax.vmap(jax.grad(ours))(x), jax.vmap(jax.grad(ref))(x),
                      layers.activate(jnp.int32(i), x, pair))
        return out

    for n, (ours, ref, g_ours, g_ref, picked) in run(x).items():
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14, err_msg=n)
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-10, atol=1e-12, err_msg=n)
        np.testing.assert_allclose(picked, ref, rtol=1e-12, atol=1e-14, err_msg=n)


# --------------------------------------------------------------------------
# MLP vs flax.linen
# --------------------------------------------------------------------------

MLP_CFG = MLPConfig(in_features=5, num_classes=3, max_layers=3, max_units=8,
                    activations=("relu", "tanh", "gelu", "elu"))
MLP_B = 12
MLP_ARCHS = [
    dict(n_layers=1, units=[4], activation="relu"),
    dict(n_layers=2, units=[5, 3], activation="tanh", batch_norm=True),
    dict(n_layers=3, units=[6, 2, 8], activation="gelu", batch_norm=True, dropout=0.3),
    dict(n_layers=2, units=[3, 7], activation="elu", dropout=0.5),
    dict(n_layers=3, units=[4, 6, 3], activation=("gelu", "tanh", "relu"), batch_norm=True),  # per layer
]
MLP_IDS = [f"{'+'.join(np.atleast_1d(a['activation']))}-n{a['n_layers']}-bn{int(a.get('batch_norm', False))}-do{a.get('dropout', 0)}"
           for a in MLP_ARCHS]


class FlaxMLP(nn.Module):
    units: tuple
    activation: str | tuple  # one for every layer, or one per layer
    batch_norm: bool
    rate: float
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool, dropout_key=None):
        acts = [self.activation] * len(self.units) if isinstance(self.activation, str) else self.activation
        for l, u in enumerate(self.units):
            act = REF_ACTIVATIONS[acts[l]]
            x = nn.Dense(u, name=f"dense_{l}")(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                                 name=f"bn_{l}")(x)
            x = act(x)
            if train and self.rate > 0:
                x = _ref_dropout(jax.random.fold_in(dropout_key, l), x, self.rate)
        return nn.Dense(self.num_classes, name="out")(x)


def _flax_mlp(arch):
    return FlaxMLP(tuple(arch["units"]), arch.get("activation", "relu"), bool(arch.get("batch_norm", False)),
                   float(arch.get("dropout", 0.0)), MLP_CFG.num_classes)


def _mlp_both(module, arch, v, x, y, k_drop, modes=MODES):
    """Jitted: per mode, (flax result, apply_dense result)."""
    @jax.jit
    def run(params, stats, x):
        out = []
        for train in modes:
            dense = lambda p, x: apply_dense({"params": p, "batch_stats": stats}, x, arch, train=train,
                                             key=k_drop, return_batch_stats=True)
            out.append((_loss_and_grads(_flax_fn(module, stats, train, k_drop), params, x, y),
                        _loss_and_grads(dense, params, x, y)))
        return out

    out = run(v["params"], v["batch_stats"], x)
    return [o[0] for o in out], [o[1] for o in out]


@pytest.mark.parametrize("arch", MLP_ARCHS, ids=MLP_IDS)
def test_mlp_dense_matches_flax_train_and_eval_with_gradients(x64, key, arch):
    """apply_dense == flax.linen Dense/BatchNorm (+ reference dropout): logits, running stats, all gradients."""
    x, y = _data(1, (MLP_B, MLP_CFG.in_features), MLP_CFG.num_classes)
    # The tree structure the project's dense network has: what dense_params cuts out of a max-size
    # member and what init_dense makes; flax's Dense/BatchNorm tree has the same one.
    arch_arr = make_arch(arch, MLP_CFG)
    max_shapes = jax.eval_shape(lambda k: init_mlp(k, arch_arr, MLP_CFG), key)
    sliced = dense_params(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), max_shapes), arch, MLP_CFG)
    shapes = jax.eval_shape(lambda k: init_dense(k, arch, MLP_CFG.in_features, MLP_CFG.num_classes), key)
    module = _flax_mlp(arch)
    flax_shapes = jax.eval_shape(lambda k: module.init(k, x, False), key)
    _same_structure_and_shapes(sliced, shapes)
    _same_structure_and_shapes(shapes["params"], flax_shapes["params"])
    _same_structure_and_shapes(shapes["batch_stats"], dict(flax_shapes).get("batch_stats", {}))
    v = _numpy_like(shapes, seed=len(arch["units"]))
    ref, got = _mlp_both(module, arch, v, x, y, jax.random.fold_in(key, 99))
    _check_against_reference(got, ref, v["batch_stats"])


def test_mlp_batch_norm_gradient_flows_through_batch_statistics(x64, key):
    """The train-mode BN gradient is NOT the one with frozen (stop_gradient) batch statistics.

    So the flax comparison above would catch a stop_gradient on the statistics: a reference with
    frozen statistics disagrees with flax and with apply_dense, which agree with each other.
    """
    arch = MLP_ARCHS[1]
    x, y = _data(2, (MLP_B, MLP_CFG.in_features), MLP_CFG.num_classes)
    v = _numpy_like(jax.eval_shape(lambda k: init_dense(k, arch, MLP_CFG.in_features, MLP_CFG.num_classes),
                                   key), seed=3)

    def frozen(params, x):
        h = x
        for l in range(arch["n_layers"]):
            z = h @ params[f"dense_{l}"]["kernel"] + params[f"dense_{l}"]["bias"]
            mean, var = lax.stop_gradient(jnp.mean(z, 0)), lax.stop_gradient(jnp.var(z, 0))
            z = (z - mean) / jnp.sqrt(var + BN_EPS) * params[f"bn_{l}"]["scale"] + params[f"bn_{l}"]["bias"]
            h = REF_ACTIVATIONS[arch["activation"]](z)
        return h @ params["out"]["kernel"] + params["out"]["bias"], {}

    g_frozen = jax.jit(lambda p, x: _loss_and_grads(frozen, p, x, y)[2])(v["params"], x)
    (ref,), (got,) = _mlp_both(_flax_mlp(arch), arch, v, x, y, None, modes=(True,))
    _assert_trees_close(got[2], ref[2], what="grads")
    assert not np.allclose(g_frozen["dense_0"]["kernel"], ref[2]["dense_0"]["kernel"], rtol=1e-3, atol=1e-6)
    # With batch norm the dense bias before it has (analytically) zero gradient: BN removes the mean.
    np.testing.assert_allclose(got[2]["dense_0"]["bias"], 0.0, atol=1e-12)
    assert np.abs(g_frozen["dense_0"]["bias"]).max() > 1e-3


def test_mlp_masked_member_matches_flax_directly(x64, key):
    """apply_mlp (masked, max size, train mode) against flax, without going through apply_dense.

    (apply_dense == apply_mlp is test_mlp.py's business; this closes the loop against flax directly.)
    """
    # 2 of 3 layers (an inactive slot), narrower than the max; BN and dropout; one activation branch.
    cfg = MLP_CFG._replace(activations=("gelu",))
    arch = dict(n_layers=2, units=[6, 3], activation="gelu", batch_norm=True, dropout=0.3)
    x, y = _data(3, (MLP_B, cfg.in_features), cfg.num_classes)
    arch_arr = make_arch(arch, cfg)
    init = jax.jit(lambda k: init_mlp(k, arch_arr, cfg))(key)
    # Perturb the real network only; outside it stays zero (init_mlp's invariant).
    ids = jax.tree.map(lambda m: np.arange(m.size).reshape(m.shape), init)
    kept = dense_params(ids, arch, cfg)
    noise = _numpy_like(kept, seed=7)
    masked = jax.tree.map(lambda m: np.asarray(m, np.float64).copy(), init)
    for coll, sub in kept.items():
        for name, layer in sub.items():
            for leaf, idx in layer.items():
                masked[coll][name][leaf].reshape(-1)[np.ravel(idx)] = np.ravel(noise[coll][name][leaf])
    real = dense_params(masked, arch, cfg)
    # Arch.dropout is f32[] (apply_mlp casts it to float32): the reference uses that rounded rate.
    module = _flax_mlp({**arch, "dropout": float(np.float32(arch["dropout"]))})
    k_drop = jax.random.fold_in(key, 4)

    @jax.jit
    def run(params_max, stats_max, params, stats, x):
        out = []
        for train in (True,):
            fn = lambda p, x: apply_mlp({"params": p, "batch_stats": stats_max}, x, arch_arr, cfg,
                                        train=train, key=k_drop)
            out.append((_loss_and_grads(_flax_fn(module, stats, train, k_drop), params, x, y),
                        _loss_and_grads(fn, params_max, x, y)))
        return out

    out = run(masked["params"], masked["batch_stats"], real["params"], real["batch_stats"], x)
    got = []
    for _, (logits, new, g, gx) in out:
        cut = dense_params({"params": g, "batch_stats": new}, arch, cfg)
        got.append((logits, cut["batch_stats"], cut["params"], gx))
    _check_against_reference(got, [o[0] for o in out], real["batch_stats"], modes=(True,))


def test_mlp_float32_matches_flax(key):
    """Default precision: apply_dense in float32 agrees with flax to ~1e-5 (train-mode BN, dropout)."""
    arch = dict(n_layers=2, units=[5, 3], activation="tanh", batch_norm=True, dropout=0.2)
    x, y = _data(4, (MLP_B, MLP_CFG.in_features), MLP_CFG.num_classes, np.float32)
    v = _numpy_like(jax.eval_shape(lambda k: init_dense(k, arch, MLP_CFG.in_features, MLP_CFG.num_classes),
                                   key), seed=1, dtype=np.float32)
    ref, got = _mlp_both(_flax_mlp(arch), arch, v, x, y, jax.random.fold_in(key, 8), modes=(True,))
    _check_against_reference(got, ref, v["batch_stats"], jnp.float32, rtol=1e-5, atol=1e-6, grad_rtol=1e-4,
                             modes=(True,))


def test_mlp_init_dense_matches_variance_scaling_statistics():
    """init_dense kernels: truncated normals with the He/LeCun fan-in std of jax's variance_scaling."""
    F, U, C = 256, 192, 96

    @jax.jit
    def reference(k):  # jax's own fan-in truncated-normal initializers, for the expected statistics
        return {g2: jax.nn.initializers.variance_scaling(g2, "fan_in", "truncated_normal")(k, (F, U))
                for g2 in (1.0, 2.0)}

    ref = reference(jax.random.key(4))
    for activation, gain2 in (("relu", 2.0), ("tanh", 1.0)):
        arch = dict(n_layers=2, units=[U, U], activation=activation, batch_norm=True)
        v = jax.jit(lambda k: init_dense(k, arch, F, C))(jax.random.key(3))
        r = np.asarray(ref[gain2]) * math.sqrt(F)  # unit fan-in: compare in units of sqrt(gain2 / fan_in)
        for name, fan_in, g2 in (("dense_0", F, gain2), ("dense_1", U, gain2), ("out", U, 1.0)):
            w = np.asarray(v["params"][name]["kernel"]) * math.sqrt(fan_in / g2)
            rr = r / math.sqrt(gain2)
            assert abs(w.std() - 1) < 0.03 and abs(rr.std() - 1) < 0.03, name
            assert abs(w.mean()) < 0.03
            bound = 2 / 0.87962566103423978  # truncated at 2 std of the underlying normal
            assert bound * 0.95 < np.abs(w).max() <= bound * (1 + 1e-6), name
            assert bound * 0.95 < np.abs(rr).max() <= bound * (1 + 1e-6)
            np.testing.assert_array_equal(v["params"][name]["bias"], 0.0)
        for l in range(2):
            np.testing.assert_array_equal(v["params"][f"bn_{l}"]["scale"], 1.0)
            np.testing.assert_array_equal(v["params"][f"bn_{l}"]["bias"], 0.0)
            np.testing.assert_array_equal(v["batch_stats"][f"bn_{l}"]["var"], 1.0)
            np.testing.assert_array_equal(v["batch_stats"][f"bn_{l}"]["mean"], 0.0)


# --------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------


@jax.jit
def _dropout_fwd_grad(k, h, w, rate):
    out = layers.dropout(k, h, rate)
    g = jax.grad(lambda h: jnp.sum(w * layers.dropout(k, h, rate)))(h)
    return out, g, _ref_dropout(k, h, rate), jax.grad(lambda h: jnp.sum(w * _ref_dropout(k, h, rate)))(h)


@pytest.mark.parametrize("rate", [0.0, 0.25, 0.7])
def test_dropout_matches_plain_reference_forward_and_gradient(x64, key, rate):
    B, U = 7, 11
    rng = np.random.default_rng(0)
    h, w = jnp.asarray(rng.normal(size=(B, U)) + 0.5), jnp.asarray(rng.normal(size=(B, U)))
    k = jax.random.fold_in(key, 3)
    out, g, ref_out, ref_g = _dropout_fwd_grad(k, h, w, jnp.asarray(rate, h.dtype))
    u = np.asarray(jax.random.uniform(k, (U, B), jnp.float64)).T  # drawn here: [U, B], transposed
    keep = u >= rate
    np.testing.assert_allclose(out, np.where(keep, np.asarray(h) / (1 - rate), 0.0), rtol=1e-14, atol=0)
    np.testing.assert_allclose(g, np.where(keep, np.asarray(w) / (1 - rate), 0.0), rtol=1e-14, atol=0)
    np.testing.assert_allclose(out, ref_out, rtol=1e-14, atol=0)
    np.testing.assert_allclose(g, ref_g, rtol=1e-14, atol=0)
    if rate == 0:
        np.testing.assert_array_equal(out, h)
    else:
        assert 0 < keep.sum() < keep.size


def test_dropout_narrower_draw_is_prefix(key):
    """What masked == dense relies on: the first u units of a wide dropout are the narrow dropout."""
    h = jnp.ones((9, 16))
    wide, *narrow = jax.jit(lambda k: [layers.dropout(k, h[:, :u], jnp.float32(0.5)) for u in (16, 1, 5)])(key)
    assert 0 < np.count_nonzero(wide) < wide.size
    for u, d in zip((1, 5), narrow):
        np.testing.assert_array_equal(d, wide[:, :u])


@jax.jit
def _dropout_draws(k, rate):
    h = jnp.ones((1000, 500), jnp.float32)
    return layers.dropout(k, h, rate), layers.dropout(jax.random.fold_in(k, 1), h, rate)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropout_statistics(key, rate):
    """On a large draw the kept fraction is 1 - rate and the mean is preserved (within 5 sigma)."""
    out, other = (np.asarray(a) for a in _dropout_draws(jax.random.fold_in(key, int(rate * 10)),
                                                        jnp.float32(rate)))
    B, U = out.shape
    n, p = out.size, 1 - rate
    kept = out != 0
    assert abs(kept.mean() - p) < 5 * math.sqrt(p * rate / n)
    np.testing.assert_allclose(out[kept], 1 / p, rtol=1e-6)
    assert abs(out.mean() - 1.0) < 5 * math.sqrt(rate / p / n)
    # No structure along either axis: every row and every unit keeps about 1 - rate.
    assert np.abs(kept.mean(axis=0) - p).max() < 6 * math.sqrt(p * rate / B)
    assert np.abs(kept.mean(axis=1) - p).max() < 6 * math.sqrt(p * rate / U)
    # Another key (as the per-layer fold_in) gives an independent mask: agreement p^2 + rate^2.
    agree = ((other != 0) == kept).mean()
    assert abs(agree - (p * p + rate * rate)) < 0.01


# --------------------------------------------------------------------------
# CNN pieces vs flax.linen
# --------------------------------------------------------------------------


@pytest.mark.parametrize("impl,k,cin,f", [("xla", 3, 2, 4), ("matmul", 3, 2, 4), ("matmul", 1, 2, 3),
                                          ("xla", 5, 3, 2), ("matmul", 5, 24, 3)],
                         ids=["xla-3x3", "matmul-3x3", "matmul-1x1", "xla-5x5", "matmul-5x5-rowwise"])
def test_conv2d_matches_flax_conv(x64, impl, k, cin, f):
    """conv2d == nn.Conv(padding='SAME', strides 1), HWIO kernel; matmul-5x5-rowwise: 5*5*24 > 512 columns."""
    x, _ = _data(5, (2, 6, 5, cin), 2)
    module = nn.Conv(f, (k, k), strides=(1, 1), padding="SAME")
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x))["params"]
    assert shapes["kernel"].shape == (k, k, cin, f)  # HWIO, as conv2d's kernel_KxKxCxF
    params = jax.tree.map(jnp.asarray, _numpy_like(shapes, seed=k + cin))
    w = jnp.asarray(np.random.default_rng(6).normal(size=(2, 6, 5, f)))

    @jax.jit
    def run(p, x):
        ours = lambda p, x: conv2d(x, p["kernel"], p["bias"], impl)
        ref = lambda p, x: module.apply({"params": p}, x)
        return [(fn(p, x), jax.grad(lambda p, x: jnp.sum(w * fn(p, x)), argnums=(0, 1))(p, x))
                for fn in (ours, ref)]

    (out, g), (ref_out, ref_g) = run(params, x)
    np.testing.assert_allclose(out, ref_out, rtol=RTOL, atol=ATOL)
    _assert_trees_close(g, ref_g, what="conv grads")


def test_pooling_matches_flax(x64):
    """2x2 stride-2 'VALID' max / avg pooling (odd sizes floor) == nn.max_pool / nn.avg_pool, with gradients."""
    xs = [_data(7, (2, 6, 6, 3), 2)[0], _data(8, (2, 7, 5, 3), 2)[0]]

    @jax.jit
    def run(xs):
        out = []
        for x in xs:
            for kind, pool in (("max", nn.max_pool), ("avg", nn.avg_pool)):
                ref = lambda x: pool(x, (2, 2), strides=(2, 2), padding="VALID")
                ours = lambda x: cnn_mod._pool(x, kind)
                w = jnp.cos(jnp.arange(ref(x).size, dtype=x.dtype)).reshape(ref(x).shape)
                out.append([(fn(x), jax.grad(lambda x: jnp.sum(w * fn(x)))(x)) for fn in (ours, ref)])
        return out

    for case in run(xs):
        (out, g), (ref_out, ref_g) = case
        assert out.shape == ref_out.shape
        np.testing.assert_allclose(out, ref_out, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(g, ref_g, rtol=RTOL, atol=ATOL)
    assert case[0][0].shape == (2, 3, 2, 3)


# --------------------------------------------------------------------------
# CNN network vs flax.linen
# --------------------------------------------------------------------------

CNN_B = 4
CNN_CLASSES = 3
CNN_ARCHS = [
    (dict(n_blocks=2, filters=[3, 4], kernel=[3, 5], dense_units=5, pooling="max", activation="relu",
          batch_norm=True, dropout=0.25), (10, 10, 2)),  # 10 -> 5 -> 2: the second pool floors
    (dict(n_blocks=1, filters=[4], kernel=[5], dense_units=6, pooling="avg", activation="tanh"), (7, 7, 1)),
]


class FlaxCNN(nn.Module):
    arch: dict

    @nn.compact
    def __call__(self, x, train: bool, dropout_key=None):
        a = self.arch
        act = REF_ACTIVATIONS[a["activation"]]
        rate = a.get("dropout", 0.0)
        bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                                       name=name)
        pool = nn.max_pool if a["pooling"] == "max" else nn.avg_pool
        for b in range(a["n_blocks"]):
            k = a["kernel"][b]
            x = nn.Conv(a["filters"][b], (k, k), strides=(1, 1), padding="SAME", name=f"conv_{b}")(x)
            if a.get("batch_norm"):
                x = bn(f"bn_{b}")(x)  # per channel, statistics over batch and space
            x = pool(act(x), (2, 2), strides=(2, 2), padding="VALID")
            if train and rate > 0:
                x = _ref_dropout_maps(jax.random.fold_in(dropout_key, b), x, rate)
        x = x.reshape(x.shape[0], -1)  # (H, W, C) order
        x = nn.Dense(a["dense_units"], name="dense")(x)
        if a.get("batch_norm"):
            x = bn("bn_dense")(x)
        x = act(x)
        if train and rate > 0:
            x = _ref_dropout(jax.random.fold_in(dropout_key, 1 << 16), x, rate)
        return nn.Dense(CNN_CLASSES, name="out")(x)


@pytest.mark.parametrize("arch,shape,impl", [pytest.param(*CNN_ARCHS[0], "matmul", marks=pytest.mark.slow),  # ~11 s
                                             (*CNN_ARCHS[1], "xla")],
                         ids=["n2-relu-bn-max-drop-matmul", "n1-tanh-avg-xla"])
def test_cnn_dense_matches_flax_train_and_eval_with_gradients(x64, key, arch, shape, impl):
    x, y = _data(9, (CNN_B, *shape), CNN_CLASSES)
    shapes = jax.eval_shape(lambda k: init_dense_cnn(k, arch, shape, CNN_CLASSES), key)
    module = FlaxCNN(arch)
    flax_shapes = jax.eval_shape(lambda k: module.init(k, x, False), key)
    _same_structure_and_shapes(shapes["params"], flax_shapes["params"])
    _same_structure_and_shapes(shapes["batch_stats"], dict(flax_shapes).get("batch_stats", {}))
    v = _numpy_like(shapes, seed=2)
    k_drop = jax.random.fold_in(key, 77)

    @jax.jit
    def run(params, stats, x):
        out = []
        for train in MODES:
            dense = lambda p, x: apply_dense_cnn({"params": p, "batch_stats": stats}, x, arch, train=train,
                                                 key=k_drop, return_batch_stats=True, conv=impl)
            out.append((_loss_and_grads(_flax_fn(module, stats, train, k_drop), params, x, y),
                        _loss_and_grads(dense, params, x, y)))
        return out

    out = run(v["params"], v["batch_stats"], x)
    _check_against_reference([o[1] for o in out], [o[0] for o in out], v["batch_stats"])


_SCHEME_REFERENCE = {  # jax.nn.initializers.variance_scaling arguments of each named scheme
    "he_normal": (2.0, "fan_in", "truncated_normal"), "he_uniform": (2.0, "fan_in", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"), "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"), "lecun_uniform": (1.0, "fan_in", "uniform"),
}


@pytest.mark.parametrize("scheme", sorted(_SCHEME_REFERENCE))
def test_init_schemes_match_variance_scaling_in_the_member_and_the_dense_network(scheme):
    """Each scheme's kernels (every layer, output included) have the std, bound and kind of jax's
    variance_scaling with the real fans, in the masked member's active entries and in the dense network."""
    F, U1, U2, C = 256, 160, 96, 64
    scale, mode, distribution = _SCHEME_REFERENCE[scheme]
    arch = dict(n_layers=2, units=[U1, U2], activation="tanh", init=scheme)
    cfg = mlp.MLPConfig(F, C, 3, 192, activations=("tanh",), inits=("auto", scheme))
    masked = jax.jit(lambda k: mlp.init_mlp(k, mlp.make_arch(arch, cfg), cfg))(jax.random.key(5))["params"]
    dense = jax.jit(lambda k: init_dense(k, arch, F, C))(jax.random.key(6))["params"]
    for name, fan_in, fan_out in (("dense_0", F, U1), ("dense_1", U1, U2), ("out", U2, C)):
        ref = np.asarray(jax.nn.initializers.variance_scaling(scale, mode, distribution)(
            jax.random.key(7), (fan_in, fan_out)))
        std = math.sqrt(scale / (fan_in if mode == "fan_in" else (fan_in + fan_out) / 2))
        bound = std * (math.sqrt(3) if distribution == "uniform" else 2 / 0.87962566103423978)
        for got in (ref, np.asarray(masked[name]["kernel"])[:fan_in, :fan_out], np.asarray(dense[name]["kernel"])):
            assert got.shape == ref.shape
            _check_kernel(got, std, bound, distribution, name)
    # Entries outside the member's real network stay zero.
    assert not np.asarray(masked["dense_1"]["kernel"])[U1:].any() and not np.asarray(masked["out"]["kernel"])[U2:].any()


def _check_kernel(got, std, bound, distribution, name):
    """`got` has the std, mean, bound and tail of a `distribution` draw of that std and bound."""
    assert abs(got.std() / std - 1) < 0.04, (name, got.std(), std)
    assert abs(got.mean()) < 0.04 * std
    assert 0.97 < np.abs(got).max() / bound <= 1 + 1e-5, name  # the kind's bound: uniform or truncated
    # A uniform draw fills its interval evenly (10% beyond 0.9 of its bound), a truncated normal 2.8%.
    tail = np.mean(np.abs(got) > 0.9 * bound)
    assert (0.08 < tail < 0.12) if distribution == "uniform" else 0.015 < tail < 0.04, (name, tail)


@pytest.mark.parametrize("scheme", sorted(_SCHEME_REFERENCE))
def test_cnn_init_schemes_match_variance_scaling_in_the_member_and_the_dense_network(scheme):
    """The CNN's kernels under each scheme: variance scaling with the real fans (a conv's fan-in k*k*c_in,
    fan-out k*k*filters, as jax's initializers read a HWIO kernel), in the masked member and the dense CNN."""
    scale, mode, distribution = _SCHEME_REFERENCE[scheme]
    arch = dict(n_blocks=2, filters=[40, 40], kernel=[5, 3], dense_units=96, activation="tanh", init=scheme)
    cfg = cnn_mod.CNNConfig((16, 16, 8), 64, max_blocks=2, max_filters=48, max_kernel=5, max_dense=128,
                        activations=("tanh",), inits=("auto", scheme))
    masked = jax.jit(lambda k: cnn_mod.init_cnn(k, cnn_mod.make_cnn_arch(arch, cfg), cfg))(jax.random.key(5))["params"]
    dense = init_dense_cnn(jax.random.key(6), arch, (16, 16, 8), 64)["params"]
    rows = 4 * 4 * 40  # the head reads block 2's 4x4 map of 40 filters
    real = {"conv_0": (lambda w: w[:5, :5, :8, :40], (5, 5, 8, 40)),
            "conv_1": (lambda w: w[1:4, 1:4, :40, :40], (3, 3, 40, 40)),  # a 3x3 kernel centred in the 5x5 slot
            "dense": (lambda w: w.reshape(4, 4, 48, 128)[:, :, :40, :96].reshape(rows, 96), (rows, 96)),
            "out": (lambda w: w[:96], (96, 64))}
    for name, (cut, shape) in real.items():
        ref = np.asarray(jax.nn.initializers.variance_scaling(scale, mode, distribution)(jax.random.key(7), shape))
        fan_in, fan_out = int(np.prod(shape[:-1])), int(np.prod(shape[:-2])) * shape[-1]
        std = math.sqrt(scale / (fan_in if mode == "fan_in" else (fan_in + fan_out) / 2))
        bound = std * (math.sqrt(3) if distribution == "uniform" else 2 / 0.87962566103423978)
        w = np.asarray(masked[name]["kernel"])
        head = (lambda a: a[:4 * 4 * 48]) if name == "dense" else (lambda a: a)  # block 2's rows of the head
        for got in (ref, cut(head(w)), np.asarray(dense[name]["kernel"])):
            assert got.shape == shape, (name, got.shape)
            _check_kernel(got, std, bound, distribution, name)
        inside = np.zeros(w.size, bool)
        inside[np.ravel(cut(head(np.arange(w.size).reshape(w.shape))))] = True
        assert not np.where(inside.reshape(w.shape), 0, w).any(), name  # nothing outside the real network


def test_auto_init_is_the_same_draw_as_before_and_an_init_choice_changes_only_its_members():
    """A space without an init choice draws exactly as "auto" always did (the normals alone); with a
    uniform scheme in the space, an "auto" member still gets those same normals."""
    arch = dict(n_layers=1, units=[8], activation="relu")
    plain = mlp.MLPConfig(16, 4, 1, 8, activations=("relu",))
    mixed = plain._replace(inits=("auto", "he_uniform"))
    k = jax.random.key(2)
    a = mlp.init_mlp(k, mlp.make_arch(arch, plain), plain)
    expected = layers.unit_normal(k, (16 * 8 + 8 * 4,), jnp.float32)[:128].reshape(16, 8) * jnp.sqrt(
        jnp.float32(2.0) / jnp.float32(16))  # He fan-in for relu, one truncated-normal draw for all kernels
    np.testing.assert_array_equal(a["params"]["dense_0"]["kernel"], expected)
    b = mlp.init_mlp(k, mlp.make_arch(arch, mixed), mixed)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    c = mlp.init_mlp(k, mlp.make_arch({**arch, "init": "he_uniform"}, mixed), mixed)
    assert not np.allclose(a["params"]["dense_0"]["kernel"], c["params"]["dense_0"]["kernel"])
