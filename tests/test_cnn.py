"""Tests for jaxswarm.cnn: a masked max-size CNN member IS its dense network."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxswarm.models.cnn import (
    conv2d,
    CNNConfig,
    apply_cnn,
    apply_dense_cnn,
    cnn_arch_to_python,
    cnn_hparams,
    cnn_limits,
    cnn_space,
    computed_flops_cnn,
    dense_cnn_params,
    init_cnn,
    init_dense_cnn,
    make_cnn_arch,
    stack_cnn_archs,
    useful_flops_cnn,
)
from jaxswarm.models.layers import INIT_GAIN2, INIT_SCHEMES
from jaxswarm.space import Choice, SearchSpace

CFG = CNNConfig(input_shape=(12, 12, 2), num_classes=3, max_blocks=3, max_filters=6, max_kernel=5, max_dense=8)
# Members one at a time: conditionals instead of masks; channel buckets 2, 4, 6.
CFG_BRANCHING = CFG._replace(branching=True, filter_buckets=(2, 4))
B = 8

ARCHS = [
    dict(n_blocks=1, filters=[4], kernel=[3], dense_units=5, activation="relu"),  # 1 of 3 blocks, 3 in a 5 slot
    dict(n_blocks=3, filters=[6, 2, 5], kernel=[5, 3, 1], dense_units=8, activation="tanh", pooling="avg",
         dropout=0.5),
    # One activation per block, then the dense layer's.
    dict(n_blocks=2, filters=[3, 6], kernel=[3, 5], dense_units=3, activation=("elu", "tanh", "relu"), batch_norm=True),
    dict(n_blocks=2, filters=[6, 6], kernel=[5, 5], dense_units=8, activation="gelu", batch_norm=True,
         dropout=0.3),
]
IDS = [f"n{a['n_blocks']}-{'+'.join(np.atleast_1d(a['activation']))}" for a in ARCHS]
_init = jax.jit(init_cnn, static_argnums=2)  # arch traced: one compile per config


@pytest.fixture
def key():
    return jax.random.key(0)


def _noisy_masked(seed, arch):
    """Max-size variables with noise EVERYWHERE (outside the real network too)."""
    v = _init(jax.random.key(seed), make_cnn_arch(arch, CFG), CFG)
    rng = np.random.default_rng(seed)
    v = jax.tree.map(lambda l: np.asarray(l) + 0.3 * rng.normal(size=l.shape).astype(np.float32), v)
    v["batch_stats"] = jax.tree.map(np.abs, v["batch_stats"])
    return v


def _real_mask(tree, arch):
    """bool tree: True on the entries dense_cnn_params keeps (unique ids, sliced)."""
    sizes = [l.size for l in jax.tree.leaves(tree)]
    offsets = np.cumsum([0] + sizes)
    ids = jax.tree.unflatten(jax.tree.structure(tree), [
        np.arange(o, o + s).reshape(l.shape) for o, s, l in zip(offsets, sizes, jax.tree.leaves(tree))])
    kept = np.concatenate([np.ravel(l) for l in jax.tree.leaves(dense_cnn_params(ids, arch, CFG))] or [[]])
    return jax.tree.map(lambda i: np.isin(i, kept), ids)


def _data(key):
    kx, ky = jax.random.split(jax.random.fold_in(key, 7))
    return jax.random.normal(kx, (B, *CFG.input_shape)), jax.random.randint(ky, (B,), 0, CFG.num_classes)


def _xent(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


_TRACES = []


@functools.partial(jax.jit, static_argnums=6)
def _masked_value_and_grad(params, stats, x, y, arch, k_drop, cfg=CFG):
    """Loss, logits, new stats and gradients of a masked member, train and eval mode (arch traced)."""
    _TRACES.append(1)
    out = {}
    for train in (False, True):
        def loss(p):
            logits, new = apply_cnn({"params": p, "batch_stats": stats}, x, arch, cfg, train=train, key=k_drop)
            return _xent(logits, y), (logits, new)

        out[train] = jax.value_and_grad(loss, has_aux=True)(params)
    return out


# The branching variant compiles its four-bucket program for ~90 s on 2 cores: slow. The serial CNN
# member still meets the masked one in the default run (test_train.py, fingerprint "cnn_serial").
@pytest.mark.parametrize("cfg", [CFG, pytest.param(CFG_BRANCHING, marks=pytest.mark.slow)],
                         ids=["masked", "branching"])
@pytest.mark.parametrize("arch", ARCHS, ids=IDS)
def test_masked_equals_dense_outputs_stats_and_gradients(key, arch, cfg):
    x, y = _data(key)
    v = _noisy_masked(1, arch)
    dv = dense_cnn_params(v, arch, CFG)
    k_drop = jax.random.fold_in(key, 3)
    masked = _masked_value_and_grad(v["params"], v["batch_stats"], x, y, make_cnn_arch(arch, CFG), k_drop, cfg)
    mask = _real_mask(v, arch)["params"]
    for train in (False, True):
        (lm, (logits_m, stats_m)), g_m = masked[train]

        def dense_loss(params):
            logits, stats = apply_dense_cnn({"params": params, "batch_stats": dv["batch_stats"]}, x, arch,
                                            train=train, key=k_drop, return_batch_stats=True)
            return _xent(logits, y), (logits, stats)

        (ld, (logits_d, stats_d)), g_d = jax.jit(jax.value_and_grad(dense_loss, has_aux=True))(dv["params"])
        np.testing.assert_allclose(logits_m, logits_d, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lm, ld, rtol=1e-5)
        # Running statistics: the real channels match.
        sliced = dense_cnn_params({"params": v["params"], "batch_stats": stats_m}, arch, CFG)["batch_stats"]
        jax.tree.map(lambda s, d: np.testing.assert_allclose(s, d, rtol=1e-5, atol=1e-6), sliced, stats_d)
        # Gradients: equal on the real network, EXACTLY zero everywhere else.
        g_sliced = dense_cnn_params({"params": g_m, "batch_stats": v["batch_stats"]}, arch, CFG)["params"]
        scale = max(float(np.max(np.abs(l))) for l in jax.tree.leaves(g_d))
        jax.tree.map(lambda s, d: np.testing.assert_allclose(s, d, rtol=1e-4, atol=1e-5 * scale), g_sliced, g_d)
        outside = [np.abs(np.where(m, 0, g)).max() for m, g in zip(jax.tree.leaves(mask), jax.tree.leaves(g_m))]
        assert max(outside) == 0.0


@pytest.mark.parametrize("k, c", [(1, 3), (3, 1), (5, 2), (5, 40)])  # (5, 40): one kernel row at a time
def test_matmul_convolution_equals_xla(key, k, c):

    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (3, 7, 6, c))
    w = jax.random.normal(kw, (k, k, c, 4))
    bias = jnp.arange(4.0)

    def loss(x, w, impl):
        return jnp.sum(jnp.sin(conv2d(x, w, bias, impl) / np.sqrt(k * k * c)))  # O(1) pre-activations

    for arg in (0, 1):
        g = {impl: jax.jit(jax.grad(loss, arg), static_argnums=2)(x, w, impl) for impl in ("xla", "matmul")}
        np.testing.assert_allclose(g["matmul"], g["xla"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv2d(x, w, bias, "matmul"), conv2d(x, w, bias, "xla"), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="conv"):
        conv2d(x, w, bias, "fft")


@pytest.mark.parametrize("arch", ARCHS[:3], ids=IDS[:3])
def test_init_is_zero_outside_real_network_and_uses_active_fan_in(key, arch):
    v = _init(key, make_cnn_arch(arch, CFG), CFG)
    mask = _real_mask(v, arch)
    for m, leaf in zip(jax.tree.leaves(mask["params"]), jax.tree.leaves(v["params"])):
        assert np.all(np.where(m, 0.0, leaf) == 0.0)
    d = dense_cnn_params(v, arch, CFG)["params"]
    for name in ("conv_0", "dense", "out"):
        assert d[name]["kernel"].shape == init_dense_cnn(key, arch, CFG.input_shape, 3)["params"][name]["kernel"].shape


def test_init_std_matches_fan_in_of_active_inputs(key):
    cfg = CNNConfig((16, 16, 3), 10, max_blocks=2, max_filters=64, max_kernel=5, max_dense=64)
    arch = dict(n_blocks=2, filters=[40, 64], kernel=[5, 3], dense_units=64, activation="tanh")
    v = _init(key, make_cnn_arch(arch, cfg), cfg)
    d = dense_cnn_params(v, arch, cfg)["params"]
    for name, fan_in in [("conv_0", 25 * 3), ("conv_1", 9 * 40), ("dense", 4 * 4 * 64)]:
        std = float(np.std(d[name]["kernel"]))
        assert abs(std / np.sqrt(INIT_GAIN2["tanh"] / fan_in) - 1) < 0.05, (name, std)


@pytest.mark.slow  # ~21 s; test_masked_equals_dense covers the mixed forms member by member
def test_vmapped_init_and_apply_equal_a_loop(key):
    archs = stack_cnn_archs(ARCHS, CFG)
    keys = jax.random.split(key, len(ARCHS))
    k_drop = jax.random.fold_in(key, 9)
    x, y = _data(key)

    def init_and_apply(k, a):
        v = init_cnn(k, a, CFG)
        return v, apply_cnn(v, x, a, CFG, train=True, key=k_drop)[0]

    v_S, out_S = jax.jit(jax.vmap(init_and_apply))(keys, archs)
    for s, arch in enumerate(ARCHS):
        a = make_cnn_arch(arch, CFG)
        v = _init(keys[s], a, CFG)
        jax.tree.map(lambda l, ls: np.testing.assert_allclose(l, ls[s], rtol=1e-6, atol=1e-7), v, v_S)
        (_, (logits, _)), _ = _masked_value_and_grad(v["params"], v["batch_stats"], x, y, a, k_drop)[True]
        np.testing.assert_allclose(logits, out_S[s], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [CFG, pytest.param(CFG_BRANCHING, marks=pytest.mark.slow)],
                         ids=["masked", "branching"])  # branching: the ~90 s compile above
def test_no_recompiles_across_architectures(key, cfg):
    x, y = _data(key)
    before = len(_TRACES)
    for i, arch in enumerate(ARCHS):
        v = _noisy_masked(i, arch)
        _masked_value_and_grad(v["params"], v["batch_stats"], x, y, make_cnn_arch(arch, CFG),
                               jax.random.fold_in(key, i), cfg)
    assert len(_TRACES) - before <= 1  # 0 when an earlier test compiled it already


def test_flat_inputs_and_inactive_block_values_change_nothing(key):
    arch = ARCHS[0]
    a = make_cnn_arch(arch, CFG)
    v = _init(key, a, CFG)
    x, _ = _data(key)
    ref, _ = apply_cnn(v, x, a, CFG, train=False)
    flat, _ = apply_cnn(v, x.reshape(B, -1), a, CFG, train=False)
    np.testing.assert_array_equal(ref, flat)
    # Block-1/2 values of an n_blocks=1 member are ignored.
    other = a._replace(filters=a.filters.at[1:].set(6), kernel=a.kernel.at[1:].set(5))
    np.testing.assert_array_equal(ref, apply_cnn(v, x, other, CFG, train=False)[0])


def test_flops():
    # The max-size member computes every full slot, plus a head with slot 0's rows (6x6x6).
    full = dict(n_blocks=3, filters=[6] * 3, kernel=[5] * 3, dense_units=8)
    head_rows_unused = 6 * 6 * 6 - 1 * 1 * 6
    assert useful_flops_cnn(full, CFG.input_shape, 3) + 2 * head_rows_unused * 8 == computed_flops_cnn(CFG)
    for arch in ARCHS:
        assert 0 < useful_flops_cnn(arch, CFG.input_shape, 3) < computed_flops_cnn(CFG)
    # conv 12x12x(3x3x2)x4, head 6x6x4 -> 5, out 5 -> 3
    assert useful_flops_cnn(ARCHS[0], CFG.input_shape, 3) == 2 * (144 * 9 * 2 * 4 + 36 * 4 * 5 + 5 * 3)
    # Branching: only the member's own slots and kernel window, its filter bucket, its head rows.
    assert computed_flops_cnn(CFG_BRANCHING, ARCHS[0]) == 2 * (144 * 9 * 2 * 4 + 36 * 4 * 8 + 8 * 3)
    three = dict(n_blocks=1, filters=[3], kernel=[3], dense_units=5)  # 3 filters run at bucket 4
    assert computed_flops_cnn(CFG_BRANCHING, three) == 2 * (144 * 9 * 2 * 4 + 36 * 4 * 8 + 8 * 3)
    assert computed_flops_cnn(CFG_BRANCHING, full) == useful_flops_cnn(full, CFG.input_shape, 3)
    for arch in ARCHS:
        assert useful_flops_cnn(arch, CFG.input_shape, 3) <= computed_flops_cnn(CFG_BRANCHING, arch)
    with pytest.raises(ValueError, match="arch_python"):
        computed_flops_cnn(CFG_BRANCHING)


def test_space_names_and_decoding():
    space = cnn_space(max_blocks=2, filters=(4, 6), kernels=(3, 5), dense_units=(2, 8),
                      activations=("relu", "tanh"), optimizers=("sgd", "adam"), dropout=(0.0, 0.5),
                      batch_norm=True, poolings=("max", "avg"))
    assert space.names == ("n_blocks", "filters_1", "kernel_1", "filters_2", "kernel_2", "dense_units",
                           "activation", "learning_rate", "optimizer", "dropout", "batch_norm", "pooling")
    assert cnn_limits(space) == dict(max_blocks=2, max_filters=6, max_kernel=5, max_dense=8,
                                     activations=("relu", "tanh"), filter_buckets=(4, 6), kernels=(3, 5),
                                     inits=("auto",))
    cfg = CFG._replace(max_blocks=2)
    hparams = jax.jit(cnn_hparams(space, cfg))
    values = dict(n_blocks=2, filters_1=5, kernel_1=5, filters_2=4, kernel_2=3, dense_units=7,
                  activation="tanh", learning_rate=0.01, optimizer="sgd", dropout=0.25, batch_norm=True,
                  pooling="avg")
    arch, hp = hparams(jnp.asarray(space.encode(values)))
    assert cnn_arch_to_python(arch) == dict(n_blocks=2, filters=(5, 4), kernel=(5, 3), pooling="avg",
                                            dense_units=7, activation="tanh", dropout=0.25, batch_norm=True,
                                            init="auto")
    assert int(hp.optimizer) == 0  # index into the space's optimizer options ("sgd", "adam")
    assert np.isclose(float(hp.learning_rate), 0.01, rtol=1e-5)
    # A 1-block member: block-2 entries exist (fixed shapes) but to_python leaves them out.
    u = space.encode({k: v for k, v in values.items() if k not in ("filters_2", "kernel_2")} | {"n_blocks": 1})
    assert "filters_2" not in space.to_python(u)
    assert int(hparams(jnp.asarray(u))[0].n_blocks) == 1
    # Defaults for names a space lacks.
    arch, hp = cnn_hparams(cnn_space(max_blocks=1, filters=(2, 6), kernels=(3,), dense_units=(2, 8)),
                           CFG)(jnp.full((4,), 0.5))
    assert int(arch.pooling) == 0 and int(arch.kernel[0]) == 3 and not bool(arch.batch_norm)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CNNConfig((12, 12, 2), 3, max_kernel=4),  # even kernel
        lambda: CNNConfig((6, 6, 1), 3, max_blocks=3),  # too small for 3 pools
        lambda: CNNConfig((12, 12), 3),  # not (H, W, C)
    ],
)
def test_bad_configs_raise(make):
    with pytest.raises(ValueError):
        make_cnn_arch(ARCHS[0], make())


def test_bad_inputs_raise(key):
    a = make_cnn_arch(ARCHS[0], CFG)
    v = _init(key, a, CFG)
    with pytest.raises(ValueError, match="shape"):
        apply_cnn(v, jnp.ones((2, 10, 12, 2)), a, CFG, train=False)
    with pytest.raises(ValueError, match="key"):
        apply_cnn(v, jnp.ones((2, 12, 12, 2)), a, CFG, train=True)
    for bad in [dict(ARCHS[0], kernel=[4]), dict(ARCHS[0], n_blocks=4, filters=[1] * 4),
                dict(ARCHS[0], filters=[7]), dict(ARCHS[0], dense_units=9), dict(ARCHS[0], pooling="min"),
                dict(ARCHS[0], dropout=1.0), dict(ARCHS[0], depth=2)]:
        with pytest.raises(ValueError):
            make_cnn_arch(bad, CFG)
    with pytest.raises(ValueError, match="kernels"):
        cnn_space(kernels=(3, 4))
    with pytest.raises(ValueError, match="max_filters"):
        cnn_hparams(cnn_space(filters=(8, 64)), CFG)


@pytest.mark.slow  # ~15 s; the MLP's init-scheme tests cover the traced choice by default
def test_cnn_init_scheme_is_traced_and_each_member_starts_as_it_would_alone():
    """Every scheme in one init program (counted); each swarm member's variables are its own init's,
    and the scheme changes them (test_reference checks each scheme against variance_scaling)."""
    space = cnn_space(max_blocks=2, filters=(2, 6), dense_units=(4, 8), activations=("relu", "tanh"),
                      init_schemes=list(INIT_SCHEMES))
    cfg = CFG._replace(**{k: v for k, v in cnn_limits(space).items() if k in ("max_blocks", "inits")})
    hparams = cnn_hparams(space, cfg)
    traces = []

    def init(k, p):
        traces.append(1)
        return init_cnn(k, hparams(p)[0], cfg)

    pos = jax.random.uniform(jax.random.key(0), (48, space.num_dims))
    keys = jax.random.split(jax.random.key(1), 48)
    swarm = jax.jit(jax.vmap(init))(keys, pos)
    schemes = [space.to_python(p)["init"] for p in pos]
    archs = jax.jit(jax.vmap(lambda p: hparams(p)[0]))(pos)
    assert len(traces) == 1 and set(schemes) == set(INIT_SCHEMES)  # decode reaches every scheme
    for scheme in INIT_SCHEMES:
        i = schemes.index(scheme)
        arch = cnn_arch_to_python(jax.tree.map(lambda a: a[i], archs))
        assert arch["init"] == scheme
        alone = _init(keys[i], make_cnn_arch(arch, cfg), cfg)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b[i], rtol=1e-6, atol=0), alone, swarm)
        if scheme not in ("auto", "he_normal", "lecun_normal"):  # those two are auto's rule for some activations
            auto = _init(keys[i], make_cnn_arch({**arch, "init": "auto"}, cfg), cfg)
            assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(auto), jax.tree.leaves(alone)))


def test_per_layer_activation_space_decodes_each_block_and_the_dense_layer():
    space = cnn_space(max_blocks=2, filters=(2, 6), dense_units=(4, 8), activations=("relu", "tanh", "elu"),
                      per_layer_activation=True)
    assert [n for n in space.names if n.startswith("activation")] == ["activation_1", "activation_2",
                                                                      "activation_dense"]
    cfg = CFG._replace(max_blocks=2, activations=("relu", "tanh", "elu"))
    hparams = jax.jit(cnn_hparams(space, cfg))
    values = dict(n_blocks=2, filters_1=3, kernel_1=3, filters_2=4, kernel_2=5, dense_units=5, learning_rate=0.01,
                  activation_1="tanh", activation_2="elu", activation_dense="relu")
    arch, _ = hparams(jnp.asarray(space.encode(values)))
    assert cnn_arch_to_python(arch)["activation"] == ("tanh", "elu", "relu")
    one_block, _ = hparams(jnp.asarray(space.encode({**values, "n_blocks": 1})))
    assert cnn_arch_to_python(one_block)["activation"] == ("tanh", "relu")  # block 2's is not used
    same, _ = hparams(jnp.asarray(space.encode({**values, "activation_2": "tanh", "activation_dense": "tanh"})))
    assert cnn_arch_to_python(same)["activation"] == "tanh"
    with pytest.raises(ValueError, match="either one activation for every block or activation_1"):
        cnn_hparams(SearchSpace({**space.params, "activation": Choice(["relu"])}), cfg)
    with pytest.raises(ValueError, match="needs the blocks before it too"):
        cnn_hparams(SearchSpace({k: v for k, v in space.params.items() if k != "activation_1"}), cfg)
    with pytest.raises(ValueError, match="must be one name or n_blocks"):
        make_cnn_arch(dict(n_blocks=2, filters=[3, 3], dense_units=4, activation=("relu", "tanh")), cfg)
