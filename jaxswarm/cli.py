"""Command line: `jaxswarm run`, `jaxswarm plot`.

Settings come from (later wins): built-in defaults, a study file (`--config
study.toml` or `.yaml`), then flags. A study file holds the same names as the
flags (with underscores) plus `[space]` (`space = "mlp"` or `"cnn"` and the
arguments of `space.mlp_space` / `cnn.cnn_space`) and
`[pso]` (arguments of `pso.make_pso`) tables, e.g.::

    dataset = "fashion_mnist"
    swarm_size = 32
    rounds = 10
    epochs = 5
    [space]
    max_layers = 3
    units = [16, 256]
    activations = ["relu", "tanh", "elu"]
    learning_rate = [1e-4, 1e-1]
    [pso]
    topology = "ring"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

STUDY_KEYS = ("swarm_size", "rounds", "epochs", "batch_size", "folds", "mode", "init",
              "fitness", "patience", "seed", "retrain", "retrain_epochs", "layout", "chunk_size", "memory_cap_gb")
SPACE_KEYS = ("space", "max_layers", "units", "activations", "learning_rate", "optimizers", "momentum",
              "weight_decay", "dropout", "batch_norm", "lr_decay")
PSO_KEYS = ("topology", "neighbors", "inertia", "c1", "c2", "constriction", "vmax", "boundary")


def add_space_arguments(s) -> None:
    """The search-space flags, shared by `jaxswarm run` and `jaxswarm baseline`."""
    s.add_argument("--space", choices=("mlp", "cnn"),
                   help="mlp: layers and units; cnn: conv blocks, filters, kernels, dense head  [mlp]")
    s.add_argument("--max-layers", type=int, help="hidden layers 1..N  [3]")
    s.add_argument("--units", type=int, nargs=2, metavar=("LO", "HI"), help="units per layer, log scale  [16 256]")
    s.add_argument("--activations", nargs="+", help="activation choices  [relu tanh sigmoid elu]")
    s.add_argument("--learning-rate", type=float, nargs=2, metavar=("LO", "HI"), help="log scale  [1e-4 1e-1]")
    s.add_argument("--optimizers", nargs="+", help="optimizer choices (sgd momentum nesterov rmsprop adagrad adam adamw)  [adam only]")
    s.add_argument("--momentum", type=float, nargs=2, metavar=("LO", "HI"), help="tune momentum / beta1  [off: 0.9]")
    s.add_argument("--weight-decay", type=float, nargs=2, metavar=("LO", "HI"), help="tune weight decay, log scale  [off]")
    s.add_argument("--dropout", type=float, nargs=2, metavar=("LO", "HI"), help="tune dropout rate  [off]")
    s.add_argument("--batch-norm", action="store_const", const=True, help="let the swarm switch batch norm on/off")
    s.add_argument("--lr-decay", type=float, nargs=2, metavar=("LO", "HI"),
                   help="tune the final/initial learning-rate ratio of a cosine schedule, log scale  [off: constant]")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxswarm", description=(
        "Tune neural-network hyperparameters with Particle Swarm Optimization, "
        "training the whole swarm at once as one jit+vmap program."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a PSO study (default: digits, MLP space, about 25 s on 2 CPU cores)",
                         description="Run a PSO study; writes results to --out (see README: results).",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = run.add_argument_group("study")
    g.add_argument("--config", type=Path, help="study file (.toml, .yaml/.yml) with any of these settings")
    g.add_argument("--dataset", help="digits (embedded) | mnist | fashion_mnist  [default: digits]")
    g.add_argument("--data-dir", type=Path, help="directory holding MNIST-format IDX .gz files")
    g.add_argument("--out", type=Path, help="results directory  [default: runs/<dataset>-<time>]")
    g.add_argument("--resume", type=Path, metavar="DIR", help="continue the killed study in DIR")
    g.add_argument("--swarm-size", type=int, help="particles (networks trained at once)  [16]")
    g.add_argument("--rounds", type=int, help="PSO iterations  [8]")
    g.add_argument("--epochs", type=int, help="training epochs per evaluation  [10]")
    g.add_argument("--batch-size", type=int, help="minibatch size  [64]")
    g.add_argument("--folds", type=int, help="1: hold-out validation; k>1: k-fold CV on train+val  [1]")
    g.add_argument("--mode", choices=("fresh", "warm"), help="fresh weights each round, or keep them (PBT-like)  [fresh]")
    g.add_argument("--layout", choices=("masked", "packed", "serial"),
                   help="masked: one vmapped max-size program per study; packed: first layers packed into one "
                        "matmul, deeper layers in width groups (faster rounds on image data, recompiles "
                        "when the layout changes; no batch norm/dropout/folds/warm); serial: members one "
                        "after another in one program, each running only its own blocks (the CNN's "
                        "choice on CPU)  [masked]")
    g.add_argument("--init", choices=("lhs", "sobol", "uniform"), help="initial design  [lhs: maximin Latin hypercube]")
    g.add_argument("--fitness", choices=("accuracy", "loss"), help="validation accuracy or minus loss  [accuracy]")
    g.add_argument("--patience", type=int, help="stop after this many rounds without improvement  [off]")
    g.add_argument("--seed", type=int, help="random seed: same seed, same study  [0]")
    g.add_argument("--no-retrain", dest="retrain", action="store_const", const=False,
                   help="skip the final retrain of the best config on train+val (no test accuracy)")
    g.add_argument("--retrain-epochs", type=int, help="epochs of the final retrain  [the search's --epochs]")
    g.add_argument("--val-fraction", type=float, help="share of the training set held out for validation  [0.1]")
    g.add_argument("--quiet", action="store_true", help="no progress bar or round lines")
    g.add_argument("--chunk-size", type=int, help="members per device trained at once  [planned from memory]")
    g.add_argument("--memory-cap-gb", type=float, help="per-device memory cap for that plan  [the device's]")
    g.add_argument("--distributed", action="store_true",
                   help="multi-host: call jax.distributed.initialize first (JAXSWARM_COORDINATOR, "
                        "JAXSWARM_NUM_PROCESSES, JAXSWARM_PROCESS_ID, or SLURM/Open MPI auto-detection)")

    add_space_arguments(run.add_argument_group("search space"))

    q = run.add_argument_group("PSO")
    q.add_argument("--topology", choices=("global", "ring", "von_neumann"), help="neighbourhood  [global]")
    q.add_argument("--neighbors", type=int, help="ring neighbourhood size  [2]")
    q.add_argument("--inertia", type=float, nargs="+", metavar="W",
                   help="constant inertia, or START END for linear decay  [0.7298]")
    q.add_argument("--c1", type=float, help="cognitive coefficient  [1.49618]")
    q.add_argument("--c2", type=float, help="social coefficient  [1.49618]")
    q.add_argument("--constriction", action="store_const", const=True, help="Clerc-Kennedy constriction factor")
    q.add_argument("--vmax", type=float, help="velocity clamp, fraction of the box  [0.5]")
    q.add_argument("--boundary", choices=("clip", "reflect", "random"), help="out-of-box handling  [reflect]")

    pl = sub.add_parser("plot", help="draw progress.png and positions.png for a results directory")
    pl.add_argument("dir", type=Path)

    from jaxswarm import baselines

    baselines.add_parser(sub)
    return p


def _read_config(path: Path) -> dict:
    if not path.exists():
        raise SystemExit(f"jaxswarm: error: study file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error becomes one message
        raise SystemExit(f"jaxswarm: error: cannot parse study file {path}: {e}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"jaxswarm: error: study file {path} must hold a table of settings")
    known = set(STUDY_KEYS) | {"dataset", "data_dir", "out", "val_fraction", "space", "pso"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SystemExit(f"jaxswarm: error: unknown setting(s) {unknown} in {path}; known: {sorted(known)}")
    return data


def settings_from_args(args: argparse.Namespace) -> dict:
    """Merges defaults < study file < flags into one dict with `space` and `pso` tables."""
    cfg: dict = {"dataset": "digits", "space": {}, "pso": {}}
    if args.config is not None:
        file_cfg = _read_config(args.config)
        cfg.update({k: v for k, v in file_cfg.items() if k not in ("space", "pso")})
        cfg["space"].update(file_cfg.get("space", {}))
        cfg["pso"].update(file_cfg.get("pso", {}))
    flags = vars(args)
    for k in STUDY_KEYS + ("dataset", "data_dir", "out", "val_fraction"):
        if flags.get(k) is not None:
            cfg[k] = flags[k]
    for k in SPACE_KEYS:
        if flags.get(k) is not None:
            cfg["space"][k] = flags[k]
    for k in PSO_KEYS:
        if flags.get(k) is not None:
            cfg["pso"][k] = flags[k]
    inertia = cfg["pso"].get("inertia")
    if isinstance(inertia, (list, tuple)):
        if len(inertia) not in (1, 2):
            raise SystemExit("jaxswarm: error: --inertia takes one value or START END")
        cfg["pso"]["inertia"] = inertia[0] if len(inertia) == 1 else tuple(inertia)
    for k in ("units", "learning_rate", "momentum", "weight_decay", "dropout", "lr_decay"):
        if isinstance(cfg["space"].get(k), list):
            cfg["space"][k] = tuple(cfg["space"][k])
    return cfg


def run(args: argparse.Namespace) -> int:
    if args.distributed:
        from jaxswarm import scale

        scale.initialize_distributed()
    from jaxswarm.data import DatasetError, load_dataset
    from jaxswarm.tuner import Study, StudyConfig, StudyError

    if args.resume is not None:
        import json

        study_file = args.resume / "study.json"
        if not study_file.exists():
            raise SystemExit(f"jaxswarm: error: --resume: {args.resume} holds no study.json; nothing to resume")
        cfg = json.loads(study_file.read_text()).get("settings")
        if cfg is None:
            raise SystemExit(f"jaxswarm: error: --resume: {study_file} was not written by `jaxswarm run`")
        out = args.resume
    else:
        cfg = settings_from_args(args)
        out = cfg.get("out") or Path("runs") / f"{cfg['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        space = build_space(cfg["space"])
        study_cfg = StudyConfig(**{k: cfg[k] for k in STUDY_KEYS if k in cfg}, pso=dict(cfg["pso"]))
        study_cfg.validate()
        dataset = load_dataset(cfg["dataset"], data_dir=cfg.get("data_dir"),
                               val_fraction=cfg.get("val_fraction", 0.1), seed=study_cfg.seed)
        study = Study(space, dataset, study_cfg, out, progress=not args.quiet, settings=_json_settings(cfg))
        result = study.run(resume=args.resume is not None)
    except (DatasetError, StudyError, ValueError, TypeError) as e:
        print(f"jaxswarm: error: {e}", file=sys.stderr)
        return 2
    print(f"results in {result.out_dir}")
    return 0


def build_space(settings: dict):
    """The search space from the [space] settings: `space = "mlp"` (default) or `"cnn"`."""
    from jaxswarm.cnn import cnn_space
    from jaxswarm.space import mlp_space

    settings = dict(settings)
    kind = settings.pop("space", "mlp")
    if kind == "cnn":
        mlp_only = sorted(set(settings) & {"max_layers", "units"})
        if mlp_only:
            raise ValueError(f"{mlp_only} apply to the mlp space, not to space 'cnn'")
        return cnn_space(**settings)
    if kind != "mlp":
        raise ValueError(f"space must be 'mlp' or 'cnn', got {kind!r}")
    return mlp_space(**settings)


def _json_settings(cfg: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run(args)
    if args.command == "baseline":
        from jaxswarm import baselines

        return baselines.main(args)
    if args.command == "plot":
        from jaxswarm import report

        written = report.plot(args.dir)
        if not written:
            print("jaxswarm: nothing plotted (install the plot extra: pip install 'jaxswarm[plot]', "
                  f"and check {args.dir} holds rounds.jsonl)", file=sys.stderr)
            return 1
        print("\n".join(str(p) for p in written))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
