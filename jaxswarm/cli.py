"""Command line: `jaxswarm run`, `jaxswarm baseline`, `jaxswarm calibrate`, `jaxswarm plot`, ...

Settings come from (later wins): built-in defaults (`study.StudyConfig`, the
family's preset space, `pso.make_pso`), a study file (`--config study.toml`,
`.yaml`/`.yml` or `.json`), then flags. A study file holds the same names as the
flags (with underscores) plus `[space]` (`space = "mlp"` or another family of
`models.FAMILIES`, and the arguments of its preset space), `[pso]`
(arguments of `pso.make_pso`, for strategy "pso") and `[strategy_options]`
(another strategy's settings, e.g. an Optuna sampler's keyword arguments) tables;
an unknown name is an error, e.g.::

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

Bad input is one line on stderr, ``jaxswarm: error: ...``, naming the setting,
checked before any data is loaded where it can be. Exit codes: 0 ok, 2 bad input
(settings, study file, data, results directory; argparse's own errors too), 1 a
study (or baseline) that started and then failed, or ``plot`` with nothing to plot.
`--resume DIR` continues the study in DIR with its own saved settings and the
cost model it recorded; flags that would change it are refused (``--quiet`` and
``--distributed`` are allowed). `jaxswarm calibrate` measures this machine's
cost model (`costs`) and saves it where studies read it. `jaxswarm export-optuna DIR` builds a
results directory's Optuna record (`optuna_record`) again from its files.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np

from jaxswarm import costs, design, execute, optuna_record, results
from jaxswarm import pso as pso_lib
from jaxswarm.data import DATASETS, DatasetError, load_dataset
from jaxswarm.task import TaskError, load_task
from jaxswarm.layouts import LAYOUT_NAMES, auto
from jaxswarm.models import DEFAULT_FAMILY, FAMILIES
from jaxswarm.models.layers import INIT_SCHEMES
from jaxswarm.optim import OPTIMIZERS
from jaxswarm.schedules import SCHEDULES
from jaxswarm.saved import MODEL_DIR, ModelError, TaskModel, load_model, model_leftovers
from jaxswarm.strategies import OPTUNA_DB, STRATEGIES
from jaxswarm.study import MODES, Study, StudyConfig, StudyError
from jaxswarm.train import FITNESS_KINDS
from jaxswarm.tuners import BACKENDS, TUNERS, BaselineError, run_baseline

__all__ = ["build_parser", "settings_from_args", "build_space", "main"]

STUDY_KEYS = ("swarm_size", "rounds", "epochs", "batch_size", "folds", "mode", "init",
              "fitness", "patience", "seed", "retrain", "retrain_epochs", "layout", "chunk_size", "memory_cap_gb",
              "allow_huge", "strategy", "schedule", "eta", "min_epochs", "pbt_interval", "pbt_fraction",
              "pbt_perturb", "pbt_architecture")
SPACE_KEYS = ("space", "max_layers", "units", "activations", "learning_rate", "optimizers", "momentum",
              "weight_decay", "dropout", "batch_norm", "lr_decay", "beta2", "eps", "init_schemes",
              "per_layer_activation", "batch_sizes")
PSO_KEYS = ("topology", "neighbors", "inertia", "c1", "c2", "constriction", "vmax", "boundary")
DATA_KEYS = ("dataset", "data_dir", "val_fraction")
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
TABLES = ("space", "pso", "strategy_options")  # a study file's tables of settings
# What `jaxswarm baseline` reads from a study file besides data, out, [space] and [pso]; swarm_size and
# init only for the tuners that take them (any other `jaxswarm run` setting would be ignored, so it is refused).
BASELINE_KEYS = ("epochs", "batch_size", "fitness", "seed", "retrain", "swarm_size", "init", "eta", "min_epochs")
TUNER_OPTION_KEYS = ("init", "eta", "min_epochs")  # read only by the tuners whose options name them


class InputError(Exception):
    """Bad input on the command line or in a study file: `main` prints it as one line and returns 2."""


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
    s.add_argument("--beta2", type=float, nargs=2, metavar=("LO", "HI"),
                   help="tune adam/adamw/nadam's second-moment decay b2 in [0, 1)  [off: 0.999]")
    s.add_argument("--eps", type=float, nargs=2, metavar=("LO", "HI"),
                   help="tune adam/adamw/nadam's eps, log scale  [off: 1e-8]")
    s.add_argument("--init-schemes", nargs="+", choices=INIT_SCHEMES, metavar="NAME",
                   help=f"kernel initialization choices ({' '.join(INIT_SCHEMES)})  "
                        "[off: auto, He for rectifiers and LeCun otherwise]")
    s.add_argument("--per-layer-activation", action="store_const", const=True,
                   help="tune one activation per hidden layer or conv block (activation_1, activation_2, ...)  "
                        "[off: one]")
    s.add_argument("--batch-sizes", type=int, nargs="+", metavar="B",
                   help="batch size choices, each member its own (e.g. 32 64 128; replaces --batch-size; not with "
                        "--batch-norm)  [off: --batch-size]")


def _add_data_arguments(g) -> None:
    g.add_argument("--dataset", help=f"{' | '.join(DATASETS)} (digits is embedded)  [digits]")
    g.add_argument("--data-dir", type=Path, help="directory holding MNIST-format IDX .gz files")
    g.add_argument("--val-fraction", type=float, help="share of the training set held out for validation  [0.1]")


def _add_storage_argument(g, note: str) -> None:
    g.add_argument("--storage", type=_storage_url, metavar="URL",
                   help=f"Optuna storage URL of the Optuna record, one trial per evaluation, for optuna-dashboard "
                        f"({note})  [sqlite:///DIR/{OPTUNA_DB}]")


def _storage_url(url: str) -> str:
    """--storage's value, refused (argparse's error, exit 2) where optuna is not installed."""
    if importlib.util.find_spec("optuna") is None:
        raise argparse.ArgumentTypeError("the Optuna record needs optuna: pip install 'jaxswarm[optuna]'")
    return url


def _add_run_parser(sub) -> None:
    run = sub.add_parser("run", help="run a study (default: PSO, digits, MLP space)",
                         description="Run a study; writes results to --out (see README: results).")
    g = run.add_argument_group("study")
    g.add_argument("--config", type=Path, help="study file (.toml, .yaml/.yml, .json) with any of these settings")
    _add_data_arguments(g)
    g.add_argument("--task", metavar="MODULE:ATTR",
                   help="your own network, loss and data: a jaxswarm Task (or a function returning one) to tune "
                        "in place of --dataset and the built-in networks; the space searched is its Task.space")
    g.add_argument("--out", type=Path, help="results directory  [runs/<dataset>-<time>]")
    _add_storage_argument(g, "not saved: give it again with --resume")
    g.add_argument("--resume", type=Path, metavar="DIR", help="continue the killed study in DIR")
    g.add_argument("--swarm-size", type=int, help=f"particles (networks trained at once)  {_show(_STUDY.swarm_size)}")
    g.add_argument("--rounds", type=int, help=f"rounds (PSO iterations)  {_show(_STUDY.rounds)}")
    g.add_argument("--strategy", choices=tuple(STRATEGIES),
                   help="what the swarm trains next: " + "; ".join(f"{k}: {v.help}" for k, v in STRATEGIES.items())
                        + f" (Optuna's keep their study in --out/{OPTUNA_DB}; a study file's [strategy_options] "
                        f"are their settings)  {_show(_STUDY.strategy)}")
    g.add_argument("--epochs", "--max-epochs", dest="epochs", type=int,
                   help=f"training epochs per evaluation (with a schedule: the top rung's)  {_show(_STUDY.epochs)}")
    g.add_argument("--batch-size", type=int, help=f"minibatch size  {_show(_STUDY.batch_size)}")
    g.add_argument("--folds", type=int,
                   help=f"1: hold-out validation; k>1: k-fold CV on train+val  {_show(_STUDY.folds)}")
    g.add_argument("--mode", choices=MODES, help=f"fresh weights each round, or keep them  {_show(_STUDY.mode)}")
    g.add_argument("--schedule", choices=SCHEDULES,
                   help="inside each round: sha (successive halving: every member trains --min-epochs, the "
                        "best 1/eta go on from their own weights, ... up to --epochs), hyperband (sha with "
                        "another --min-epochs bracket each round) or pbt (every --pbt-interval epochs the worst "
                        "members continue from a copy of a better one, its hyperparameters perturbed)  "
                        f"{_show(_STUDY.schedule)}")
    g.add_argument("--eta", type=int, help=f"a rung keeps the best 1/eta of the one before  {_show(_STUDY.eta)}")
    g.add_argument("--min-epochs", type=int,
                   help="the first rung's epochs (hyperband: the lowest bracket's)  [epochs // eta**2, at least 1]")
    g.add_argument("--pbt-interval", type=int, help="pbt: epochs between exploits  [epochs // 4, at least 1]")
    g.add_argument("--pbt-fraction", type=float,
                   help=f"pbt: the bottom fraction copies a member of the top fraction  {_show(_STUDY.pbt_fraction)}")
    g.add_argument("--pbt-perturb", type=float,
                   help="pbt: a copied position moves up to this much per dimension of the unit box  "
                        f"{_show(_STUDY.pbt_perturb)}")
    g.add_argument("--pbt-architecture", dest="pbt_architecture", action="store_const", const=True,
                   help="pbt: the perturbation may change the architecture (such a copy starts from new weights; "
                        "by default the copy keeps its source's architecture and weights)")
    g.add_argument("--layout", choices=LAYOUT_NAMES,
                   help="auto: picked once per study from the backend and a cost estimate (the choice and "
                        "its reason are logged); masked: one vmapped max-size program per study; packed: "
                        "MLP first layers packed into one matmul, deeper layers in width groups (far less "
                        "arithmetic on image data; recompiles when the swarm leaves its plans; one "
                        "device); serial: members one after another in one program, each running only its "
                        f"own blocks (the CNN's choice on CPU)  {_show(_STUDY.layout)}")
    g.add_argument("--init", choices=tuple(design.DESIGNS),
                   help="initial design where pso and evosax_de/evosax_pso start (lhs: maximin Latin hypercube)  "
                        f"{_show(_STUDY.init)}")
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
    g.add_argument("--allow-huge", dest="allow_huge", action="store_const", const=True,
                   help="run a swarm even when its estimated memory is over 64x a device's (many chunks, slow)")
    g.add_argument("--distributed", action="store_true",
                   help="multi-host: call jax.distributed.initialize first (JAXSWARM_COORDINATOR, "
                        "JAXSWARM_NUM_PROCESSES, JAXSWARM_PROCESS_ID, or SLURM/Open MPI auto-detection)")
    add_space_arguments(run.add_argument_group("search space"))
    q = run.add_argument_group("PSO (strategy pso)")
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
    g.add_argument("--config", type=Path, help="study file (.toml, .yaml/.yml, .json) as for `jaxswarm run`")
    _add_data_arguments(g)
    g.add_argument("--out", type=Path, help="results directory  [runs/<tuner>-<dataset>-<time>]")
    _add_storage_argument(g, "a trial after each evaluation")
    g.add_argument("--epochs", "--max-epochs", dest="epochs", type=int,
                   help=f"training epochs per evaluation (with a schedule: the top rung's)  {_show(_STUDY.epochs)}")
    g.add_argument("--batch-size", type=int, help=f"minibatch size  {_show(_STUDY.batch_size)}")
    g.add_argument("--fitness", choices=FITNESS_KINDS,
                   help=f"validation accuracy or minus loss  {_show(_STUDY.fitness)}")
    g.add_argument("--seed", type=int, help=f"random seed  {_show(_STUDY.seed)}")
    g.add_argument("--swarm-size", type=int, help="pso / optunity: particles  [pso 16, optunity its own]")
    g.add_argument("--eta", type=int, help="tpe_sha / tpe_hyperband: the pruner's reduction factor  [3]")
    g.add_argument("--min-epochs", type=int, help="tpe_sha / tpe_hyperband: the first rung's epochs  [1]")
    g.add_argument("--no-retrain", dest="retrain", action="store_const", const=False,
                   help="skip the final retrain of the best config on train+val")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--backend", choices=tuple(BACKENDS), default="jax",
                   help="what trains each configuration: jax (one jit per configuration) or torch (PyTorch eager, "
                        "nothing compiled; pip install torch==2.13.0); the winner's retrain is JAX's  [jax]")
    add_space_arguments(p.add_argument_group("search space, as for `jaxswarm run`"))


def build_parser() -> argparse.ArgumentParser:
    """The `jaxswarm` argument parser (subcommands run, baseline, calibrate, plot, predict, show, export-optuna)."""
    p = argparse.ArgumentParser(prog="jaxswarm", description=(
        "Tune neural-network hyperparameters with Particle Swarm Optimization, "
        "training the whole swarm at once as one jit+vmap program."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parser(sub)
    _add_baseline_parser(sub)
    ca = sub.add_parser("calibrate", help="measure this machine's cost model (what layout auto weighs) and save it",
                        description="Measure the training rate and compile times that layout auto and the packed "
                                    "plans weigh, on this machine (seconds; run it on a quiet machine), and save "
                                    f"them where studies read them (${costs.ENV}, else {costs.DEFAULT_PATH}).")
    ca.add_argument("--tiny", action="store_true", help="toy sizes: a few seconds, rough figures (a smoke test)")
    ca.add_argument("--output", type=Path, help=f"file to write  [${costs.ENV}, else {costs.DEFAULT_PATH}]")
    pl = sub.add_parser("plot", help="draw progress.png and positions.png for a results directory")
    pl.add_argument("dir", type=Path)
    pr = sub.add_parser("predict", help="predict with a study's retrained winner (its results directory's model/)",
                        description="Predict the class of each row of --input with the model a study saved.")
    pr.add_argument("dir", type=Path, help="results directory (or its model/ folder)")
    pr.add_argument("--input", type=Path, required=True, help=".npy, .npz (its first array, or 'x') or .csv rows")
    pr.add_argument("--output", type=Path, help=".npy or .csv file  [stdout: one label per line]")
    pr.add_argument("--proba", action="store_true", help="class probabilities instead of labels")
    sh = sub.add_parser("show", help="print a study's summary: best config, fitness, test accuracy, rounds, time")
    sh.add_argument("dir", type=Path)
    ex = sub.add_parser("export-optuna", help="build a results directory's Optuna record again from its files",
                        description="Build the Optuna record of a study's or a baseline's results directory (one "
                                    "trial per evaluation; a study keeps it in step as it runs) again from its "
                                    "study.json and evaluations.jsonl, for optuna-dashboard and Optuna's tools.")
    ex.add_argument("dir", type=Path)
    _add_storage_argument(ex, "a record there already is replaced")
    return p


def _read_config(path: Path) -> dict:
    """The settings of a study file, its names and the kinds of its values checked.

    Args:
      path: a .toml, .yaml/.yml or .json file.

    Returns:
      The file's settings; ``space``, ``pso`` and ``strategy_options``, when present, are tables (dicts).

    Raises:
      InputError: the file is missing, empty, unreadable or not parsable, or holds
        an unknown name or a value of the wrong kind.
    """
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise InputError(f"study file {path}: unknown suffix {path.suffix!r}; use one of {', '.join(CONFIG_SUFFIXES)}")
    if not path.is_file():
        raise InputError(f"study file {path} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read study file {path}: {e}") from None
    if not text.strip():
        raise InputError(f"study file {path} is empty")
    try:
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise InputError(f"study file {path}: reading YAML needs PyYAML (pip install pyyaml)") from None
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse error becomes one message
        raise InputError(f"cannot parse study file {path}: {_one_line(e)}") from None
    if not isinstance(data, dict):
        raise InputError(f"study file {path} must hold a table of settings, got {type(data).__name__}")
    if not data:
        raise InputError(f"study file {path} holds no settings")
    known = set(STUDY_KEYS) | set(DATA_KEYS) | {"out", *TABLES}
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise InputError(f"unknown setting(s) {unknown} in {path}; known: {sorted(known)}")
    for table in TABLES:
        if table in data and not isinstance(data[table], dict):
            raise InputError(f"study file {path}: [{table}] must be a table of settings, got {data[table]!r}")
    for name in ("dataset", "data_dir", "out"):
        if name in data and not isinstance(data[name], str):
            raise InputError(f"study file {path}: {name} must be a string, got {data[name]!r}")
    fraction = data.get("val_fraction", 0.1)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise InputError(f"study file {path}: val_fraction must be a number, got {fraction!r}")
    return data


def settings_from_args(args: argparse.Namespace) -> dict:
    """Merges defaults < study file < flags into one dict with `space`, `pso` and `strategy_options` tables."""
    cfg: dict = {"dataset": "digits", **{table: {} for table in TABLES}}
    if args.config is not None:
        file_cfg = _read_config(args.config)
        cfg.update({k: v for k, v in file_cfg.items() if k not in TABLES})
        for table in TABLES:
            cfg[table].update(file_cfg.get(table, {}))
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
    if flags.get("task") is not None:
        # The defaults' dataset aside, any data or space setting (a flag or the study file's) would be ignored.
        given = [k for k in DATA_KEYS if k in cfg and (k, cfg[k]) != ("dataset", "digits")] + sorted(cfg["space"])
        if given:
            raise InputError(f"--task brings its own data and space (Task.data, Task.space): drop the "
                             f"setting(s) {', '.join(given)}")
        cfg.update(task=flags["task"], dataset="task")
    inertia = cfg["pso"].get("inertia")
    if isinstance(inertia, (list, tuple)):
        if len(inertia) not in (1, 2):
            raise InputError(f"--inertia takes one value or START END, got {inertia!r}")
        cfg["pso"]["inertia"] = inertia[0] if len(inertia) == 1 else tuple(inertia)
    for k in ("units", "learning_rate", "momentum", "weight_decay", "dropout", "lr_decay", "beta2", "eps",
              "batch_sizes"):
        if isinstance(cfg["space"].get(k), list):
            cfg["space"][k] = tuple(cfg["space"][k])
    sizes = cfg["space"].get("batch_sizes")
    if cfg.get("batch_size") is not None and isinstance(sizes, tuple) and len(set(sizes)) > 1:
        raise InputError(f"--batch-size {cfg['batch_size']} and --batch-sizes {' '.join(map(str, sizes))} both "
                         "set the minibatch: each member trains with its own from --batch-sizes; drop --batch-size")
    return cfg


def _flag(dest: str) -> str:
    """The command-line flag of a setting: ``--swarm-size`` for swarm_size (``--no-retrain`` for retrain)."""
    return "--no-retrain" if dest == "retrain" else "--" + dest.replace("_", "-")


INTERRUPTED = 130  # exit code after Ctrl-C (128 + SIGINT), as shells report it


def _one_line(e: BaseException) -> str:
    """An exception's message on one line (YAML and XLA messages span several)."""
    return " ".join(str(e).split())


