"""PSO swarm vs sequential tuners, reproduced with fixed settings.

Runs `bench/bench_tuners.py` (the harness; read its docstring for the method)
on digits and on Fashion-MNIST with the settings below, fixed in advance and
the same for every tuner, and writes one markdown report, plots and raw JSON
to the results directory. Every tuner of a seed sees the same data split, the
same epochs and batch size and the same fitness; compile time counts for
everyone; nothing is tuned per tuner.

The report answers two questions, per dataset, as medians over seeds of
per-seed ratios/differences measured side by side in one run:
  * equal wall clock: the swarm's best test accuracy minus each sequential
    tuner's, when each tuner gets the time the vectorized swarm took;
  * equal budget: the swarm's wall-clock speedup (tuner time / swarm time)
    when each tuner trains the same number of configurations.

Usage:
    python experiments/compare_tuners.py [RESULTS_DIR] [--quick]
      RESULTS_DIR  default experiments/results/compare_tuners/
      --quick      1 seed, tiny budgets (a smoke run of a few minutes)
    Fashion-MNIST needs its IDX files (see README: data); it is skipped with a
    note when they cannot be found.

Cost on 2 CPU cores (estimate): digits ~5 min per seed, Fashion-MNIST ~3 min
per seed, so the default (5 + 3 seeds) takes about 35-40 minutes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench_tuners  # noqa: E402

from jaxswarm.data import DatasetError, load_dataset  # noqa: E402

# Fixed before any result was seen; the same for every tuner.
SETTINGS = {
    "digits": dict(seeds=5, swarm_size=8, rounds=3, epochs=10, batch_size=64),
    "fashion_mnist": dict(seeds=3, swarm_size=8, rounds=2, epochs=1, batch_size=128),
}
QUICK = {
    "digits": dict(seeds=1, swarm_size=4, rounds=2, epochs=2, batch_size=64),
    "fashion_mnist": dict(seeds=1, swarm_size=2, rounds=2, epochs=1, batch_size=256),
}
TUNERS = "grid,random,tpe,gp,optunity,pso"  # unavailable ones (gp without PyTorch) are skipped, noted


def _args(s: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in s.items()]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    quick = "--quick" in argv
    argv = [a for a in argv if a != "--quick"]
    out = Path(argv[0]) if argv else ROOT / "experiments" / "results" / "compare_tuners"
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Experiment: PSO swarm vs sequential tuners", "",
             f"Reproduce: `python experiments/compare_tuners.py {out}{' --quick' if quick else ''}` "
             f"({time.strftime('%Y-%m-%d %H:%M')}).", "",
             "Method: `bench/bench_tuners.py` (docstring). Settings fixed in advance, identical for all "
             "tuners; medians over seeds of per-seed numbers measured in one run.", ""]
    for dataset, settings in (QUICK if quick else SETTINGS).items():
        try:
            load_dataset(dataset, seed=0)
        except DatasetError as e:
            lines += [f"## {dataset}", "", f"Skipped: {e}", ""]
            continue
        stem = f"tuners_{dataset}"
        results = bench_tuners.main(["--dataset", dataset, "--tuners", TUNERS, "--out", str(out),
                                     "--name", stem, *_args(settings)])
        lines += _headline(results) + [(out / f"{stem}.md").read_text().replace("# Swarm vs", "## Swarm vs", 1), ""]
    (out / "report.md").write_text("\n".join(lines))
    print(f"report: {out / 'report.md'}")
    return 0


def _headline(results: dict) -> list[str]:
    import numpy as np

    seeds, meta = results["seeds"], results["meta"]
    rows = [f"### Headline: {meta['dataset']}", "",
            "| sequential tuner | swarm speedup at equal budget (median) | "
            "swarm test acc − tuner test acc at equal wall clock (median) |", "|---|---|---|"]
    for t in meta["tuners"]:
        have = [s for s in seeds if t in s["tuners"]]
        speed = [s["tuners"][t]["equal_budget"]["search_time"] / s["swarm"]["search_time"] for s in have]
        diff = [s["swarm"]["test_accuracy"] - s["tuners"][t]["equal_clock"]["test_accuracy"]
                for s in have if s["tuners"][t]["equal_clock"]["test_accuracy"] is not None]
        rows.append(f"| {t} | {np.median(speed):.2f}x | {np.median(diff):+.4f} |" if diff else
                    f"| {t} | {np.median(speed):.2f}x | n/a |")
    return rows + [""]


if __name__ == "__main__":
    sys.exit(main())
