"""Model families: the one place that knows which network a search space describes.

A `ModelFamily` bundles what the layers above need about one kind of network:
its preset search space, its static max-size config, the traceable decoding
of a unit-box position into (architecture, optimizer hyperparameters), the
masked max-size network (for the swarm) and the dense network of the real size
(for sequential tuners and the retrain), its memory terms and the architecture
signature warm mode compares. `family_of(space)` picks the family once; code
above asks the record, never the family's name.

A new family is one file in this folder and one line in `FAMILIES`.

Example:
    >>> family_of(mlp_space()).name, family_of(cnn_space()).name
    ('mlp', 'cnn')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from jaxswarm.models import cnn, mlp
from jaxswarm.models.cnn import cnn_space
from jaxswarm.models.layers import MemoryTerms
from jaxswarm.models.mlp import mlp_space
from jaxswarm.space import SearchSpace

__all__ = ["MemoryTerms", "ModelFamily", "FAMILIES", "DEFAULT_FAMILY", "family_of", "mlp_space", "cnn_space"]


class ModelFamily(NamedTuple):
    """One kind of network, as every layer above `models` sees it.

    Attributes:
        name: registry key (``--space`` on the command line).
        space: the preset search space, ``space(**kwargs) -> SearchSpace``.
        markers: parameter names that make a space this family's.
        config: ``(space, in_features, num_classes, input_shape, branching) -> cfg``,
            the static (hashable) max-size config; ``branching`` builds members
            that run only their own branches (trained one at a time).
        decode: ``(space, cfg) -> hparams``; ``hparams(position_D) -> (arch,
            optim.OptHParams)`` is traceable.
        init: ``(key, arch, cfg) -> variables`` of the max-size member.
        apply: ``(variables, x_BxF, arch, cfg, *, train, key) -> (logits_BxC, batch_stats)``.
        init_dense: ``(key, arch_python, cfg) -> variables`` of the real-size network.
        apply_dense: ``(variables, x_BxF, arch_python, cfg, *, train, key) -> (logits_BxC, batch_stats)``.
        arch_to_python: ``(arch) -> dict``, one member's architecture on the host.
        memory: ``(cfg, batch, eval_batch) -> MemoryTerms``.
        signature: ``(arch_S) -> int[S, K]``: members with equal rows have
            weights of the same real shapes (warm mode keeps them); None when
            the family has no warm mode.
        config_type: the class of ``config``'s result (a NamedTuple), so a
            saved model can rebuild its config from the fields' JSON.
    """

    name: str
    space: Callable[..., SearchSpace]
    markers: tuple[str, ...]
    config: Callable
    decode: Callable
    init: Callable
    apply: Callable
    init_dense: Callable
    apply_dense: Callable
    arch_to_python: Callable
    memory: Callable
    signature: Callable | None
    config_type: type


FAMILIES: dict[str, ModelFamily] = {
    "mlp": ModelFamily("mlp", mlp.mlp_space, (), mlp.config, mlp.decode, mlp.init_mlp, mlp.apply_mlp,
                       mlp.init_dense_of, mlp.apply_dense_of, mlp.arch_to_python, mlp.memory_terms,
                       mlp.signature, mlp.MLPConfig),
    "cnn": ModelFamily("cnn", cnn.cnn_space, ("n_blocks",), cnn.config, cnn.decode, cnn.init_cnn, cnn.apply_cnn,
                       cnn.init_dense_of, cnn.apply_dense_of, cnn.cnn_arch_to_python, cnn.memory_terms, None,
                       cnn.CNNConfig),
}
DEFAULT_FAMILY = "mlp"  # a space without any family's markers


def family_of(space: SearchSpace) -> ModelFamily:
    """The family whose markers the space carries (the MLP when none does).

    Example:
        >>> family_of(SearchSpace({"learning_rate": Float(1e-3, 1e-1)})).name  # doctest: +SKIP
        'mlp'
    """
    for family in FAMILIES.values():
        if family.markers and any(name in space.names for name in family.markers):
            return family
    return FAMILIES[DEFAULT_FAMILY]