def _resume_settings(args: argparse.Namespace) -> dict:
    """The saved settings of the study in ``args.resume``.

    Raises:
      InputError: a flag that would change the study, or no readable study.json
        of `jaxswarm run` in the directory.
    """
    flags = vars(args)
    changed = [_flag(k) for k in STUDY_KEYS + SPACE_KEYS + PSO_KEYS + DATA_KEYS + ("config", "out", "task")
               if flags.get(k) is not None]
    if changed:  # the checkpoint belongs to the saved settings: a changed one would silently not apply
        raise InputError(f"--resume continues the study in {args.resume} with its saved settings; it cannot take "
                         f"{' '.join(changed)} (only --quiet and --distributed go with it)")
    study_file = args.resume / results.STUDY
    if not study_file.is_file():
        raise InputError(f"--resume: {args.resume} holds no {results.STUDY}; nothing to resume")
    try:
        saved = json.loads(study_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"--resume: cannot read {study_file} (cut short, or not JSON): {_one_line(e)}") from None
    if isinstance(saved, dict) and "tuner" in saved:
        raise InputError(f"--resume: {study_file} was written by `jaxswarm baseline`, which cannot be resumed")
    cfg = saved.get("settings") if isinstance(saved, dict) else None
    if not (isinstance(cfg, dict) and isinstance(cfg.get("dataset"), str)
            and isinstance(cfg.get("space"), dict) and isinstance(cfg.get("pso"), dict)):
        raise InputError(f"--resume: {study_file} was not written by `jaxswarm run`")
    # The cost model the study planned with, not this machine's current one: the same plans, the same
    # results. A study recorded before cost models existed planned with the built-in figures.
    recorded = saved.get("config") if isinstance(saved.get("config"), dict) else {}
    return {**cfg, "cost_model": recorded.get("cost_model") or costs.BUILTIN._asdict()}


