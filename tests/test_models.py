"""The model-family registry: one place picks the network a space describes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxswarm.models import FAMILIES, cnn_space, family_of, mlp_space
from jaxswarm.space import Choice, Fixed, Float, Int, SearchSpace

SPACES = {"mlp": mlp_space(max_layers=2, units=(4, 16)),
          "cnn": cnn_space(max_blocks=1, filters=(2, 4), kernels=(3,), dense_units=(4, 8), activations=("relu",))}


def test_family_of_reads_the_markers_and_defaults_to_the_mlp():
    assert family_of(SPACES["mlp"]) is FAMILIES["mlp"]
    assert family_of(SPACES["cnn"]) is FAMILIES["cnn"]
    assert family_of(SearchSpace({"learning_rate": Float(1e-3, 1e-1, log=True)})) is FAMILIES["mlp"]
    assert all(family.name == name for name, family in FAMILIES.items())


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_decodes_builds_and_runs_a_member(name):
    family, space = FAMILIES[name], SPACES[name]
    cfg = family.config(space, 64, 10, (8, 8, 1), False)
    arch, hp = family.decode(space, cfg)(jnp.full((space.num_dims,), 0.5))
    variables = family.init(jax.random.key(0), arch, cfg)
    logits, _ = family.apply(variables, jnp.ones((3, 64)), arch, cfg, train=False)
    assert logits.shape == (3, 10) and hp.learning_rate.dtype == jnp.float32
    dense = family.init_dense(jax.random.key(0), family.arch_to_python(arch), cfg)
    out, _ = family.apply_dense(dense, jnp.ones((3, 64)), family.arch_to_python(arch), cfg, train=False)
    assert out.shape == (3, 10)
    terms = family.memory(cfg, 8, 16)
    assert terms.in_features == 64 and terms.activations > 0 and terms.eval_chunk > 0


def test_the_mlp_signature_tells_architectures_apart():
    family, space = FAMILIES["mlp"], SPACES["mlp"]
    decode = jax.vmap(family.decode(space, family.config(space, 8, 2)))
    pos = jax.random.uniform(jax.random.key(1), (16, space.num_dims))
    arch, _ = decode(pos)
    sig = family.signature(arch)
    for i in range(16):
        for j in range(16):
            same = family.arch_to_python(jax.tree.map(lambda x: x[i], arch))["units"] == \
                family.arch_to_python(jax.tree.map(lambda x: x[j], arch))["units"]
            assert same == bool(np.all(sig[i] == sig[j]))
    assert FAMILIES["cnn"].signature is None  # the CNN has no warm mode (yet)


def _mlp(**params):
    return SearchSpace({**SPACES["mlp"].params, **params})


def _cnn(**params):
    return SearchSpace({**SPACES["cnn"].params, **params})


def _only(**params):
    return SearchSpace(params)


BAD_NAMES = {
    "mlp misspelt learning rate": ("mlp", lambda: _mlp(learnin_rate=Float(1e-3, 1e-1, log=True)),
                                   "unknown parameter 'learnin_rate' for the MLP family; it reads n_layers, units_1"),
    "mlp misspelt depth": ("mlp", lambda: _mlp(n_layer=Int(1, 2)), "unknown parameter 'n_layer'"),
    "mlp zero-padded layer": ("mlp", lambda: _mlp(units_01=Int(4, 8)), "unknown parameter 'units_01'"),
    "mlp cnn name": ("mlp", lambda: _mlp(filters_1=Int(4, 8)), "unknown parameter 'filters_1'"),
    "mlp layer out of reach": ("mlp", lambda: _mlp(units_3=Int(4, 8)),
                               r"units_3 is never used: n_layers reaches at most 2 \(Int\(1, 2\)\)"),
    "mlp layer beyond a fixed depth": ("mlp", lambda: _only(n_layers=Fixed(1), units_1=Int(4, 8), units_2=Int(4, 8)),
                                       "units_2 is never used: n_layers reaches at most 1"),
    "mlp layer gap": ("mlp", lambda: _only(n_layers=Int(1, 3), units_1=Int(4, 8), units_3=Int(4, 8)),
                      "units_3 needs the layers before it too; the space lacks units_2"),
    "mlp no first layer": ("mlp", lambda: _only(units_2=Int(4, 8)), "the space lacks units_1"),
    "mlp float depth": ("mlp", lambda: _only(n_layers=Float(1, 3)), "n_layers must be an Int"),
    "mlp string learning rates": ("mlp", lambda: _only(learning_rate=Choice(["a", "b"])),
                                  "learning_rate must be a Float, or a Choice or Fixed of numbers"),
    "cnn misspelt blocks": ("cnn", lambda: _cnn(n_block=Int(1, 2)), "unknown parameter 'n_block' for the CNN family"),
    "cnn mlp name": ("cnn", lambda: _cnn(units_1=Int(4, 8)), "unknown parameter 'units_1'"),
    "cnn filters out of reach": ("cnn", lambda: _cnn(filters_2=Int(2, 4)),
                                 "filters_2 is never used: n_blocks reaches at most 1"),
    "cnn kernel out of reach": ("cnn", lambda: _only(n_blocks=Int(1, 2), filters_1=Int(2, 4), kernel_3=Fixed(3)),
                                "kernel_3 is never used: n_blocks reaches at most 2"),
    "cnn filters gap": ("cnn", lambda: _only(n_blocks=Int(1, 3), filters_1=Int(2, 4), filters_3=Int(2, 4)),
                        "filters_3 needs the blocks before it too; the space lacks filters_2"),
    "cnn kernel gap": ("cnn", lambda: _only(n_blocks=Int(1, 2), kernel_2=Choice([3, 5])),
                       "the space lacks kernel_1"),
    "cnn float blocks": ("cnn", lambda: _only(n_blocks=Float(1, 2)), "n_blocks must be an Int"),
}


@pytest.mark.parametrize("case", sorted(BAD_NAMES))
def test_a_family_refuses_names_it_does_not_read_and_unreachable_layers(case):
    name, make, match = BAD_NAMES[case]
    space = make()
    family = FAMILIES[name]
    assert family_of(space) is family
    with pytest.raises(ValueError, match=match):
        family.decode(space, family.config(space, 64, 10, (8, 8, 1), False))


def test_every_preset_name_is_in_its_familys_vocabulary():
    spaces = {"mlp": mlp_space(max_layers=3, optimizers=("sgd", "adam"), momentum=(0.1, 0.9),
                               weight_decay=(1e-5, 1e-2), dropout=(0.0, 0.5), batch_norm=True, lr_decay=(0.01, 1.0)),
              "cnn": cnn_space(max_blocks=3, optimizers=("sgd",), momentum=(0.0, 0.9), weight_decay=(1e-5, 1e-3),
                               lr_decay=(0.1, 1.0), dropout=(0.0, 0.5), batch_norm=True, poolings=("max", "avg"))}
    for name, space in spaces.items():
        family = FAMILIES[name]
        family.decode(space, family.config(space, 64, 10, (8, 8, 1), False))  # no complaint
