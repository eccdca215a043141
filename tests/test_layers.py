import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm.models.layers import ACTIVATION_NAMES, ACTIVATIONS, activate, dropout


def test_activation_registry_order_and_index():
    assert ACTIVATION_NAMES[:7] == ("relu", "tanh", "sigmoid", "elu", "leaky_relu", "gelu", "swish")
    z = jnp.linspace(-3, 3, 11)
    for i, (name, fn) in enumerate(ACTIVATIONS.items()):
        np.testing.assert_array_equal(activate(jnp.int32(i), z), fn(z))


def test_an_unlisted_index_falls_back_to_the_first_listed():
    z = jnp.linspace(-3, 3, 11)
    tanh = jnp.int32(ACTIVATION_NAMES.index("tanh"))
    np.testing.assert_array_equal(activate(tanh, z, ("relu", "elu")), ACTIVATIONS["relu"](z))


def test_a_narrower_dropout_draw_is_a_prefix_of_a_wider_one():
    """The masked member drops exactly the units its dense network drops (same key)."""
    key, h = jax.random.key(0), jnp.ones((5, 8))
    wide = dropout(key, h, 0.5)
    narrow = dropout(key, h[:, :3], 0.5)
    np.testing.assert_array_equal(wide[:, :3], narrow)
