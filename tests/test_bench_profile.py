"""The profile bench's trace bookkeeping (bench/bench_profile.py): HLO parsing, categories, interval union."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import bench_profile as bp  # noqa: E402


def test_hlo_of_a_compiled_program_is_classified():
    f = jax.jit(lambda a, i: jnp.tanh(a @ a)[i].sum())
    text = f.lower(jnp.ones((8, 8)), jnp.arange(3)).compile().as_text()
    instrs, comps = bp.parse_hlo(text)
    cats = {bp.classify(name, instrs, comps)[0] for name in instrs if bp.classify(name, instrs, comps)}
    assert "matmul" in cats
    assert bp.classify("no-such-op", instrs, comps) is None


def test_categories_and_union():
    assert bp.category(["parameter", "dot", "add"]) == "matmul"
    assert bp.category(["gather", "exponential"]) == "gather"
    assert bp.category(["multiply", "tanh"]) == "transcendental"
    assert bp.category(["copy", "transpose"]) == "copy"
    assert bp.category(["multiply", "add"]) == "elementwise"
    assert bp.union_length([(0, 2), (1, 3), (5, 6)]) == 4
