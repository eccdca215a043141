"""A PSO study of the convolutional search space on Fashion-MNIST (target: test accuracy >= 93.5%).

The search is a `jaxswarm.study.Study` over `cnn.cnn_space`: ``--swarm``
particles x ``--rounds`` rounds, each member trained ``--epochs`` epochs on
the first ``--search-train`` training images and scored on the first
``--search-val`` validation images (the 54000 / 6000 splits by default).
``--layout serial`` (the default on CPU) trains the members one after another
in one compiled program, each running only its own blocks; ``masked`` vmaps
max-size members (the accelerator layout). Then the global best is retrained
as its real-size CNN (`study.Study.retrain_metrics`) on all of train+val (60000
images) for ``--retrain-epochs`` epochs and scored ONCE on the official
10000-image test set (last epoch; no selection on test).

Run (CPU, ~1 h on 2 cores):  python experiments/cnn_fashion.py --out experiments/results/cnn_fashion
Run (GPU):  python experiments/cnn_fashion.py --layout masked --swarm 32 --rounds 8 --epochs 3 \\
    --search-train 54000 --search-val 6000 --out $OUT/cnn_fashion

``--resume`` continues the study in ``--out`` from its last checkpoint: an
interrupted search goes on where it stopped, a finished one is not rerun, and
the retrain runs (e.g. a longer ``--retrain-epochs`` of the same winner).

Writes the study's own files (evaluations, rounds, plots) and ``report.md``,
``cnn_fashion.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxswarm import results
from jaxswarm.data import load_dataset
from jaxswarm.models import cnn
from jaxswarm.space import Fixed, Int, SearchSpace
from jaxswarm.study import Study, StudyConfig, load_result

TARGET = 0.935


def study_space(max_filters: int, lr_decay: float, min_blocks: int = 1, min_filters: int = 16) -> SearchSpace:
    space = cnn.cnn_space(
        max_blocks=3,
        filters=(min_filters, max_filters),
        kernels=(3, 5),
        dense_units=(64, 256),
        activations=("relu", "elu", "swish"),
        learning_rate=(3e-4, 1e-2),
        dropout=(0.0, 0.5),
        batch_norm=True,
        poolings=("max", "avg"),
    )
    blocks = Fixed(3) if min_blocks >= 3 else Int(min_blocks, 3)
    return SearchSpace({**space.params, "n_blocks": blocks, "lr_decay": Fixed(lr_decay)})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--swarm", type=int, default=8)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--search-train", type=int, default=10000, help="training images the search uses")
    p.add_argument("--search-val", type=int, default=6000, help="validation images the search scores on")
    p.add_argument("--layout", choices=("serial", "masked"), default="serial")
    p.add_argument("--retrain-epochs", type=int, default=30)
    p.add_argument("--max-filters", type=int, default=64)
    p.add_argument("--min-filters", type=int, default=16)
    p.add_argument("--min-blocks", type=int, default=1, choices=(1, 2, 3), help="fewest conv blocks searched")
    p.add_argument("--lr-decay", type=float, default=0.01, help="cosine schedule's final lr / initial lr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true",
                   help="continue the study in --out from its last checkpoint (a finished search is not rerun; "
                        "the retrain always runs)")
    p.add_argument("--out", type=Path, default=Path("experiments/results/cnn_fashion"))
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    full = load_dataset("fashion_mnist", seed=args.seed)
    n_train, n_val = min(args.search_train, len(full.y_train)), min(args.search_val, len(full.y_val))
    search_ds = full._replace(x_train=full.x_train[:n_train], y_train=full.y_train[:n_train],
                              x_val=full.x_val[:n_val], y_val=full.y_val[:n_val])
    space = study_space(args.max_filters, args.lr_decay, args.min_blocks, args.min_filters)
    config = StudyConfig(swarm_size=args.swarm, rounds=args.rounds, epochs=args.epochs,
                         batch_size=args.batch, seed=args.seed, layout=args.layout, retrain=False,
                         retrain_epochs=args.retrain_epochs)
    study = Study(space, search_ds, config, out_dir=args.out)
    result = study.run(resume=args.resume)
    search_s = time.perf_counter() - t_start
    best_pos = np.asarray(load_result(args.out)["position"], np.float32)

    # Retrain the global best as its real-size CNN on all of train+val; score once on test.
    t = time.perf_counter()
    m = jax.block_until_ready(study.retrain_metrics(best_pos, dataset=full))
    retrain_s = time.perf_counter() - t
    arch = cnn.cnn_arch_to_python(study.program.hparams(jnp.asarray(best_pos))[0])
    n_retrain = len(full.y_train) + len(full.y_val)
    test_acc, curve = float(m.val_accuracy), np.asarray(m.val_accuracy_curve).tolist()
    wall = time.perf_counter() - t_start
    print(f"retrained in {retrain_s:.1f}s: test accuracy {test_acc:.4f}", flush=True)

    member_epochs = args.swarm * result.rounds_run * args.epochs
    rounds = results.read_jsonl(args.out / results.ROUNDS)
    rounds_s = sum(r["seconds"] for r in rounds)  # survives --resume: each round's own time
    # The swarm's max-size CNN config (serial: branching members, as the layout builds them).
    mcfg = study.family.config(space, search_ds.num_features, search_ds.num_classes, search_ds.input_shape,
                               args.layout == "serial")
    best = {
        "best_config": result.best_config, "best_val_accuracy": result.best_fitness, "arch": arch,
        "test_accuracy": test_acc, "test_accuracy_curve": curve, "target": TARGET, "reached": test_acc >= TARGET,
        "search_s": search_s, "search_rounds_s": rounds_s, "retrain_s": retrain_s, "wall_s": wall,
        "resumed": args.resume,
        "budget": {"swarm": args.swarm, "rounds": result.rounds_run, "epochs": args.epochs,
                   "search_train": n_train, "search_val": n_val, "member_epochs": member_epochs,
                   "retrain_epochs": args.retrain_epochs, "layout": args.layout},
        "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})", "jax": jax.__version__,
        "argv": sys.argv[1:],
    }
    results.write_json(args.out / "cnn_fashion.json", best)
    useful = cnn.useful_flops_cnn(arch, full.input_shape, full.num_classes)
    lines = [
        "# CNN search space on Fashion-MNIST",
        "",
        f"Device: {best['device']}, host {platform.node()}, jax {jax.__version__}. Seed {args.seed}.",
        f"Command: `python experiments/cnn_fashion.py {' '.join(sys.argv[1:])}`",
        "",
        f"**Test accuracy {100 * test_acc:.2f}%** (target {100 * TARGET:.1f}%: "
        f"{'reached' if test_acc >= TARGET else 'NOT reached'}), the PSO global best retrained once as its "
        f"real-size CNN on train+val ({n_retrain} images, {args.retrain_epochs} epochs) and scored on the "
        "10000-image test set after the last epoch.",
        "",
        "## Budget and wall time",
        "",
        f"- search: {args.swarm} particles x {result.rounds_run} rounds x {args.epochs} epochs on {n_train} training "
        f"images = {member_epochs} member-epochs; fitness = validation accuracy ({n_val} images) after the "
        f"last epoch; layout {args.layout}",
        f"- swarm network limits: {mcfg}",
        f"- search {search_s:.0f}s (data loading and compile included), retrain {retrain_s:.0f}s "
        f"(compile included), wall {wall:.0f}s" + (
            f"; resumed: the search rounds ran earlier and took {rounds_s:.0f}s in all" if args.resume else ""),
        "",
        "## Best configuration",
        "",
        f"- validation accuracy in the search: {100 * result.best_fitness:.2f}%",
        f"- {result.best_config}",
        f"- real network: {arch}, useful forward {useful / 1e6:.2f} MFLOP per image",
        f"- test accuracy per retrain epoch: {', '.join(f'{100 * a:.2f}' for a in curve)}",
        "",
        "## Rounds",
        "",
        "| round | seconds | best val acc | round max | round median | diverged |",
        "|---|---|---|---|---|---|",
    ]
    for r in rounds:
        median = "-" if r["median_fitness"] is None else f"{r['median_fitness']:.4f}"
        lines.append(f"| {r['round'] + 1} | {r['seconds']:.1f} | {r['best_fitness']:.4f} | "
                     f"{r['round_best_fitness']:.4f} | {median} | {r['diverged']} |")
    lines += ["", "Search space:", "", "```", space.describe(), "```", ""]
    results.write_text(args.out / "report.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
