"""Tests for jaxswarm.models: a masked max-size member IS its dense network."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxswarm import space as sp
from jaxswarm.models.layers import BN_EPS, BN_MOMENTUM
from jaxswarm.models.mlp import (
    ACTIVATION_NAMES,
    MLPConfig,
    apply_dense,
    apply_mlp,
    arch_to_python,
    computed_flops,
    config,
    decode,
    dense_params,
    init_dense,
    init_mlp,
    make_arch,
    mlp_space,
    stack_archs,
    useful_flops,
)

CFG = MLPConfig(in_features=5, num_classes=3, max_layers=3, max_units=8)
B = 16

ARCHS = [
    dict(n_layers=1, units=[3], activation="relu"),
    dict(n_layers=3, units=[8, 1, 8], activation="tanh"),
    dict(n_layers=2, units=[1, 5], activation="sigmoid"),
    dict(n_layers=3, units=[4, 6, 2], activation="elu", batch_norm=True),
    dict(n_layers=2, units=[8, 8], activation="gelu", batch_norm=True, dropout=0.3),
    dict(n_layers=3, units=[5, 3, 7], activation="swish", dropout=0.5),
    dict(n_layers=2, units=[2, 8], activation="leaky_relu", batch_norm=True),
    dict(n_layers=3, units=[6, 4, 5], activation=("tanh", "relu", "swish"), batch_norm=True),  # per layer
]
ARCH_IDS = [f"{'+'.join(np.atleast_1d(a['activation']))}-{a['units']}-bn{a.get('batch_norm', False)}" for a in ARCHS]


@pytest.fixture
def key():
    return jax.random.key(0)


def _pad(dense_tree, max_tree, fill_seed=None):
    """Zero-pads (or noise-pads, with fill_seed) a dense tree to the max-size tree (host side)."""
    rng = np.random.default_rng(fill_seed)
    if fill_seed is None:
        out = jax.tree.map(lambda m: np.zeros(m.shape, np.float32), max_tree)
    else:
        out = jax.tree.map(lambda m: rng.normal(size=m.shape).astype(np.float32), max_tree)
    for coll, sub in dense_tree.items():
        for name, layer in sub.items():
            for leaf_name, d in layer.items():
                out[coll][name][leaf_name][tuple(slice(0, s) for s in d.shape)] = d
    return out


def _random_dense(seed, arch):
    """Dense variables with non-trivial biases, BN params and running stats."""
    v = init_dense(jax.random.key(seed), arch, CFG.in_features, CFG.num_classes)
    rng = np.random.default_rng(seed)
    # Perturb everything (kernels too) but keep running variances positive.
    v = jax.tree.map(lambda l: np.asarray(l) + 0.3 * rng.normal(size=l.shape).astype(np.float32), v)
    v["batch_stats"] = jax.tree.map(np.abs, v["batch_stats"])
    return v


def _xent(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))


def _data(key):
    kx, ky = jax.random.split(jax.random.fold_in(key, 123))
    return jax.random.normal(kx, (B, CFG.in_features)), jax.random.randint(ky, (B,), 0, CFG.num_classes)


_init = jax.jit(init_mlp, static_argnums=2)
_apply = jax.jit(apply_mlp, static_argnums=3, static_argnames="train")


def _masked_and_dense(seed, arch_py, garbage):
    """(max-size variables, dense variables) of the same network.

    With ``garbage`` the entries outside the real network hold random noise
    instead of zeros: they must have no effect.
    """
    arch = make_arch(arch_py, CFG)
    template = _init(jax.random.key(seed), arch, CFG)
    dense = _random_dense(seed, arch_py)
    full = _pad(dense, template, seed + 1 if garbage else None)
    full["batch_stats"] = jax.tree.map(np.abs, full["batch_stats"])
    return arch, full, dense


@functools.partial(jax.jit, static_argnames="train")
def _masked_loss_grad(params, stats, x, y, arch, key, train):
    def loss(params):
        logits, new_stats = apply_mlp(
            {"params": params, "batch_stats": stats}, x, arch, CFG, train=train, key=key
        )
        return _xent(logits, y), (logits, new_stats)

    return jax.value_and_grad(loss, has_aux=True)(params)


@pytest.mark.parametrize("arch_py", ARCHS, ids=ARCH_IDS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_masked_member_equals_dense_network(key, arch_py, train):
    """Outputs, gradients and new batch stats match; masked-out grads are exactly 0."""
    arch, full, dense = _masked_and_dense(0, arch_py, garbage=True)
    x, y = _data(key)
    k_drop = jax.random.key(7)

    @jax.jit
    def dense_loss_grad(params):
        def loss(params):
            logits, stats = apply_dense(
                {"params": params, "batch_stats": dense["batch_stats"]}, x, arch_py,
                train=train, key=k_drop, return_batch_stats=True,
            )
            return _xent(logits, y), (logits, stats)

        return jax.value_and_grad(loss, has_aux=True)(params)

    (l_m, (logits_m, stats_m)), g_m = _masked_loss_grad(
        full["params"], full["batch_stats"], x, y, arch, k_drop, train
    )
    (l_d, (logits_d, stats_d)), g_d = dense_loss_grad(dense["params"])

    np.testing.assert_allclose(logits_m, logits_d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l_m, l_d, rtol=1e-5)
    g_m_sliced = dense_params({"params": g_m, "batch_stats": stats_m}, arch_py, CFG)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        g_m_sliced["params"], g_d,
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        g_m_sliced["batch_stats"], stats_d,
    )
    # Everything outside the real network gets an exactly zero gradient.
    inside = _pad(jax.tree.map(jnp.ones_like, {"params": g_d}), {"params": g_m})["params"]
    outside_nonzero = jax.tree.map(lambda g, m: int(jnp.sum((g != 0) & (m == 0))), g_m, inside)
    assert sum(jax.tree.leaves(outside_nonzero)) == 0, outside_nonzero


@pytest.mark.parametrize("arch_py", ARCHS[:4], ids=ARCH_IDS[:4])
def test_init_is_zero_padded_real_network(key, arch_py):
    arch = make_arch(arch_py, CFG)
    v = _init(key, arch, CFG)
    repadded = _pad(dense_params(v, arch_py, CFG), v)
    # BN scales/stats of a BN-less member are not part of its real network;
    # the running stats are never read for them, compare params only.
    if not arch_py.get("batch_norm", False):
        for l in range(CFG.max_layers):
            np.testing.assert_array_equal(v["params"][f"bn_{l}"]["scale"], 0.0)
            repadded["params"][f"bn_{l}"] = v["params"][f"bn_{l}"]
    jax.tree.map(np.testing.assert_array_equal, v["params"], repadded["params"])


def test_inactive_layers_pass_input_through(key):
    """A 1-layer member ignores the weights of layers 1.. entirely."""
    arch_py = dict(n_layers=1, units=[6], activation="tanh")
    arch = make_arch(arch_py, CFG)
    v = _init(key, arch, CFG)
    x, _ = _data(key)
    k1, k2 = jax.random.split(jax.random.key(3))
    v2 = jax.tree.map(lambda a: a, v)
    for l, k in ((1, k1), (2, k2)):
        v2["params"][f"dense_{l}"] = jax.tree.map(
            lambda a: 100.0 * jax.random.normal(k, a.shape), v["params"][f"dense_{l}"]
        )
    logits, _ = _apply(v, x, arch, CFG, train=False)
    logits2, _ = _apply(v2, x, arch, CFG, train=False)
    np.testing.assert_array_equal(logits, logits2)
    p = v["params"]
    h = jnp.tanh(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
    np.testing.assert_allclose(logits, h @ p["out"]["kernel"] + p["out"]["bias"], rtol=1e-6, atol=1e-6)


def test_vmapped_swarm_equals_loop_of_members(key):
    archs_py = [ARCHS[0], ARCHS[1], ARCHS[3], ARCHS[5]]
    archs = stack_archs(archs_py, CFG)
    keys = jax.random.split(key, len(archs_py))
    x, _ = _data(key)
    drop_keys = jax.random.split(jax.random.key(5), len(archs_py))

    v_S = jax.jit(jax.vmap(init_mlp, in_axes=(0, 0, None)), static_argnums=2)(keys, archs, CFG)
    apply_S = jax.jit(
        jax.vmap(lambda v, a, k: apply_mlp(v, x, a, CFG, train=True, key=k))
    )
    logits_S, stats_S = apply_S(v_S, archs, drop_keys)
    for s, arch_py in enumerate(archs_py):
        arch = make_arch(arch_py, CFG)
        v = _init(keys[s], arch, CFG)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[s], b, rtol=1e-6, atol=1e-7), v_S, v)
        logits, stats = _apply(v, x, arch, CFG, train=True, key=drop_keys[s])
        np.testing.assert_allclose(logits_S[s], logits, rtol=1e-6, atol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[s], b, rtol=1e-6, atol=1e-7), stats_S, stats)


def test_init_variance_follows_active_fan_in(key):
    """Kernel variance is gain2 / ACTIVE fan-in (not the max-size fan-in)."""
    cfg = MLPConfig(in_features=32, num_classes=10, max_layers=2, max_units=64)
    cases = [  # (arch, layer, active fan-in, gain2)
        (dict(n_layers=2, units=[64, 4], activation="relu"), 0, 32, 2.0),
        (dict(n_layers=2, units=[4, 64], activation="relu"), 1, 4, 2.0),
        (dict(n_layers=2, units=[12, 64], activation="tanh"), 1, 12, 1.0),
        (dict(n_layers=1, units=[6], activation="tanh"), "out", 6, 1.0),
    ]
    per_case = 48
    archs = stack_archs([c[0] for c in cases for _ in range(per_case)], cfg)
    keys = jax.random.split(key, len(cases) * per_case)
    v_S = jax.jit(jax.vmap(init_mlp, in_axes=(0, 0, None)), static_argnums=2)(keys, archs, cfg)
    for i, (arch_py, layer, fan_in, gain2) in enumerate(cases):
        name = "out" if layer == "out" else f"dense_{layer}"
        kernel = np.asarray(v_S["params"][name]["kernel"][i * per_case:(i + 1) * per_case])
        n_out = cfg.num_classes if layer == "out" else arch_py["units"][layer]
        active = kernel[:, :fan_in, :n_out]
        assert np.all(kernel[:, fan_in:, :] == 0) and np.all(kernel[:, :, n_out:] == 0)
        np.testing.assert_allclose(active.var(), gain2 / fan_in, rtol=0.06, err_msg=str(arch_py))
        assert abs(active.mean()) < 0.05 * np.sqrt(gain2 / fan_in)


def test_init_dense_same_distribution(key):
    arch_py = dict(n_layers=2, units=[40, 20], activation="relu")
    v = jax.jit(jax.vmap(lambda k: init_dense(k, arch_py, 30, 10)))(jax.random.split(key, 64))
    np.testing.assert_allclose(v["params"]["dense_0"]["kernel"].var(), 2 / 30, rtol=0.06)
    np.testing.assert_allclose(v["params"]["dense_1"]["kernel"].var(), 2 / 40, rtol=0.06)
    np.testing.assert_allclose(v["params"]["out"]["kernel"].var(), 1 / 20, rtol=0.06)


def test_dropout_off_at_rate_zero_and_at_eval(key):
    x, _ = _data(key)
    arch_py = dict(n_layers=2, units=[7, 5], activation="elu")
    a0 = make_arch(arch_py, CFG)
    a5 = make_arch({**arch_py, "dropout": 0.5}, CFG)
    v = _init(key, a0, CFG)
    eval0, _ = _apply(v, x, a0, CFG, train=False)
    train0, _ = _apply(v, x, a0, CFG, train=True, key=jax.random.key(1))
    eval5, _ = _apply(v, x, a5, CFG, train=False)
    train5, _ = _apply(v, x, a5, CFG, train=True, key=jax.random.key(1))
    np.testing.assert_array_equal(train0, eval0)
    np.testing.assert_array_equal(eval5, eval0)
    assert not np.allclose(train5, eval0)


@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_dropout_rate_and_scaling(rate):
    """Through a layer with constant output 1 and an identity read-out."""
    U = 64
    cfg = MLPConfig(in_features=4, num_classes=U, max_layers=1, max_units=U)
    arch = make_arch(dict(n_layers=1, units=[U], dropout=rate), cfg)
    v = _init(jax.random.key(0), arch, cfg)
    v["params"]["dense_0"]["kernel"] = jnp.full((4, U), 0.25)
    v["params"]["out"]["kernel"] = jnp.eye(U)
    h, _ = _apply(v, jnp.ones((256, 4)), arch, cfg, train=True, key=jax.random.key(2))
    h = np.asarray(h)
    assert np.all(np.isclose(h, 0.0) | np.isclose(h, 1.0 / (1.0 - rate)))
    assert abs(np.mean(h == 0) - rate) < 0.02
    assert abs(h.mean() - 1.0) < 0.04


def test_jit_compiles_once_for_any_arch(key):
    traces = []

    @jax.jit
    def fwd(v, arch, x, k):
        traces.append(1)
        return apply_mlp(v, x, arch, CFG, train=True, key=k)[0]

    x, _ = _data(key)
    for arch_py in ARCHS:
        arch = make_arch(arch_py, CFG)
        fwd(_init(key, arch, CFG), arch, x, jax.random.key(1)).block_until_ready()
    assert len(traces) == 1


def test_apply_dense_matches_flax_linen(key):
    """The dense reference itself agrees with flax.linen Dense + BatchNorm."""
    arch_py = dict(n_layers=2, units=[6, 4], activation="swish", batch_norm=True)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            for l, u in enumerate(arch_py["units"]):
                x = nn.Dense(u, name=f"dense_{l}")(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                                 epsilon=BN_EPS, name=f"bn_{l}")(x)
                x = nn.swish(x)
            return nn.Dense(CFG.num_classes, name="out")(x)

    x, _ = _data(key)
    v = _random_dense(0, arch_py)
    flax_vars = {"params": v["params"], "batch_stats": v["batch_stats"]}
    for train in (False, True):
        ref, upd = jax.jit(
            lambda fv, x: Net().apply(fv, x, train, mutable=["batch_stats"])
        )(flax_vars, x)
        out, stats = jax.jit(
            lambda v, x: apply_dense(v, x, arch_py, train=train, return_batch_stats=True)
        )(v, x)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
        if train:
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                         stats, upd["batch_stats"])


def test_activation_subset_in_config(key):
    """cfg.activations limits the evaluated branches; indices stay global."""
    cfg = CFG._replace(activations=("swish", "tanh"))
    x, _ = _data(key)
    archs_py = [dict(n_layers=2, units=[3, 6], activation=a) for a in ("tanh", "swish")]
    archs = stack_archs(archs_py, cfg)
    assert archs.activation[:, 0].tolist() == [ACTIVATION_NAMES.index("tanh"), ACTIVATION_NAMES.index("swish")]
    v_S = jax.jit(jax.vmap(init_mlp, in_axes=(0, 0, None)), static_argnums=2)(
        jax.random.split(key, 2), archs, cfg
    )
    logits_S, _ = jax.jit(jax.vmap(lambda v, a: apply_mlp(v, x, a, cfg, train=False)))(v_S, archs)
    for s, arch_py in enumerate(archs_py):
        dense = dense_params(jax.tree.map(lambda t: t[s], v_S), arch_py, cfg)
        np.testing.assert_allclose(logits_S[s], apply_dense(dense, x, arch_py), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="relu"):
        make_arch(dict(n_layers=1, units=[3], activation="relu"), cfg)
    with pytest.raises(ValueError):
        make_arch(archs_py[0], CFG._replace(activations=("swish", "mish")))


def test_arch_roundtrip_and_validation():
    arch_py = dict(n_layers=2, units=[3, 8], activation="gelu", dropout=0.25, batch_norm=True)
    back = arch_to_python(make_arch(arch_py, CFG))
    assert back == {**arch_py, "units": (3, 8), "init": "auto"}
    bad = [
        dict(n_layers=0, units=[3]),
        dict(n_layers=4, units=[3, 3, 3, 3]),
        dict(n_layers=2, units=[3]),
        dict(n_layers=1, units=[9]),
        dict(n_layers=1, units=[0]),
        dict(n_layers=1, units=[3], activation="softmax"),
        dict(n_layers=1, units=[3], dropout=1.0),
        dict(n_layers=1, units=[3], dropuot=0.1),
    ]
    for a in bad:
        with pytest.raises(ValueError):
            make_arch(a, CFG)
    with pytest.raises(ValueError):
        init_mlp(jax.random.key(0), make_arch(ARCHS[0], CFG), CFG._replace(max_units=0))
    with pytest.raises(ValueError, match="key"):
        v = _init(jax.random.key(0), make_arch(ARCHS[0], CFG), CFG)
        apply_mlp(v, jnp.ones((2, 5)), make_arch(ARCHS[0], CFG), CFG, train=True)


def test_flops():
    F, C = CFG.in_features, CFG.num_classes
    full = dict(n_layers=3, units=[8, 8, 8])
    assert useful_flops(full, F, C) == computed_flops(CFG)
    assert useful_flops(dict(n_layers=2, units=[3, 5]), F, C) == 2 * (F * 3 + 3 * 5 + 5 * C)
    for a in ARCHS:
        assert 0 < useful_flops(a, F, C) < computed_flops(CFG)


def test_per_layer_activations_decode_round_trip_and_are_validated():
    space = mlp_space(max_layers=3, units=(2, 8), activations=("relu", "tanh", "elu"), per_layer_activation=True)
    assert "activation" not in space.params and [n for n in space.names if n.startswith("activation_")] == [
        "activation_1", "activation_2", "activation_3"]
    hparams = jax.jit(decode(space, config(space, 5, 3)))
    values = {"n_layers": 2, "units_1": 4, "units_2": 6, "units_3": 2, "activation_1": "tanh",
              "activation_2": "elu", "activation_3": "relu", "learning_rate": 1e-3}
    arch = hparams(jnp.asarray(space.encode(values)))[0]
    assert arch_to_python(arch)["activation"] == ("tanh", "elu")  # the inactive third layer's is not the arch's
    same = hparams(jnp.asarray(space.encode({**values, "activation_2": "tanh"})))[0]
    assert arch_to_python(same)["activation"] == "tanh"  # one name when every layer shares it
    assert config(space, 5, 3).activations == ("relu", "tanh", "elu")
    cfg3 = MLPConfig(5, 3, 3, 8, activations=("relu", "tanh", "elu"))
    back = arch_to_python(make_arch(dict(n_layers=3, units=[2, 3, 4], activation=["elu", "relu", "tanh"]), cfg3))
    assert back["activation"] == ("elu", "relu", "tanh")
    with pytest.raises(ValueError, match="fewer than n_layers"):
        make_arch(dict(n_layers=3, units=[2, 3, 4], activation=["elu", "relu"]), cfg3)
    both = sp.SearchSpace({**space.params, "activation": sp.Choice(["relu"])})
    with pytest.raises(ValueError, match="either one activation"):
        decode(both, config(both, 5, 3))
    gap = sp.SearchSpace({k: v for k, v in space.params.items() if k != "activation_1"})
    with pytest.raises(ValueError, match="activation_2 needs the layers before it"):
        decode(gap, config(gap, 5, 3))
