"""Multi-fidelity schedules at EQUAL WALL CLOCK: the swarm with successive halving / Hyperband / PBT vs
the plain swarm, Optuna's TPE with its SuccessiveHalving / Hyperband pruners, and random search.

For each seed (the seed fixes the validation split, the training rows searched on, every tuner's
proposals and the training keys):

  1. the plain swarm (`--schedule none`, S members x R rounds) is timed from before its construction
     to the end of its last round; T = that search time.
  2. the swarm with `sha`, with `hyperband` and with `pbt` (warm mode, PBT's defaults) runs round
     after round until a round ends past T.
  3. `tpe_sha`, `tpe_hyperband` and `random` (`tuners.run_baseline`) run with a time limit T (checked
     before each evaluation, so one may finish past T; it is not credited), on each `--backends` entry:
     ``jax`` (one jit per configuration) and ``torch`` (PyTorch eager, nothing compiled; the rows are
     named ``<tuner> (torch)``; ``--torch-threads`` sets torch's intra-op threads, 0 its default).
  Crediting (`results.best_by`, `results.first_reaching`): an evaluation counts at its finish time, a
  swarm member at the end of its round; one still running at T does not count. Every evaluation's
  validation accuracy counts, whatever its epochs (a member stopped at a low rung, or a pruned trial,
  is a network that reached that accuracy).
  4. test accuracy: the best configuration credited by T is retrained for the full epochs on
     train+val and scored on the test set (same key rule for everyone; not timed).

Reported per variant, median [min-max] over seeds: best validation accuracy by T, test accuracy of
that configuration, the time to first reach `--reach` (fixed before running), evaluations and
member-epochs trained by T, and the seconds each run spent compiling (XLA's backend compiles, from
`jax.monitoring`, over the whole run: a swarm's rung programs compile during its rounds).

Usage:
    python bench/bench_schedules.py --seeds 5 --swarm-size 27 --rounds 4 --epochs 9 --train-size 10000 \\
        --data-dir /usr/share/datasets/fashion-mnist --reach 0.865
    python bench/bench_schedules.py --seeds 1 --swarm-size 9 --rounds 2 --epochs 3 --train-size 500 --name smoke
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np
from bench_strategies import subset
from bench_tuners import _stat, warm_up

from jaxswarm.data import load_dataset
from jaxswarm.models import mlp_space
from jaxswarm.results import best_by, first_reaching, write_json, write_text
from jaxswarm.study import Study, StudyConfig, retrain_metrics
from jaxswarm.tuners import run_baseline

SWARMS = ("none", "sha", "hyperband", "pbt")  # the swarm's schedules (pbt in warm mode)
_COMPILE_S = [0.0, 0]  # XLA backend compile seconds and compiles so far in this process


def _count_compiles(name: str, seconds: float, **_) -> None:
    if name == "/jax/core/compile/backend_compile_duration":
        _COMPILE_S[0] += seconds
        _COMPILE_S[1] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compiles)
SEQUENTIAL = ("tpe_sha", "tpe_hyperband", "random")


class _PastT(Exception):
    """Raised from on_round once a round ends past T: the study stops there."""


def run_swarm(space, ds, args, seed, schedule, T=None) -> dict:
    """One swarm study; its events ``(round end s, member val accuracy)`` and the positions they came from."""
    ends: list[float] = []
    t0, (c0, n0) = time.perf_counter(), _COMPILE_S
    config = StudyConfig(swarm_size=args.swarm_size, rounds=args.rounds if T is None else 10**6,
                         epochs=args.epochs, batch_size=args.batch_size, seed=seed, schedule=schedule,
                         eta=args.eta, min_epochs=args.min_epochs, retrain=False,
                         mode="warm" if schedule == "pbt" else "fresh")
    study = Study(space, ds, config, out_dir=None, progress=False)

    def on_round(summary):
        ends.append(time.perf_counter() - t0)
        if T is not None and ends[-1] > T:
            raise _PastT

    try:
        study.run(on_round=on_round)
    except _PastT:
        pass
    events, positions, epochs = [], [], []
    for row in study.evaluations:
        events.append((ends[row["round"]], row["val_accuracy"]))
        positions.append(np.array([row["position"][d] for d in space.dim_names], np.float32))
        epochs.append(row.get("epochs", args.epochs))
    return {"events": events, "positions": positions, "epochs": epochs, "search_time": ends[-1],
            "layout": study.layout.name, "compile_s": _COMPILE_S[0] - c0, "compiles": _COMPILE_S[1] - n0}


def run_sequential(space, ds, args, seed, name, T, backend="jax") -> dict:
    opts = {"eta": args.eta, "min_epochs": args.min_epochs or 1} if name != "random" else {}
    c0, n0 = _COMPILE_S
    res = run_baseline(name, space, ds, time_limit=T, seed=seed, retrain=False, progress=False,
                       epochs=args.epochs, batch_size=args.batch_size, backend=backend, **opts)
    return {"events": [(t.seconds, t.val_accuracy if np.isfinite(t.fitness) else -np.inf) for t in res.trials],
            "positions": [t.position for t in res.trials], "search_time": res.search_time,
            "epochs": [getattr(t, "epochs", args.epochs) for t in res.trials], "compile_s": _COMPILE_S[0] - c0,
            "compiles": _COMPILE_S[1] - n0}


def credit(run: dict, T: float, space, ds, args, seed) -> dict:
    """What `run` reached by T, and the test accuracy of its best configuration then."""
    done = [i for i, (t, _) in enumerate(run["events"]) if t <= T]
    best = best_by(run["events"], T)
    out = {"best_val": best, "reach_s": first_reaching(run["events"], args.reach), "evaluations": len(done),
           "member_epochs": int(sum(run["epochs"][i] for i in done)), "search_time": run["search_time"],
           "compile_s": run["compile_s"], "compiles": run["compiles"], "layout": run.get("layout"),
           "test_accuracy": None, "events": [(t, v) for t, v in run["events"] if t <= T]}
    if best is not None:
        i = max((i for i in done if np.isfinite(run["events"][i][1])), key=lambda i: run["events"][i][1])
        out["test_accuracy"] = float(retrain_metrics(space, ds, run["positions"][i], seed=seed, epochs=args.epochs,
                                                     batch_size=args.batch_size, fitness="accuracy").val_accuracy)
    if out["reach_s"] is not None and out["reach_s"] > T:
        out["reach_s"] = None  # not by T
    return out


def summarize(results: dict) -> str:
    meta, seeds = results["meta"], results["seeds"]
    names = [f"swarm {s}" for s in SWARMS] + [n if b == "jax" else f"{n} (torch)" for n in SEQUENTIAL
                                              for b in meta.get("backends", ["jax"])]
    lines = [f"# Schedules at equal wall clock: {meta['dataset']}", "",
             f"Generated by `{meta['command']}` on {meta['date']}.", "",
             f"- device: {meta['device']}; host: {meta['host']}; jax {meta['jax']}",
             f"- swarm: S = {meta['swarm_size']}, epochs {meta['epochs']}, eta {meta['eta']}, min_epochs "
             f"{meta['min_epochs'] or 'default'}; T = the plain swarm's search time for {meta['rounds']} rounds",
             f"- {meta['train_size'] or 'all'} training rows; reach threshold: validation accuracy {meta['reach']}",
             f"- sequential tuners' backends: {', '.join(meta.get('backends', ['jax']))} (jax: one jit per "
             "configuration; torch: PyTorch eager, nothing compiled"
             + ("" if meta.get("torch_threads") is None else
                f", {meta['torch_threads']} intra-op thread(s))" if meta["torch_threads"] else
                ", torch's default intra-op threads: one per core)"),
             "- median [min–max] over seeds; `reach s`: first time an evaluation reached the threshold (a seed "
             "that did not by T counts as T in the median, and the count says how many did)", "",
             "| tuner | best val acc by T | test acc | reach s | reached | evaluations by T | member-epochs by T "
             "| compile s | compiles |",
             "|---|---|---|---|---|---|---|---|---|"]
    Ts = [s["T"] for s in seeds.values()]
    for n in names:
        rows = [s["runs"][n] for s in seeds.values() if n in s["runs"]]
        if not rows:
            continue
        reach = [r["reach_s"] if r["reach_s"] is not None else T for r, T in zip(rows, Ts)]
        lines.append(f"| {n} | {_stat([r['best_val'] for r in rows])} | {_stat([r['test_accuracy'] for r in rows])} "
                     f"| {_stat(reach, '{:.1f}')} | {sum(r['reach_s'] is not None for r in rows)}/{len(rows)} "
                     f"| {_stat([r['evaluations'] for r in rows], '{:.0f}')} "
                     f"| {_stat([r['member_epochs'] for r in rows], '{:.0f}')} "
                     f"| {_stat([r['compile_s'] for r in rows], '{:.1f}')} "
                     f"| {_stat([r.get('compiles') for r in rows if r.get('compiles') is not None], '{:.0f}')} |")
    layouts = sorted({f"{n}: {s['runs'][n]['layout']}" for s in seeds.values() for n in s["runs"]
                      if s["runs"][n].get("layout")})
    lines += ["", f"T per seed (s): {', '.join(f'{t:.1f}' for t in Ts)}", f"Swarm layouts: {'; '.join(layouts)}", ""]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--swarm-size", type=int, default=27)
    p.add_argument("--rounds", type=int, default=4, help="the plain swarm's rounds (T = their time)")
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--min-epochs", type=int, default=None)
    p.add_argument("--train-size", type=int, default=10000, help="training rows searched on (0: all)")
    p.add_argument("--reach", type=float, default=0.865, help="the validation accuracy to reach (fix it beforehand)")
    p.add_argument("--tuners", nargs="+", default=list(SWARMS + SEQUENTIAL), choices=SWARMS + SEQUENTIAL,
                   help="which to run (the plain swarm, 'none', always runs: it sets T)")
    p.add_argument("--backends", nargs="+", default=["jax"], choices=["jax", "torch"],
                   help="what trains the sequential tuners' configurations: one jit each, or PyTorch eager")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch's intra-op threads (default 0: torch's own, one per core, as a user runs it)")
    p.add_argument("--name", default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    space = mlp_space(max_layers=3, units=(16, 256))
    warm_up(args.dataset, args.data_dir, space)
    meta = {"command": "bench/bench_schedules.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": str(jax.devices()),
            "host": f"{platform.machine()}, {jax.local_device_count()} devices", "jax": jax.__version__,
            "dataset": args.dataset, "swarm_size": args.swarm_size, "rounds": args.rounds, "epochs": args.epochs,
            "eta": args.eta, "min_epochs": args.min_epochs, "train_size": args.train_size or None,
            "reach": args.reach, "tuners": args.tuners, "backends": args.backends,
            "torch_threads": args.torch_threads if "torch" in args.backends else None}
    if "torch" in args.backends and args.torch_threads:
        import torch  # only the torch backend's rows need it

        torch.set_num_threads(args.torch_threads)
    results = {"meta": meta, "seeds": {}}
    stem = args.name or f"schedules_{args.dataset}"
    for seed in range(args.seeds):
        ds = subset(load_dataset(args.dataset, data_dir=args.data_dir, seed=seed), args.train_size or None, seed)
        plain = run_swarm(space, ds, args, seed, "none")
        T = plain["search_time"]
        runs = {"swarm none": plain}
        for s in SWARMS[1:]:
            if s in args.tuners:
                runs[f"swarm {s}"] = run_swarm(space, ds, args, seed, s, T)
        for name in SEQUENTIAL:
            for backend in args.backends:
                if name in args.tuners:
                    label = name if backend == "jax" else f"{name} (torch)"
                    runs[label] = run_sequential(space, ds, args, seed, name, T, backend)
        credited = {n: credit(r, T, space, ds, args, seed) for n, r in runs.items()}
        results["seeds"][seed] = {"T": T, "runs": credited}
        print(f"seed {seed}: T {T:.1f}s " + "; ".join(
            f"{n} {c['best_val'] or 0:.4f} reach {c['reach_s']}" for n, c in credited.items()), flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / f"{stem}.json", results)  # after every seed: a killed run keeps what it measured
    text = summarize(results)
    write_text(args.out / f"{stem}.md", text)
    print(text)
    return results


if __name__ == "__main__":
    main()
