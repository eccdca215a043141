"""Command line: `jaxswarm run`, `jaxswarm baseline`, `jaxswarm plot`.

Settings come from (later wins): built-in defaults (`study.StudyConfig`, the
family's preset space, `pso.make_pso`), a study file (`--config study.toml`
or `.yaml`), then flags. A study file holds the same names as the flags (with
underscores) plus `[space]` (`space = "mlp"` or another family of
`models.FAMILIES`, and the arguments of its preset space) and `[pso]`
(arguments of `pso.make_pso`) tables, e.g.::

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
import inspect
import json
import sys
import time
from pathlib import Path

from jaxswarm import design, execute, results
from jaxswarm import pso as pso_lib
from jaxswarm.data import DATASETS, DatasetError, load_dataset
from jaxswarm.layouts import LAYOUTS
from jaxswarm.models import DEFAULT_FAMILY, FAMILIES
from jaxswarm.optim import OPTIMIZERS
from jaxswarm.study import MODES, Study, StudyConfig, StudyError
from jaxswarm.train import FITNESS_KINDS
from jaxswarm.tuners import TUNERS, BaselineError, run_baseline

__all__ = ["build_parser", "settings_from_args", "build_space", "main"]

STUDY_KEYS = ("swarm_size", "rounds", "epochs", "batch_size", "folds", "mode", "init",
              "fitness", "patience", "seed", "retrain", "retrain_epochs", "layout", "chunk_size", "memory_cap_gb")
SPACE_KEYS = ("space", "max_layers", "units", "activations", "learning_rate", "optimizers", "momentum",
              "weight_decay", "dropout", "batch_norm", "lr_decay")
PSO_KEYS = ("topology", "neighbors", "inertia", "c1", "c2", "constriction", "vmax", "boundary")

_STUDY = StudyConfig()
_SPACE = {k: p.default for k, p in inspect.signature(FAMILIES[DEFAULT_FAMILY].space).parameters.items()}
_PSO = {k: p.default for k, p in inspect.signature(pso_lib.make_pso).parameters.items()}


def _show(value) -> str:
    """A default as the help text shows it: ``[16 256]`` for pairs, ``[off]`` for None."""
    if value is None:
        return "[off]"
    if isinstance(value, (tuple, list)):
        return "[" + " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + "]"
    return f"[{value}]"


def add_space_arguments(s) -> None:
    """The search-space flags, shared by `jaxswarm run` and `jaxswarm baseline` (defaults: the MLP space)."""
    s.add_argument("--space", choices=tuple(FAMILIES),
                   help=f"model family: mlp (layers and units), cnn (conv blocks, filters, kernels, dense head)  "
                        f"[{DEFAULT_FAMILY}]")
    s.add_argument("--max-layers", type=int, help=f"hidden layers 1..N  {_show(_SPACE['max_layers'])}")
    s.add_argument("--units", type=int, nargs=2, metavar=("LO", "HI"),
                   help=f"units per layer, log scale  {_show(_SPACE['units'])}")
    s.add_argument("--activations", nargs="+", help=f"activation choices  {_show(_SPACE['activations'])}")
    s.add_argument("--learning-rate", type=float, nargs=2, metavar=("LO", "HI"),
                   help=f"log scale  {_show(_SPACE['learning_rate'])}")
    s.add_argument("--optimizers", nargs="+", help=f"optimizer choices ({' '.join(OPTIMIZERS)})  [adam only]")
    s.add_argument("--momentum", type=float, nargs=2, metavar=("LO", "HI"), help="tune momentum / beta1  [off: 0.9]")
    s.add_argument("--weight-decay", type=float, nargs=2, metavar=("LO", "HI"),
                   help="tune weight decay, log scale  [off]")
    s.add_argument("--dropout", type=float, nargs=2, metavar=("LO", "HI"), help="tune dropout rate  [off]")
    s.add_argument("--batch-norm", action="store_const", const=True, help="let the swarm switch batch norm on/off")
    s.add_argument("--lr-decay", type=float, nargs=2, metavar=("LO", "HI"),
                   help="tune the final/initial learning-rate ratio of a cosine schedule, log scale  [off: constant]")


def _add_data_arguments(g) -> None:
    g.add_argument("--dataset", help=f"{' | '.join(DATASETS)} (digits is embedded)  [digits]")
    g.add_argument("--data-dir", type=Path, help="directory holding MNIST-format IDX .gz files")
    g.add_argument("--val-fraction", type=float, help="share of the training set held out for validation  [0.1]")


def _add_run_parser(sub) -> None:
    run = sub.add_parser("run", help="run a PSO study (default: digits, MLP space)",
                         description="Run a PSO study; writes results to --out (see README: results).")
    g = run.add_argument_group("study")
    g.add_argument("--config", type=Path, help="study file (.toml, .yaml/.yml) with any of these settings")
    _add_data_arguments(g)
    g.add_argument("--out", type=Path, help="results directory  [runs/<dataset>-<time>]")
    g.add_argument("--resume", type=Path, metavar="DIR", help="continue the killed study in DIR")
    g.add_argument("--swarm-size", type=int, help=f"particles (networks trained at once)  {_show(_STUDY.swarm_size)}")
    g.add_argument("--rounds", type=int, help=f"PSO iterations  {_show(_STUDY.rounds)}")
    g.add_argument("--epochs", type=int, help=f"training epochs per evaluation  {_show(_STUDY.epochs)}")
    g.add_argument("--batch-size", type=int, help=f"minibatch size  {_show(_STUDY.batch_size)}")
    g.add_argument("--folds", type=int,
                   help=f"1: hold-out validation; k>1: k-fold CV on train+val  {_show(_STUDY.folds)}")
    g.add_argument("--mode", choices=MODES, help=f"fresh weights each round, or keep them  {_show(_STUDY.mode)}")
    g.add_argument("--layout", choices=tuple(LAYOUTS),
                   help="masked: one vmapped max-size program per study; packed: first layers packed into one "
                        "matmul, deeper layers in width groups (faster rounds on image data, recompiles "
                        "when the layout changes; no batch norm/dropout/folds/warm); serial: members one "
                        "after another in one program, each running only its own blocks (the CNN's "
                        f"choice on CPU)  {_show(_STUDY.layout)}")
    g.add_argument("--init", choices=tuple(design.DESIGNS),
                   help=f"initial design (lhs: maximin Latin hypercube)  {_show(_STUDY.init)}")
    g.add_argument("--fitness", choices=FITNESS_KINDS,
                   help=f"validation accuracy or minus loss  {_show(_STUDY.fitness)}")
    g.add_argument("--patience", type=int, help="stop after this many rounds without improvement  [off]")
    g.add_argument("--seed", type=int, help=f"random seed: same seed, same study  {_show(_STUDY.seed)}")
    g.add_argument("--no-retrain", dest="retrain", action="store_const", const=False,
                   help="skip the final retrain of the best config on train+val (no test accuracy)")
    g.add_argument("--retrain-epochs", type=int, help="epochs of the final retrain  [the search's --epochs]")
    g.add_argument("--quiet", action="store_true", help="no progress bar or round lines")
    g.add_argument("--chunk-size", type=int, help="members per device trained at once  [planned from memory]")
    g.add_argument("--memory-cap-gb", type=float, help="per-device memory cap for that plan  [the device's]")
    g.add_argument("--distributed", action="store_true",
                   help="multi-host: call jax.distributed.initialize first (JAXSWARM_COORDINATOR, "
                        "JAXSWARM_NUM_PROCESSES, JAXSWARM_PROCESS_ID, or SLURM/Open MPI auto-detection)")
    add_space_arguments(run.add_argument_group("search space"))
    q = run.add_argument_group("PSO")
    q.add_argument("--topology", choices=pso_lib.TOPOLOGIES, help=f"neighbourhood  {_show(_PSO['topology'])}")
    q.add_argument("--neighbors", type=int, help=f"ring neighbourhood size  {_show(_PSO['neighbors'])}")
    q.add_argument("--inertia", type=float, nargs="+", metavar="W",
                   help=f"constant inertia, or START END for linear decay  {_show(_PSO['inertia'])}")
    q.add_argument("--c1", type=float, help=f"cognitive coefficient  {_show(_PSO['c1'])}")
    q.add_argument("--c2", type=float, help=f"social coefficient  {_show(_PSO['c2'])}")
    q.add_argument("--constriction", action="store_const", const=True, help="Clerc-Kennedy constriction factor")
    q.add_argument("--vmax", type=float, help=f"velocity clamp, fraction of the box  {_show(_PSO['vmax'])}")
    q.add_argument("--boundary", choices=pso_lib.BOUNDARIES, help=f"out-of-box handling  {_show(_PSO['boundary'])}")


def _add_baseline_parser(sub) -> None:
    p = sub.add_parser(
        "baseline", help=f"run a sequential tuner ({', '.join(TUNERS)}) on the same objective",
        description="Run a sequential tuner on the swarm's objective, one configuration at a time; "
                    "writes the same results files as `jaxswarm run`.")
    g = p.add_argument_group("baseline")
    g.add_argument("--tuner", required=True, choices=tuple(TUNERS),
                   help="; ".join(f"{t.name}: {t.help}" for t in TUNERS.values()))
    g.add_argument("--budget", type=int, help="configurations to train")
    g.add_argument("--time-limit", type=float, help="seconds (checked between evaluations)")
    g.add_argument("--config", type=Path, help="study file (.toml, .yaml) as for `jaxswarm run`")
    _add_data_arguments(g)
    g.add_argument("--out", type=Path, help="results directory  [runs/<tuner>-<dataset>-<time>]")
    g.add_argument("--epochs", type=int, help=f"training epochs per evaluation  {_show(_STUDY.epochs)}")
    g.add_argument("--batch-size", type=int, help=f"minibatch size  {_show(_STUDY.batch_size)}")
    g.add_argument("--fitness", choices=FITNESS_KINDS,
                   help=f"validation accuracy or minus loss  {_show(_STUDY.fitness)}")
    g.add_argument("--seed", type=int, help=f"random seed  {_show(_STUDY.seed)}")
    g.add_argument("--swarm-size", type=int, help="pso / optunity: particles  [pso 16, optunity its own]")
    g.add_argument("--no-retrain", dest="retrain", action="store_const", const=False,
                   help="skip the final retrain of the best config on train+val")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_space_arguments(p.add_argument_group("search space, as for `jaxswarm run`"))


def build_parser() -> argparse.ArgumentParser:
    """The `jaxswarm` argument parser (subcommands run, baseline, plot)."""
    p = argparse.ArgumentParser(prog="jaxswarm", description=(
        "Tune neural-network hyperparameters with Particle Swarm Optimization, "
        "training the whole swarm at once as one jit+vmap program."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parser(sub)
    _add_baseline_parser(sub)
    pl = sub.add_parser("plot", help="draw progress.png and positions.png for a results directory")
    pl.add_argument("dir", type=Path)
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
    """`jaxswarm run`: returns the exit code."""
    if args.distributed:
        execute.initialize_distributed()  # before any computation touches a device
    if args.resume is not None:
        study_file = args.resume / results.STUDY
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


def baseline(args: argparse.Namespace) -> int:
    """`jaxswarm baseline`: returns the exit code."""
    cfg = settings_from_args(args)
    seed = cfg.get("seed", _STUDY.seed)
    out = cfg.get("out") or Path("runs") / f"{args.tuner}-{cfg['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    kwargs = {}
    if args.swarm_size is not None:
        if "swarm_size" not in TUNERS[args.tuner].options:
            print(f"jaxswarm: error: --swarm-size applies to pso and optunity, not {args.tuner}", file=sys.stderr)
            return 2
        kwargs["swarm_size"] = args.swarm_size
    if "pso" in TUNERS[args.tuner].options and cfg.get("pso"):
        kwargs["pso"] = dict(cfg["pso"])
    try:
        space = build_space(cfg["space"])
        dataset = load_dataset(cfg["dataset"], data_dir=cfg.get("data_dir"),
                               val_fraction=cfg.get("val_fraction", 0.1), seed=seed)
        result = run_baseline(
            args.tuner, space, dataset, budget=args.budget, time_limit=args.time_limit, seed=seed,
            epochs=cfg.get("epochs", _STUDY.epochs), batch_size=cfg.get("batch_size", _STUDY.batch_size),
            fitness=cfg.get("fitness", _STUDY.fitness), retrain=cfg.get("retrain", True), out_dir=out,
            progress=not args.quiet, settings=_json_settings(cfg), **kwargs)
    except (DatasetError, BaselineError, ValueError, TypeError) as e:
        print(f"jaxswarm: error: {e}", file=sys.stderr)
        return 2
    print(f"results in {result.out_dir}")
    return 0


def build_space(settings: dict):
    """The search space from the [space] settings: ``space`` names a family of `models.FAMILIES`."""
    settings = dict(settings)
    kind = settings.pop("space", DEFAULT_FAMILY)
    if kind not in FAMILIES:
        raise ValueError(f"space must be one of {list(FAMILIES)}, got {kind!r}")
    preset = FAMILIES[kind].space
    takes = set(inspect.signature(preset).parameters)
    unknown = sorted(set(settings) - takes)
    if unknown:
        raise ValueError(f"{unknown} do not apply to space {kind!r}; it takes {sorted(takes)}")
    return preset(**settings)


def _json_settings(cfg: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()}


def plot(args: argparse.Namespace) -> int:
    """`jaxswarm plot`: returns the exit code."""
    written = results.plot(args.dir)
    if not written:
        print("jaxswarm: nothing plotted (install the plot extra: pip install 'jaxswarm[plot]', "
              f"and check {args.dir} holds rounds.jsonl)", file=sys.stderr)
        return 1
    print("\n".join(str(p) for p in written))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"run": run, "baseline": baseline, "plot": plot}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
