"""The vectorized PSO swarm vs sequential tuners on the SAME objective, side by side in one run.

For each seed (the seed fixes the validation split, every tuner's proposals and
the training keys; all tuners of a seed share the same `Dataset` object):

  1. the swarm study (`study.Study`, S particles x R rounds, fresh mode)
     is timed from before its construction to the end of its last round:
     set-up, its one compile and R rounds (its own retrain follows, untimed). Best-so-far validation
     accuracy is recorded after every round (the study's `on_round` callback).
  2. every sequential tuner (`tuners.run_baseline`) runs with the budget
     S x R trained configurations, compile per configuration included.
     -> EQUAL BUDGET: its search time / the swarm's = the swarm's speedup.
  3. EQUAL WALL CLOCK, T = the swarm's search time: a sequential tuner is
     credited only with the evaluations that FINISHED within T of its start
     (the prefix of its run in step 2; its proposals do not depend on the
     budget). If it finished all S x R evaluations before T, it is run again
     with a time limit T and no budget, and again only evaluations finished
     by T count.
  4. test accuracy: the best configuration (of the whole run, or of the
     equal-clock prefix) is retrained on train+val and scored on the test
     set, with the same key rule for everyone; retrains are not timed.

Same data splits, epochs, batch size and fitness for everyone; nothing is
tuned per tuner (each runs with its defaults; both PSOs get the swarm's size
S). The markdown table reports median [min-max] over seeds; the plot shows the
median over seeds of best-so-far validation accuracy vs wall time.

Usage:
    python bench/bench_tuners.py --dataset digits --seeds 5 --swarm-size 16 --rounds 4 --epochs 10
    python bench/bench_tuners.py --dataset fashion_mnist --seeds 3 --swarm-size 8 --rounds 3 --epochs 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm.data import load_dataset
from jaxswarm.models import mlp_space
from jaxswarm.results import write_json, write_text
from jaxswarm.study import Study, StudyConfig, retrain_metrics
from jaxswarm.tuners import TUNERS, run_baseline

DEFAULT_TUNERS = ("grid", "random", "tpe", "gp", "optunity", "pso")


def run_swarm(space, ds, S, R, E, B, seed, strategy: str = "pso") -> dict:
    """Times one swarm study under `strategy`; returns its numbers and best-so-far curve.

    The search time runs from before the study's construction to the end of its last round
    (set-up, compile, every round with its proposals); the study's own retrain of its best
    configuration follows, untimed in the search.
    """
    curve: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    study = Study(space, ds, StudyConfig(swarm_size=S, rounds=R, epochs=E, batch_size=B, seed=seed,
                                         strategy=strategy), out_dir=None, progress=False)
    res = study.run(on_round=lambda summary: curve.append((time.perf_counter() - t0, summary["best_fitness"])))
    search = curve[-1][0]
    return {"best_fitness": res.best_fitness, "test_accuracy": res.test_accuracy, "evaluations": S * res.rounds_run,
            "search_time": search, "retrain_time": time.perf_counter() - t0 - search,
            "curve": curve, "best_config": res.best_config}


def equal_clock(name, res, T, space, ds, args, seed) -> dict:
    """Best of the evaluations a sequential tuner finished within T seconds (see module doc)."""
    trials, history, rerun = res.trials, res.history, False
    if res.search_time < T and res.stop_reason == "budget":
        rerun = True
        more = run_baseline(name, space, ds, time_limit=T, seed=seed, retrain=False,
                            progress=False, **_common(args), **_kwargs(name, args))
        trials, history = more.trials, more.history
    done = [t for t in trials if t.seconds <= T]
    finite = [t for t in done if np.isfinite(t.fitness)]
    if not finite:
        return {"best_fitness": None, "test_accuracy": None, "evaluations": len(done), "rerun": rerun,
                "curve": [(s, b) for s, b, _ in history if s <= T]}
    best = max(finite, key=lambda t: t.fitness)  # max keeps the first of ties, like the driver
    test = float(retrain_metrics(space, ds, best.position, seed=seed, epochs=args.epochs,
                                 batch_size=args.batch_size, fitness="accuracy").val_accuracy)
    return {"best_fitness": best.fitness, "test_accuracy": test, "evaluations": len(done),
            "rerun": rerun, "curve": [(s, b) for s, b, _ in history if s <= T]}


def _common(args) -> dict:
    return {"epochs": args.epochs, "batch_size": args.batch_size}


def _kwargs(name, args) -> dict:
    plan = args.swarm_size * args.rounds
    if name in ("pso", "optunity"):
        return {"swarm_size": args.swarm_size, "plan_evals": plan}
    if name == "grid":
        return {"grid_points": plan}
    return {}


def available(name: str) -> str | None:
    """None if the tuner can run here, else why not."""
    need = TUNERS[name].packages if name in TUNERS else ()
    missing = [p for p in need if importlib.util.find_spec(p) is None]
    return f"needs {', '.join(missing)}" if missing else None


# ---------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------


def _stat(values, fmt="{:.4f}") -> str:
    v = [x for x in values if x is not None and np.isfinite(x)]
    if not v:
        return "n/a"
    med = float(np.median(v))
    if len(v) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} [{fmt.format(min(v))}–{fmt.format(max(v))}]"


def summarize(results: dict) -> str:
    meta = results["meta"]
    seeds = results["seeds"]
    tuners = meta["tuners"]
    S, R = meta["swarm_size"], meta["rounds"]
    sw = [s["swarm"] for s in seeds]
    lines = [
        f"# Swarm vs sequential tuners: {meta['dataset']}",
        "",
        f"Generated by `{meta['command']}` on {meta['date']}.",
        "",
        f"- device: {meta['device']}; host: {meta['host']}; jax {meta['jax']}",
        f"- space: `mlp_space(max_layers={meta['max_layers']}, units={tuple(meta['units'])})`; "
        f"{meta['epochs']} epochs per evaluation, batch {meta['batch_size']}, fitness = validation accuracy",
        f"- swarm: S={S} particles x R={R} rounds = {S * R} evaluations, one compiled program; "
        f"sequential tuners: one dense network per configuration, compiled per configuration",
        f"- seeds: {meta['seeds']} (seed fixes the validation split, every tuner's proposals and training keys)",
        "- numbers are median [min–max] over seeds; times are wall-clock seconds including set-up and "
        "all compiles, excluding the final retrain",
    ]
    if meta.get("skipped"):
        lines.append("- skipped tuners: " + "; ".join(f"{k} ({v})" for k, v in meta["skipped"].items()))
    if meta.get("note"):
        lines.append(f"- note: {meta['note']}")
    lines += ["", f"## Equal budget ({S * R} trained configurations each)", "",
              "| tuner | best val acc | test acc | evaluations | search time (s) | evals/s | "
              "tuner time / swarm time (swarm speedup) |",
              "|---|---|---|---|---|---|---|"]
    lines.append(f"| **swarm (vectorized)** | {_stat([s['best_fitness'] for s in sw])} | "
                 f"{_stat([s['test_accuracy'] for s in sw])} | {_stat([s['evaluations'] for s in sw], '{:.0f}')} | "
                 f"{_stat([s['search_time'] for s in sw], '{:.1f}')} | "
                 f"{_stat([s['evaluations'] / s['search_time'] for s in sw], '{:.2f}')} | 1 |")
    for t in tuners:
        have = [s for s in seeds if t in s["tuners"]]
        eb = [s["tuners"][t]["equal_budget"] for s in have]
        ratio = [e["search_time"] / s["swarm"]["search_time"] for e, s in zip(eb, have)]
        if not have:
            continue
        seeds_note = f" ({len(have)} seeds)" if len(have) != len(seeds) else ""
        lines.append(f"| {t}{seeds_note} | {_stat([e['best_fitness'] for e in eb])} | {_stat([e['test_accuracy'] for e in eb])} | "
                     f"{_stat([e['evaluations'] for e in eb], '{:.0f}')} | {_stat([e['search_time'] for e in eb], '{:.1f}')} | "
                     f"{_stat([e['evaluations'] / e['search_time'] for e in eb], '{:.2f}')} | "
                     f"**{_stat(ratio, '{:.2f}')}x** |")
    lines += ["", "## Equal wall clock (T = the swarm's search time, per seed)", "",
              "| tuner | best val acc | test acc | evaluations finished by T | "
              "swarm test acc − tuner test acc |",
              "|---|---|---|---|---|"]
    lines.append(f"| **swarm (vectorized)** | {_stat([s['best_fitness'] for s in sw])} | "
                 f"{_stat([s['test_accuracy'] for s in sw])} | {_stat([s['evaluations'] for s in sw], '{:.0f}')} | 0 |")
    for t in tuners:
        have = [s for s in seeds if t in s["tuners"]]
        ec = [s["tuners"][t]["equal_clock"] for s in have]
        diff = [(s["swarm"]["test_accuracy"] - e["test_accuracy"]) if e["test_accuracy"] is not None else None
                for e, s in zip(ec, have)]
        reruns = sum(bool(e["rerun"]) for e in ec)
        if not have:
            continue
        tag = f" (re-run with a time limit in {reruns} seed(s))" if reruns else ""
        lines.append(f"| {t}{tag} | {_stat([e['best_fitness'] for e in ec])} | {_stat([e['test_accuracy'] for e in ec])} | "
                     f"{_stat([e['evaluations'] for e in ec], '{:.0f}')} | {_stat(diff, '{:+.4f}')} |")
    lines += ["", "A tuner with no evaluation finished by T has no accuracy in that seed (n/a, left out of the "
              "median); the count column shows how often that happened (0 evaluations).", "",
              f"![best-so-far validation accuracy vs wall time]({meta['plot']})", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = results["seeds"]
    curves = {"swarm (vectorized)": [s["swarm"]["curve"] for s in seeds]}
    for t in results["meta"]["tuners"]:
        curves[t] = [s["tuners"][t]["equal_budget"]["curve"] for s in seeds if t in s["tuners"]]
    curves = {k: v for k, v in curves.items() if v}
    t_max = max(c[-1][0] for cs in curves.values() for c in cs if c)
    t_min = min(c[0][0] for cs in curves.values() for c in cs if c)
    grid = np.geomspace(max(t_min * 0.9, 1e-2), t_max, 300)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    finals = []
    for name, cs in curves.items():
        ys = []
        for c in cs:
            ts = np.asarray([p[0] for p in c])
            bs = np.asarray([p[1] if p[1] is not None and np.isfinite(p[1]) else np.nan for p in c])
            idx = np.searchsorted(ts, grid, side="right") - 1
            ys.append(np.where(idx >= 0, bs[np.clip(idx, 0, None)], np.nan))
        ys = np.asarray(ys)
        with np.errstate(all="ignore"):
            med = np.nanmedian(np.where(np.isnan(ys), -np.inf, ys), axis=0)
        med = np.where(np.isfinite(med), med, np.nan)
        swarm = name.startswith("swarm")
        ax.step(grid, med, where="post", label=name, lw=3 if swarm else 1.3, color="k" if swarm else None,
                zorder=3 if swarm else 2)
        finals.append(np.nanmax(med))
    ax.axvline(np.median([s["swarm"]["search_time"] for s in seeds]), color="gray", ls=":", lw=1.2,
               label="swarm search time (median)")
    ax.set_xscale("log")
    ax.set_xlabel("wall time since start (s, log scale; compiles included)")
    ax.set_ylabel("best-so-far validation accuracy")
    ax.set_title(f"{results['meta']['dataset']}: median over {len(seeds)} seeds "
                 f"(equal-budget runs, {results['meta']['swarm_size'] * results['meta']['rounds']} evals)",
                 fontsize=10)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    top = max(finals)
    ax.set_ylim(max(0.0, min(finals) - 0.1), min(1.0, top + 0.02))  # zoom on the end game
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (first-seed .. first-seed+seeds-1)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                   help="instead of running: merge the per-seed results of several runs (same settings; "
                        "e.g. seeds run as parallel processes on separate cores) into one report")
    p.add_argument("--swarm-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-layers", type=int, default=3)
    p.add_argument("--units", type=int, nargs=2, default=(16, 256))
    p.add_argument("--tuners", default=",".join(DEFAULT_TUNERS), help="comma-separated sequential tuners")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--name", default=None, help="file stem  [tuners_<dataset>]")
    p.add_argument("--note", default="", help="a line added to the report (e.g. machine load)")
    return p.parse_args(argv)


def merge(paths, out: Path, stem: str | None, note: str = "") -> dict:
    """Combines result JSONs of runs with the same settings (different seeds) into one report."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    keys = ("dataset", "swarm_size", "rounds", "epochs", "batch_size", "max_layers", "units", "tuners")
    for p in parts[1:]:
        diff = [k for k in keys if p["meta"][k] != parts[0]["meta"][k]]
        if diff:
            raise SystemExit(f"cannot merge runs whose settings differ in {diff}")
    results = {"meta": dict(parts[0]["meta"]), "seeds": sorted((s for p in parts for s in p["seeds"]),
                                                               key=lambda s: s["seed"])}
    meta = results["meta"]
    stem = stem or f"tuners_{meta['dataset']}"
    cmd = meta["command"].replace(" --seeds 1", "").replace(f" --first-seed {parts[0]['seeds'][0]['seed']}", "")
    meta.update(seeds=len(results["seeds"]), plot=f"{stem}.png",
                command=f"{cmd} [{len(parts)} per-seed runs merged with --merge]",
                note="; ".join(x for x in (meta.get("note"), note) if x))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{stem}.json", results)
    plot(results, out / f"{stem}.png")
    text = summarize(results)
    write_text(out / f"{stem}.md", text)
    print(text)
    return results


