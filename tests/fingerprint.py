"""A behaviour fingerprint: tiny fixed-seed studies and baselines on digits, every result recorded exactly.

`compute(tmp_dir)` runs the cases and returns a JSON-ready dict; tests/test_fingerprint.py
compares it with tests/data/fingerprint.json. Regenerate that file (only after a deliberate
behaviour change) with:

    python tests/fingerprint.py
"""

import json
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "fingerprint.json"

if __name__ == "__main__":
    # The environment of tests/conftest.py, set before jax is imported.
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # Fingerprint the code of this checkout, not whatever jaxswarm is installed.
    sys.path.insert(0, str(HERE.parent))

import jaxswarm as js  # noqa: E402

# --- names that move in the restructure: the new public spelling first, the old module second ---
try:
    run_baseline = js.run_baseline
except AttributeError:
    from jaxswarm.baselines import run_baseline
try:
    cnn_space = js.cnn_space
except AttributeError:
    from jaxswarm.cnn import cnn_space
# -------------------------------------------------------------------------------------------------

# The tuners that run here ("gp" needs PyTorch, which the dev environment lacks).
BASELINES = ("grid", "random", "tpe", "optunity", "pso")


def _jsonable(value):
    """A JSON round-trippable copy; non-finite floats become strings so that equality holds."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan", "inf", "-inf"
    return value


def _evaluations(out_dir: Path) -> list:
    """evaluations.jsonl in file order: each row's config, fitness, val_loss and position."""
    rows = []
    for line in (out_dir / "evaluations.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows.append({k: r[k] for k in ("config", "fitness", "val_loss", "position")})
    return rows


def _mlp_space():
    return js.mlp_space(max_layers=2, units=(8, 32), activations=("relu", "tanh"), optimizers=("sgd", "adam"))


def _cnn_space():
    return cnn_space(max_blocks=2, filters=(4, 8), kernels=(3,), dense_units=(8, 16), activations=("relu",))


def _study_cases() -> dict:
    mlp = dict(swarm_size=4, rounds=2, epochs=2, batch_size=64, seed=0, retrain_epochs=1)
    cnn = dict(swarm_size=2, rounds=2, epochs=1, batch_size=64, seed=0, retrain_epochs=1)
    return {
        "mlp_fresh": (_mlp_space, mlp),
        "mlp_warm": (_mlp_space, {**mlp, "mode": "warm", "rounds": 3}),
        "kfold": (_mlp_space, {**mlp, "folds": 2}),
        "packed": (_mlp_space, {**mlp, "layout": "packed"}),
        "serial": (_mlp_space, {**mlp, "layout": "serial"}),
        "cnn_masked": (_cnn_space, {**cnn, "layout": "masked"}),
        "cnn_serial": (_cnn_space, {**cnn, "layout": "serial"}),
    }


def case_names() -> list[str]:
    """Every case's name: the studies, then the baselines."""
    return [*_study_cases(), *(f"baseline_{t}" for t in BASELINES)]


def compute(tmp_dir, names=None) -> dict:
    """Runs every case (or those in `names`) with its outputs under `tmp_dir`; returns {case: results}."""
    tmp_dir = Path(tmp_dir)
    digits = js.load_dataset("digits", seed=0)
    out = {}
    for name, (space_fn, kwargs) in _study_cases().items():
        if names is not None and name not in names:
            continue
        out_dir = tmp_dir / name
        res = js.tune(space_fn(), digits, progress=False, out_dir=out_dir, **kwargs)
        out[name] = _jsonable({
            "evaluations": _evaluations(out_dir), "best_config": res.best_config,
            "best_fitness": float(res.best_fitness), "test_accuracy": float(res.test_accuracy),
            "rounds_run": res.rounds_run})
    for tuner in BASELINES:
        if names is not None and f"baseline_{tuner}" not in names:
            continue
        out_dir = tmp_dir / f"baseline_{tuner}"
        res = run_baseline(tuner, _mlp_space(), digits, budget=3, epochs=1, batch_size=64, seed=0,
                           out_dir=out_dir, progress=False)
        out[f"baseline_{tuner}"] = _jsonable({
            "trials": [{"config": t.config, "fitness": float(t.fitness), "val_accuracy": float(t.val_accuracy),
                        "position": [float(x) for x in t.position]} for t in res.trials],
            "evaluations": _evaluations(out_dir), "best_config": res.best_config,
            "best_fitness": float(res.best_fitness), "test_accuracy": float(res.test_accuracy),
            "stop_reason": res.stop_reason})
    return json.loads(json.dumps(out))


def main() -> None:
    import tempfile

    print(f"jaxswarm from {js.__file__}")
    with tempfile.TemporaryDirectory() as tmp:
        result = compute(tmp)
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {DATA}: {len(result)} cases")


if __name__ == "__main__":
    main()
