"""SwarmSearchClassifier vs scikit-learn's MLPClassifier and RandomizedSearchCV, side by side in one run.

On each dataset (scikit-learn's iris; ``make_classification(n_samples=20000,
n_features=40, n_informative=20, n_classes=3, random_state=0)``) and each of K
splits ``StratifiedShuffleSplit(n_splits=K, test_size=0.25, random_state=0)``,
three estimators, each as ``make_pipeline(StandardScaler(), estimator)``
(so the scaler is fitted on the training part only), are fitted on the
training part and scored (accuracy) on the test part, one after the other in
the same process (split i uses ``random_state = i`` everywhere):

  1. swarm: ``jaxswarm.sklearn.SwarmSearchClassifier(swarm_size=S, rounds=R,
     epochs=E, cv=CV, batch_size=B, random_state=i)``: S x R configurations of
     `default_space()` (1-2 hidden layers of 16-128 units, log scale;
     activation relu/tanh/sigmoid/elu; Adam learning rate 1e-4..1e-1, log
     scale), each trained E epochs on every one of CV folds, then the winner
     retrained E epochs on the whole training part.
  2. mlp: ``MLPClassifier(random_state=i)``, scikit-learn's defaults (one
     hidden layer of 100 relu units, Adam at 1e-3, alpha 1e-4, up to 200
     epochs, stopping when the training loss stalls; early_stopping off).
  3. rscv: ``RandomizedSearchCV(MLPClassifier(...), n_iter=S x R, cv=CV,
     random_state=i)``: the swarm's budget (S x R configurations, CV folds,
     E epochs each, refit of the best on the whole training part) and the
     swarm's space: hidden_layer_sizes = 1 or 2 layers (randint) of widths
     drawn log-uniform on [15.5, 128.5] and rounded (as the swarm's
     ``Int(16, 128, log=True)``), activation relu/tanh/logistic (scikit-learn
     has no elu), learning_rate_init loguniform(1e-4, 1e-1). Its MLP: Adam,
     early_stopping=False, max_iter=E, batch_size=B, n_iter_no_change=E (the
     loss-stall stop cannot fire: every fit trains exactly E epochs, as the
     swarm's members do) and alpha=0 (the swarm's space has no weight decay).

Wall time per split = fit (search, compiles and refit included) + scoring
the test part. Reported per method and dataset: test accuracy median
[min-max] over splits, wall time per split (median), and the median over
splits of (method's wall time / RandomizedSearchCV's wall time).

Usage:
    python bench/bench_sklearn.py --datasets iris,synthetic --splits 5 --swarm-size 16 --rounds 4 --epochs 20 --cv 3
    python bench/bench_sklearn.py --quick --out /tmp/sk_smoke.md   # smoke test: iris, 2 splits, tiny budget
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import sklearn
from scipy.stats import loguniform, randint
from sklearn.datasets import load_iris, make_classification
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.model_selection import RandomizedSearchCV, StratifiedShuffleSplit
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from jaxswarm.results import write_json, write_text
from jaxswarm.sklearn import SwarmSearchClassifier, default_space

sys.path.insert(0, str(Path(__file__).parent))
from bench_pso import cpu_model  # noqa: E402  (the benches' CPU line)
from bench_tuners import _stat  # noqa: E402  (median [min-max], as the tuner bench prints it)

DATASETS = ("iris", "synthetic")
METHODS = ("swarm", "mlp", "rscv")
LABELS = {"swarm": "SwarmSearchClassifier", "mlp": "MLPClassifier() (defaults)",
          "rscv": "RandomizedSearchCV(MLPClassifier)"}
RSCV_ACTIVATIONS = ("relu", "tanh", "logistic")  # the swarm's relu/tanh/sigmoid; sklearn has no elu


def load(name: str):
    if name == "iris":
        return load_iris(return_X_y=True)
    if name == "synthetic":
        return make_classification(n_samples=20000, n_features=40, n_informative=20, n_classes=3,
                                   random_state=0)
    raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


class HiddenLayerSizes:
    """hidden_layer_sizes distribution mirroring `default_space()`'s n_layers and units_k.

    n_layers ~ randint(1, max_layers + 1); each width ~ round(loguniform(lo - .5, hi + .5)),
    clipped to [lo, hi]: the distribution of the swarm's ``Int(lo, hi, log=True)`` under
    uniform positions. RandomizedSearchCV samples any object with ``rvs(random_state=)``.
    """

    def __init__(self, max_layers: int = 2, units: tuple[int, int] = (16, 128)):
        self.max_layers, self.units = max_layers, units

    def rvs(self, random_state=None):
        lo, hi = self.units
        n = int(randint(1, self.max_layers + 1).rvs(random_state=random_state))
        widths = loguniform(lo - 0.5, hi + 0.5).rvs(size=n, random_state=random_state)
        return tuple(int(w) for w in np.clip(np.round(widths), lo, hi))

    def __repr__(self):
        return f"HiddenLayerSizes(max_layers={self.max_layers}, units={self.units})"


def space_limits():
    """(max_layers, (lo, hi) units, (lo, hi) learning rate) of `default_space()`, read from it."""
    p = default_space().params
    return int(p["n_layers"].hi), (int(p["units_1"].lo), int(p["units_1"].hi)), \
        (float(p["learning_rate"].lo), float(p["learning_rate"].hi))


def make_estimator(method: str, args, seed: int):
    S, R, E, CV, B = args.swarm_size, args.rounds, args.epochs, args.cv, args.batch_size
    if method == "swarm":
        est = SwarmSearchClassifier(swarm_size=S, rounds=R, epochs=E, cv=CV, batch_size=B, random_state=seed)
    elif method == "mlp":
        est = MLPClassifier(random_state=seed)
    elif method == "rscv":
        layers, units, lr = space_limits()
        mlp = MLPClassifier(solver="adam", max_iter=E, batch_size=B, early_stopping=False, n_iter_no_change=E,
                            alpha=0.0, random_state=seed)
        dists = {"hidden_layer_sizes": HiddenLayerSizes(layers, units),
                 "activation": list(RSCV_ACTIVATIONS),
                 "learning_rate_init": loguniform(*lr)}
        est = RandomizedSearchCV(mlp, param_distributions=dists, n_iter=S * R, cv=CV, random_state=seed,
                                 n_jobs=args.n_jobs, error_score=np.nan, refit=True)
    else:
        raise ValueError(method)
    return make_pipeline(StandardScaler(), est)


def run_one(method: str, args, seed: int, Xtr, ytr, Xte, yte) -> dict:
    pipe = make_estimator(method, args, seed)
    with warnings.catch_warnings():
        # max_iter = epochs is the budget on purpose; diverged fits score nan (counted below).
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FitFailedWarning)
        warnings.filterwarnings("ignore", message=".*non-finite.*")
        warnings.filterwarnings("ignore", message=".*overflow.*")
        # iris folds are smaller than the batch: scikit-learn clips batch_size to the fold (and says so).
        warnings.filterwarnings("ignore", message="Got `batch_size` less than 1 or larger than sample size")
        t0 = time.perf_counter()
        pipe.fit(Xtr, ytr)
        t1 = time.perf_counter()
        acc = float(pipe.score(Xte, yte))
        t2 = time.perf_counter()
    est = pipe[-1]
    out = {"test_accuracy": acc, "wall_time": t2 - t0, "fit_time": t1 - t0, "score_time": t2 - t1}
    if method in ("swarm", "rscv"):
        scores = np.asarray(est.cv_results_["mean_test_score"], float)
        out.update(evaluations=int(scores.size), failed=int(np.isnan(scores).sum()),
                   best_cv_score=float(est.best_score_), best_params=est.best_params_)
    else:
        out.update(evaluations=1, epochs_run=int(est.n_iter_))
    return out


# ---------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------


def _median(values, fmt) -> str:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return fmt.format(float(np.median(v))) if v else "n/a"


def summarize(results: dict) -> str:
    meta = results["meta"]
    S, R, E, CV, B = meta["swarm_size"], meta["rounds"], meta["epochs"], meta["cv"], meta["batch_size"]
    layers, units, lr = meta["space"]["max_layers"], meta["space"]["units"], meta["space"]["learning_rate"]
    lines = [
        "# SwarmSearchClassifier vs scikit-learn (MLPClassifier, RandomizedSearchCV)",
        "",
        f"Generated by `{meta['command']}` on {meta['date']}.",
        "",
        f"- machine: `platform.processor()` = {meta['processor'] or '(empty)'}; {meta['cpu_model']} "
        f"({meta['machine']}), "
        f"{meta['cpu_count']} cores (`os.cpu_count()`); load average at start {meta['loadavg']}; "
        f"jax {meta['jax']} on {meta['jax_device']}, scikit-learn {meta['sklearn']}, "
        f"numpy {meta['numpy']}, Python {meta['python']}",
        f"- BLAS threads (threadpoolctl): {meta['blas']}; RandomizedSearchCV n_jobs = {meta['n_jobs']}",
        f"- splits: `StratifiedShuffleSplit(n_splits={meta['splits']}, test_size=0.25, random_state=0)`; "
        "split i uses random_state = i for every estimator; `StandardScaler` inside a `Pipeline`, "
        "fitted on the training part only",
        f"- swarm: `SwarmSearchClassifier(swarm_size={S}, rounds={R}, epochs={E}, cv={CV}, batch_size={B})`, "
        f"`default_space()` (1-{layers} hidden layers of {units[0]}-{units[1]} units log scale, "
        f"relu/tanh/sigmoid/elu, Adam learning rate {lr[0]:g}-{lr[1]:g} log scale): {S * R} configurations "
        f"x {CV} folds x {E} epochs, winner retrained {E} epochs on the training part",
        f"- RandomizedSearchCV: `n_iter={S * R}, cv={CV}`, the same space (hidden_layer_sizes: randint 1-{layers} "
        f"layers, widths round(loguniform({units[0] - 0.5:g}, {units[1] + 0.5:g})); activation "
        f"{'/'.join(RSCV_ACTIVATIONS)} (scikit-learn has no elu); learning_rate_init loguniform"
        f"({lr[0]:g}, {lr[1]:g})), best refitted on the training part. Its `MLPClassifier` uses **Adam with "
        f"early-stopping off** (`solver='adam', early_stopping=False`), `max_iter={E}` (= epochs), "
        f"`batch_size={B}`, `n_iter_no_change={E}` (every fit trains exactly {E} epochs), `alpha=0` "
        "(no weight decay, as the swarm's space)",
        "- MLPClassifier(): scikit-learn's defaults (hidden (100,), relu, Adam at 1e-3, alpha 1e-4, "
        "batch min(200, n), max_iter 200 with its loss-stall stop, early-stopping off)",
        "- test accuracy: median [min–max] over splits; wall time: median over splits of fit (search, "
        "JAX compiles and refit included) + scoring the test part, all methods measured side by side in "
        "this run (the first split also pays the process's one-time JAX tracing); ratio: median over splits of "
        "(method's wall time / RandomizedSearchCV's on the same split)",
    ]
    if meta.get("quick"):
        lines.append("- **--quick smoke run**: tiny budget, not a benchmark")
    lines += ["", "| dataset | method | configurations | test accuracy | wall time / split (s) | "
              "wall time / RandomizedSearchCV's | failed fits |",
              "|---|---|---|---|---|---|---|"]
    for name, splits in results["datasets"].items():
        for m in METHODS:
            rows = [s[m] for s in splits if m in s]
            if not rows:
                continue
            ratio = [s[m]["wall_time"] / s["rscv"]["wall_time"] for s in splits if m in s and "rscv" in s]
            configs = "1 (no search)" if m == "mlp" else _median([r["evaluations"] for r in rows], "{:.0f}")
            failed = "–" if m == "mlp" else str(sum(r["failed"] for r in rows))
            lines.append(f"| {name} | {LABELS[m]} | {configs} | {_stat([r['test_accuracy'] for r in rows])} | "
                         f"{_median([r['wall_time'] for r in rows], '{:.2f}')} | "
                         f"{_median(ratio, '{:.2f}')}x | {failed} |")
    lines += ["", "failed fits: evaluated configurations (summed over splits) whose CV score was nan "
              "(diverged training), ranked last by both searches.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: " + ", ".join(DATASETS))
    p.add_argument("--splits", type=int, default=5, help="StratifiedShuffleSplit n_splits (K)")
    p.add_argument("--swarm-size", type=int, default=16, help="S")
    p.add_argument("--rounds", type=int, default=4, help="R (S x R configurations per search)")
    p.add_argument("--epochs", type=int, default=20, help="E, epochs per evaluation (= MLP max_iter in the search)")
    p.add_argument("--cv", type=int, default=3, help="CV folds of both searches")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch of the swarm and of the search's MLP")
    p.add_argument("--n-jobs", type=int, default=None, help="RandomizedSearchCV n_jobs (None: one process)")
    p.add_argument("--out", type=Path, default=Path("bench/results/sklearn_cpu.md"),
                   help="Markdown report; the raw numbers go to the same path with .json")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: iris only, 2 splits, swarm-size 2, rounds 2, epochs 5, cv 2")
    args = p.parse_args(argv)
    if args.quick:
        args.datasets, args.splits, args.swarm_size, args.rounds, args.epochs, args.cv = "iris", 2, 2, 2, 5, 2
    for flag in ("splits", "swarm_size", "rounds", "epochs", "batch_size"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.cv < 2:
        p.error("--cv must be >= 2 (RandomizedSearchCV needs k-fold; the swarm runs the same k folds)")
    return args


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i.get('internal_api')} {i.get('num_threads')}" for i in threadpool_info()) or "none"
    except Exception as e:  # informational only
        return f"unknown ({type(e).__name__})"


def main(argv=None) -> dict:
    args = parse_args(argv)
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    data = {n: load(n) for n in names}  # unknown names fail before any work
    layers, units, lr = space_limits()
    jnp.ones(3).block_until_ready()  # JAX backend start, outside every timing
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    results = {"meta": {
        "command": "python bench/bench_sklearn.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "processor": platform.processor(), "cpu_model": cpu_model(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()), "blas": _blas(),
        "jax": jax.__version__, "jax_device": str(jax.devices()[0]), "sklearn": sklearn.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
        "datasets": names, "splits": args.splits, "swarm_size": args.swarm_size, "rounds": args.rounds,
        "epochs": args.epochs, "cv": args.cv, "batch_size": args.batch_size, "n_jobs": args.n_jobs,
        "quick": args.quick,
        "space": {"max_layers": layers, "units": list(units), "learning_rate": list(lr),
                  "swarm_activations": list(default_space().params["activation"].options),
                  "rscv_activations": list(RSCV_ACTIVATIONS)}},
        "datasets": {}}
    sss = StratifiedShuffleSplit(n_splits=args.splits, test_size=0.25, random_state=0)
    for name in names:
        X, y = data[name]
        results["datasets"][name] = splits = []
        for i, (tr, te) in enumerate(sss.split(X, y)):
            entry = {"split": i, "n_train": int(len(tr)), "n_test": int(len(te))}
            splits.append(entry)
            for m in METHODS:
                entry[m] = run_one(m, args, i, X[tr], y[tr], X[te], y[te])
                print(f"[{name} split {i}] {m}: test {entry[m]['test_accuracy']:.4f}, "
                      f"{entry[m]['evaluations']} config(s), {entry[m]['wall_time']:.2f}s", flush=True)
                write_json(json_path, results)  # partial results survive a kill
    text = summarize(results)
    write_text(out, text)
    write_json(json_path, results)
    print(text)
    return results


if __name__ == "__main__":
    main()