def warm_up(dataset: str, data_dir, space) -> None:
    """What a first study would pay once, outside every timing: JAX's backend start, the dataset cache, decode's jit."""
    load_dataset(dataset, data_dir=data_dir, seed=0)
    jnp.ones(3).block_until_ready()
    space.to_python(np.full(space.num_dims, 0.5, np.float32))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out, args.name, args.note)
    space = mlp_space(max_layers=args.max_layers, units=tuple(args.units))
    tuners, skipped = [], {}
    for t in args.tuners.split(","):
        why = available(t)
        (skipped.__setitem__(t, why) if why else tuners.append(t))
    stem = args.name or f"tuners_{args.dataset}"
    args.out.mkdir(parents=True, exist_ok=True)
    warm_up(args.dataset, args.data_dir, space)
    results = {"meta": {
        "dataset": args.dataset, "seeds": args.seeds, "swarm_size": args.swarm_size, "rounds": args.rounds,
        "epochs": args.epochs, "batch_size": args.batch_size, "max_layers": args.max_layers,
        "units": list(args.units), "tuners": tuners, "skipped": skipped, "note": args.note,
        "command": "python bench/bench_tuners.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M"), "jax": jax.__version__,
        "device": str(jax.devices()[0]), "host": f"{platform.node()} ({platform.processor() or platform.machine()})",
        "plot": f"{stem}.png"}, "seeds": []}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        ds = load_dataset(args.dataset, data_dir=args.data_dir, seed=seed)
        sw = run_swarm(space, ds, args.swarm_size, args.rounds, args.epochs, args.batch_size, seed)
        print(f"[seed {seed}] swarm: {sw['evaluations']} evals in {sw['search_time']:.1f}s, "
              f"val {sw['best_fitness']:.4f}, test {sw['test_accuracy']:.4f}", flush=True)
        entry = {"seed": seed, "swarm": sw, "tuners": {}}
        for t in tuners:
            res = run_baseline(t, space, ds, budget=args.swarm_size * args.rounds, seed=seed,
                               progress=False, **_common(args), **_kwargs(t, args))
            eb = {"best_fitness": res.best_fitness, "test_accuracy": res.test_accuracy,
                  "evaluations": res.evaluations, "search_time": res.search_time,
                  "stop_reason": res.stop_reason, "best_config": res.best_config,
                  "curve": [(s, b) for s, b, _ in res.history]}
            ec = equal_clock(t, res, sw["search_time"], space, ds, args, seed)
            entry["tuners"][t] = {"equal_budget": eb, "equal_clock": ec}
            if entry not in results["seeds"]:
                results["seeds"].append(entry)
            write_json(args.out / f"{stem}.json", results)  # partial results survive a kill
            print(f"[seed {seed}] {t}: {res.evaluations} evals in {res.search_time:.1f}s "
                  f"({res.search_time / sw['search_time']:.2f}x the swarm), val {res.best_fitness:.4f}, "
                  f"test {res.test_accuracy:.4f} | equal clock: {ec['evaluations']} evals, "
                  f"test {ec['test_accuracy']}", flush=True)
        if entry not in results["seeds"]:
            results["seeds"].append(entry)
        write_json(args.out / f"{stem}.json", results)
    plot(results, args.out / f"{stem}.png")
    text = summarize(results)
    write_text(args.out / f"{stem}.md", text)
    print(text)
    return results


if __name__ == "__main__":
    main()
