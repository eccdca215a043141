"""The behaviour fingerprint (tests/fingerprint.py) against its stored copy, exactly.

A restructure must change no behaviour: every evaluation's fitness, loss, position and config,
every best config, best fitness and test accuracy must stay bit for bit what
tests/data/fingerprint.json holds. Regenerate that file only on a deliberate behaviour change,
with `python tests/fingerprint.py`, and say why in the commit.
"""

import json

import fingerprint


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
    return None if expected == actual else f"{path}: expected {expected!r}, got {actual!r}"


def test_fingerprint_unchanged(tmp_path):
    expected = json.loads(fingerprint.DATA.read_text())
    actual = fingerprint.compute(tmp_path)
    assert sorted(actual) == sorted(expected), "the set of cases changed"
    diffs = [d for case in sorted(expected) if (d := _first_difference(expected[case], actual[case], case))]
    assert not diffs, "behaviour changed:\n" + "\n".join(diffs)
