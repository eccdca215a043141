"""The model-family registry: one place picks the network a space describes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxswarm.models import FAMILIES, cnn_space, family_of, mlp_space
from jaxswarm.space import Float, SearchSpace

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
