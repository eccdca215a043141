"""The behaviour fingerprint (tests/fingerprint.py) against its stored copy, exactly.

A restructure must change no behaviour: every evaluation's fitness, loss, position and config,
every best config, best fitness and test accuracy must stay what tests/data/fingerprint.json
holds: configs, counts and every other non-float exactly, floats to `REL` (a few float32 ulps).
CPUs of another vector width round a float32 loss a bit differently (AVX2 and AVX-512 machines
differ by 1-2 ulps in a validation loss), so bit-for-bit would test the machine, not the code;
a behaviour change moves far more than that, or changes a config. Regenerate that file only on a
deliberate behaviour change, with `python tests/fingerprint.py`, and say why in the commit.
"""

import json
import math

import fingerprint
import pytest


REL, ABS = 2e-6, 1e-7  # float32's ulp is 6e-8 relative: a few ulps, nothing a behaviour change would hide in


def _first_difference(expected, actual, path=""):
    """The path of the first field where `actual` differs from `expected` (None if equal)."""
    if type(expected) is not type(actual):
        return f"{path}: expected {expected!r}, got {actual!r}"
    if isinstance(expected, dict):
        if expected.keys() != actual.keys():
            return f"{path}: keys {sorted(expected)} != {sorted(actual)}"
        for k in expected:
            diff = _first_difference(expected[k], actual[k], f"{path}.{k}")
            if diff:
                return diff
        return None
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return f"{path}: length {len(expected)} != {len(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            diff = _first_difference(e, a, f"{path}[{i}]")
            if diff:
                return diff
        return None
    if isinstance(expected, float) and math.isfinite(expected):
        return None if math.isclose(expected, actual, rel_tol=REL, abs_tol=ABS) else \
            f"{path}: expected {expected!r}, got {actual!r} (beyond rel {REL:g})"
    return None if expected == actual else f"{path}: expected {expected!r}, got {actual!r}"


def test_every_case_is_pinned():
    assert sorted(fingerprint.case_names()) == sorted(json.loads(fingerprint.DATA.read_text())), \
        "the set of cases changed"


# One test per case (the workers share them). The default run pins one study of each trainer path a CPU MLP
# study takes by default (masked fresh, packed) and one baseline; the other cases (~140 s) run with -m slow.
DEFAULT_CASES = ("mlp_fresh", "packed", "baseline_tpe")


@pytest.mark.parametrize("case", [c if c in DEFAULT_CASES else pytest.param(c, marks=pytest.mark.slow)
                                  for c in fingerprint.case_names()])
def test_fingerprint_unchanged(tmp_path, case):
    expected = json.loads(fingerprint.DATA.read_text())[case]
    actual = fingerprint.compute(tmp_path, names={case})[case]
    diff = _first_difference(expected, actual, case)
    assert diff is None, f"behaviour changed:\n{diff}"