def _failed(what: str, e: Exception) -> int:
    """Reports a study or baseline that started and then failed, in one line; returns exit code 1."""
    print(f"jaxswarm: error: {what} failed: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    """`jaxswarm run`: returns the exit code (0 ok, 1 the study started and failed).

    Raises:
      InputError: bad settings, data or results directory (exit code 2).
    """
    if args.resume is not None:
        cfg = _resume_settings(args)
        out = args.resume
    else:
        cfg = settings_from_args(args)
        out = cfg.get("out") or Path("runs") / f"{cfg['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.distributed:
        execute.initialize_distributed()  # before any computation touches a device
    try:
        # A study saved before strategies existed has no strategy_options table.
        study_cfg = StudyConfig(**{k: cfg[k] for k in STUDY_KEYS if k in cfg}, pso=dict(cfg["pso"]),
                                strategy_options=dict(cfg.get("strategy_options", {})),
                                cost_model=cfg.get("cost_model"))  # None: this machine's (a resume: the recorded)
        study_cfg.validate()  # before the data: a bad setting fails in a second
        if args.resume is not None:
            print(f"resuming {out}")
        if cfg.get("task") is not None:
            dataset = load_task(cfg["task"])
            if dataset.space is None:
                raise ValueError(f"task {cfg['task']} has no space to search: set Task.space")
            space = dataset.space
        else:
            space = build_space(cfg["space"])
            dataset = load_dataset(cfg["dataset"], data_dir=cfg.get("data_dir"),
                                   val_fraction=cfg.get("val_fraction", 0.1), seed=study_cfg.seed)
        study = Study(space, dataset, study_cfg, out, progress=not args.quiet, settings=_json_settings(cfg),
                      storage=args.storage)
    except (DatasetError, StudyError, ValueError, TypeError) as e:
        raise InputError(e) from None
    try:
        result = study.run(resume=args.resume is not None)
    except (StudyError, results.FolderLocked) as e:  # the results folder: not writable, a study's, locked
        raise InputError(e) from None
    except TaskError as e:  # the task's own code (model, loss, metrics) failed: bad input, one line
        raise InputError(f"your task failed in the study in {out}: {e}") from None
    except (results.CheckpointError, ModelError) as e:  # writing its files failed (a full disk): one line
        print(f"jaxswarm: error: the study in {out} stopped: {e}; free space and continue with "
              f"`jaxswarm run --resume {out}`", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # its checkpoints stay: one line says how to go on, no traceback
        print(f"\njaxswarm: interrupted; the rounds done are saved: continue with `jaxswarm run --resume {out}`",
              file=sys.stderr)
        return INTERRUPTED
    except Exception as e:  # noqa: BLE001 - it started: its checkpoints stay for --resume
        return _failed(f"the study in {out}", e)
    print(f"results in {result.out_dir}")
    status = result.status
    if status != "ok":  # it ran to the end without a result, e.g. every evaluation diverged
        print(f"jaxswarm: error: the study in {out} ran but found nothing ({status})", file=sys.stderr)
        return 1
    return 0


def baseline(args: argparse.Namespace) -> int:
    """`jaxswarm baseline`: returns the exit code (0 ok, 1 the baseline started and failed).

    Raises:
      InputError: bad settings, data or results directory (exit code 2).
    """
    cfg = settings_from_args(args)
    tuner = TUNERS[args.tuner]
    unused = [k for k in STUDY_KEYS if k in cfg and k not in BASELINE_KEYS]
    unused += [k for k in TUNER_OPTION_KEYS if k in cfg and k not in tuner.options]
    if unused:  # they would be ignored
        raise InputError(f"{args.config or 'the command line'} sets {', '.join(unused)}, which "
                         f"`jaxswarm baseline --tuner {args.tuner}` does not use")
    if "swarm_size" in cfg and "swarm_size" not in tuner.options:
        takers = " and ".join(name for name, t in TUNERS.items() if "swarm_size" in t.options)
        where = "--swarm-size" if args.swarm_size is not None else f"swarm_size in {args.config}"
        raise InputError(f"{where} applies to {takers}, not {args.tuner}")
    if cfg["pso"] and "pso" not in tuner.options:
        raise InputError(f"[pso] in {args.config} applies to the pso tuner, not {args.tuner}")
    if cfg["strategy_options"]:
        raise InputError(f"[strategy_options] in {args.config} applies to `jaxswarm run`, not to a baseline")
    if args.budget is None and args.time_limit is None:
        raise InputError("give --budget N (configurations to train) or --time-limit SECONDS, or both")
    if args.budget is not None and args.budget < 1:
        raise InputError(f"--budget must be an integer >= 1, got {args.budget}")
    if args.time_limit is not None and not args.time_limit > 0:
        raise InputError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
    kwargs = {k: cfg[k] for k in ("swarm_size", *TUNER_OPTION_KEYS) if k in cfg}
    if cfg["pso"]:
        kwargs["pso"] = dict(cfg["pso"])
    seed = cfg.get("seed", _STUDY.seed)
    out = cfg.get("out") or Path("runs") / f"{args.tuner}-{cfg['dataset']}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        space = build_space(cfg["space"])
        # The settings a baseline shares with a study, checked the same way (before the data).
        # eta and min_epochs are a baseline tuner's rungs: checked as a successive-halving study's are.
        shared = {k: cfg[k] for k in BASELINE_KEYS if k in cfg}
        rungs = {"schedule": "sha"} if {"eta", "min_epochs"} & set(shared) else {}
        StudyConfig(**shared, **rungs, pso=dict(cfg["pso"])).validate()
        dataset = load_dataset(cfg["dataset"], data_dir=cfg.get("data_dir"),
                               val_fraction=cfg.get("val_fraction", 0.1), seed=seed)
    except (DatasetError, ValueError, TypeError) as e:
        raise InputError(e) from None
    try:
        result = run_baseline(
            args.tuner, space, dataset, budget=args.budget, time_limit=args.time_limit, seed=seed,
            epochs=cfg.get("epochs", _STUDY.epochs), batch_size=cfg.get("batch_size", _STUDY.batch_size),
            fitness=cfg.get("fitness", _STUDY.fitness), retrain=cfg.get("retrain", True), out_dir=out,
            progress=not args.quiet, settings=_json_settings(cfg), storage=args.storage, backend=args.backend,
            **kwargs)
    except (BaselineError, results.FolderLocked) as e:  # its settings, a missing package, the results folder
        raise InputError(e) from None
    except Exception as e:  # noqa: BLE001 - it started
        return _failed(f"the {args.tuner} baseline in {out}", e)
    print(f"results in {result.out_dir}")
    return 0


def build_space(settings: dict):
    """The search space from the [space] settings: ``space`` names a family of `models.FAMILIES`."""
    settings = dict(settings)
    kind = settings.pop("space", DEFAULT_FAMILY)
    if not isinstance(kind, str) or kind not in FAMILIES:
        raise ValueError(f"space must be one of {list(FAMILIES)}, got {kind!r}")
    preset = FAMILIES[kind].space
    takes = set(inspect.signature(preset).parameters)
    unknown = sorted(set(settings) - takes)
    if unknown:
        raise ValueError(f"{unknown} do not apply to space {kind!r}; it takes {sorted(takes)}")
    return preset(**settings)


def _json_settings(cfg: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()}


def calibrate(args: argparse.Namespace) -> int:
    """`jaxswarm calibrate`: measures the cost model, saves it, prints it and where it went."""
    if args.output is not None and args.output.is_dir():
        raise InputError(f"--output {args.output} is a directory; name the file to write")
    model = auto.calibrate(tiny=args.tiny, log=print)
    try:
        path = costs.save(model, args.output)
    except OSError as e:
        raise InputError(f"cannot write the cost model: {_one_line(e)}") from None
    print(costs.describe(model))
    print(f"saved to {path}")
    try:
        current = costs.load()
    except ValueError as e:  # $JAXSWARM_COST_MODEL names another file, a bad one
        current = e
    if current != model:  # studies read another file, or $JAXSWARM_COST_MODEL is "builtin"
        read = costs.describe(current) if isinstance(current, costs.CostModel) else _one_line(current)
        print(f"studies here read {read}; set {costs.ENV}={path} to use this one")
    return 0


def plot(args: argparse.Namespace) -> int:
    """`jaxswarm plot`: returns the exit code (1: nothing to plot, and why)."""
    rounds = args.dir / results.ROUNDS
    why = None
    if not args.dir.is_dir():
        why = f"{args.dir} is not a directory"
    elif not rounds.is_file():
        why = f"{args.dir} holds no {results.ROUNDS} (not a results directory, or no round has finished)"
    elif importlib.util.find_spec("matplotlib") is None:
        why = "matplotlib is not installed (pip install 'jaxswarm[plot]')"
    else:
        try:
            written = results.plot(args.dir)
        except PermissionError as e:  # the plots are written next to the results: a read-only folder
            print(f"jaxswarm: error: cannot write the plots into {args.dir}: {e.strerror or _one_line(e)} "
                  f"({e.filename}); copy the folder somewhere writable and plot the copy", file=sys.stderr)
            return 1
        except (OSError, ValueError) as e:
            why = f"cannot read {args.dir}: {_one_line(e)}"
        else:
            if not written:
                why = f"{rounds} holds no finished round"
    if why is not None:
        print(f"jaxswarm: nothing to plot: {why}", file=sys.stderr)
        return 1
    print("\n".join(str(p) for p in written))
    return 0


def _read_rows(path: Path) -> np.ndarray:
    """The rows of an .npy, .npz or .csv file as a float array, or one InputError line."""
    if path.is_dir():
        raise InputError(f"--input {path} is a directory; name a .npy, .npz or .csv file")
    if not path.is_file():
        raise InputError(f"--input {path} does not exist")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise InputError(f"--input {path} holds no array")
                return z["x"] if "x" in z.files else z["X"] if "X" in z.files else z[z.files[0]]
        if path.suffix == ".csv":
            text = [line for line in path.read_text().splitlines() if line.strip()]
            first = text[0].split(",") if text else []
            header = bool(first) and not all(_is_float(v) for v in first)
            if len(text) <= int(header):
                raise InputError(f"--input {path} holds no rows" + (" (only a header)" if header else ""))
            return np.loadtxt(path, delimiter=",", skiprows=int(header), ndmin=2, dtype=np.float32)
    except InputError:
        raise
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read --input {path}: {_one_line(e)}") from None
    raise InputError(f"--input {path}: use a .npy, .npz or .csv file")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def predict(args: argparse.Namespace) -> int:
    """`jaxswarm predict`: labels (or probabilities) of each input row, to a file or stdout."""
    _check_output(args.output)  # before the work: a bad path fails in a second, in one line
    try:
        model = load_model(args.dir)
        if isinstance(model, TaskModel):
            return _predict_task(model, args)
        x = _read_rows(args.input)
        out = model.predict_proba(x) if args.proba else model.predict(x)
    except ModelError as e:
        raise InputError(e) from None
    if args.output is None:
        for row in out:
            print(" ".join(f"{p:.6g}" for p in row) if args.proba else row)
        return 0
    try:
        if args.output.suffix == ".npy":
            np.save(args.output, out)
        else:
            header = ",".join(str(c) for c in model.classes_) if args.proba else "label"
            np.savetxt(args.output, out if args.proba else out.reshape(-1, 1), delimiter=",", header=header,
                       comments="", fmt="%.6g" if args.proba else "%s")
    except OSError as e:
        raise InputError(f"cannot write --output {args.output}: {e.strerror or _one_line(e)}") from None
    print(f"{len(out)} predictions in {args.output}")
    return 0


def _predict_task(model: TaskModel, args: argparse.Namespace) -> int:
    """`jaxswarm predict` with your own task's model: its module's outputs on the batch --input holds (an .npz's
    arrays by name, else its rows as ``{"x": rows}``), one row per line or to --output."""
    if args.proba:
        raise InputError("--proba applies to the built-in classifiers; a task's model predicts its module's outputs")
    if args.input.suffix == ".npz" and args.input.is_file():
        try:
            with np.load(args.input, allow_pickle=False) as z:
                batch = {name: z[name] for name in z.files}
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read --input {args.input}: {_one_line(e)}") from None
    else:
        batch = {"x": _read_rows(args.input)}
    try:
        out = model.predict(batch)
    except Exception as e:  # noqa: BLE001 - the user's module on the user's batch: one line, the cause named
        raise InputError(f"the task's model cannot predict on --input {args.input} (batch {sorted(batch)}): "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(out, np.ndarray):
        raise InputError("the task's module returns a pytree, not one array: predict from Python "
                         "(load_model(dir).predict(batch))")
    rows = out.reshape(len(out), -1) if out.ndim else out.reshape(1, 1)
    if args.output is None:
        for row in rows:
            print(" ".join(f"{v:.6g}" for v in row))
        return 0
    try:
        if args.output.suffix == ".npy":
            np.save(args.output, out)
        else:
            np.savetxt(args.output, rows, delimiter=",", fmt="%.6g")
    except OSError as e:
        raise InputError(f"cannot write --output {args.output}: {e.strerror or _one_line(e)}") from None
    print(f"{len(rows)} predictions in {args.output}")
    return 0


def _check_output(output: Path | None) -> None:
    """One InputError line for a `predict --output` that cannot be written: a directory, a missing folder,
    another suffix."""
    if output is None:
        return
    if output.is_dir():
        raise InputError(f"--output {output} is a directory; name a .npy or .csv file in it")
    if output.suffix not in (".npy", ".csv"):
        raise InputError(f"--output {output}: use a .npy or .csv file (or leave it out for stdout)")
    if not output.parent.is_dir():
        raise InputError(f"--output {output}: the folder {output.parent} does not exist")


def show(args: argparse.Namespace) -> int:
    """`jaxswarm show`: a study's summary as a table."""
    best_file = args.dir / results.BEST
    if not best_file.is_file():
        raise InputError(f"{args.dir} holds no {results.BEST}: not a finished study's results directory")
    try:
        best = json.loads(best_file.read_text())
        rounds = results.read_jsonl(args.dir / results.ROUNDS)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {args.dir}: {_one_line(e)}") from None
    seconds = sum(r.get("seconds") or 0.0 for r in rounds)
    fitness = best.get("best_fitness")
    test = best.get("test_accuracy")
    objective = best.get("objective") if isinstance(best.get("objective"), dict) else None
    if objective is not None:  # your own task's: its objective's value, its test metrics by name
        value = best.get("best_value")
        scores = [(f"best {objective.get('metric')} ({objective.get('direction')})",
                   "-" if value is None else f"{value:.4g}")]
        scores += [(name.replace("_", " "), f"{v:.4g}") for name, v in (best.get("test_metrics") or {}).items()]
    else:
        scores = [(f"best {best.get('fitness', 'fitness')}", "-" if fitness is None else f"{fitness:.4f}"),
                  ("test accuracy", "-" if test is None else f"{test:.4f}")]
    table = [("status", best.get("status", "ok")), *scores,
             ("rounds", str(best.get("rounds_run", len(rounds)))),
             ("round time", f"{seconds:.1f} s"),
             *((f"  {k}", str(v)) for k, v in (best.get("hyperparameters") or best.get("best_config") or {}).items())]
    width = max(len(k) for k, _ in table)
    print(f"study {args.dir}")
    print("\n".join(f"{k:<{width}}  {v}" for k, v in table))
    model_dir = args.dir / MODEL_DIR
    if model_dir.is_dir():
        try:
            print(load_model(model_dir).describe())
        except ModelError as e:
            print(f"model: {_one_line(e)}")
    leftovers = model_leftovers(args.dir)
    if leftovers:
        print(f"model: {', '.join(f.name for f in leftovers)} left by a model save that was cut short"
              f"{'' if model_dir.is_dir() else ' (so there is no model/)'}; `jaxswarm run --resume {args.dir}` "
              "removes them and saves the model again")
    return 0


def export_optuna(args: argparse.Namespace) -> int:
    """`jaxswarm export-optuna`: the Optuna record of a results directory, built again from its files.

    Raises:
      InputError: no study or no evaluation in the directory, a storage that does not open, optuna missing.
    """
    try:
        storage, name, trials = optuna_record.export(args.dir, args.storage)
    except (optuna_record.RecordError, results.FolderLocked) as e:
        raise InputError(e) from None
    except ImportError:
        raise InputError("export-optuna needs optuna: pip install 'jaxswarm[optuna]'") from None
    except Exception as e:  # noqa: BLE001 - the storage failed while writing
        return _failed(f"writing the Optuna record of {args.dir}", e)
    print(f"{trials} trials in the Optuna study {name!r} at {storage}; see them with: optuna-dashboard {storage}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`jaxswarm COMMAND ...`: returns the exit code (0 ok, 2 bad input, 1 failed, 130 interrupted; see the
    module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        commands = {"run": run, "baseline": baseline, "calibrate": calibrate, "plot": plot, "predict": predict,
                    "show": show, "export-optuna": export_optuna}
        return commands[args.command](args)
    except InputError as e:
        print(f"jaxswarm: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before a study starts, or in another command: nothing to resume
        print(f"\njaxswarm: interrupted ({args.command})", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
