"""jaxswarm: hyperparameter tuning with the whole swarm trained as one jit+vmap program, PSO or any strategy.

What a research script needs is here; the modules hold the rest (see docs/how-it-works.md).
"""

from jaxswarm.costs import CostModel
from jaxswarm.data import Dataset, DatasetError, from_arrays, kfold_indices, load_dataset
from jaxswarm.design import DESIGNS, initial_design
from jaxswarm.execute import SwarmRunner, estimate_memory, initialize_distributed, make_swarm_runner
from jaxswarm.layouts import LAYOUTS, Layout, SwarmProgram
from jaxswarm.models import FAMILIES, ModelFamily, cnn_space, family_of, mlp_space
from jaxswarm.pso import PSO, PSOState, make_pso
from jaxswarm.saved import ModelError, SavedModel, load_model
from jaxswarm.space import Choice, Fixed, Float, Int, SearchSpace
from jaxswarm.strategies import STRATEGIES, Strategy, make_strategy, optimize_batches, suggest
from jaxswarm.task import Objective, Task, TaskData, Trainable, TrainingLoop, make_engine, supervised
from jaxswarm.study import Study, StudyConfig, StudyError, StudyResult, load_result, tune
from jaxswarm.train import Data, Metrics, TrainConfig, make_dense_train, make_train
from jaxswarm.tuners import TUNERS, BaselineError, BaselineResult, Tuner, run_baseline

__version__ = "0.1.0"

__all__ = [
    "BaselineError", "BaselineResult", "Choice", "CostModel", "Data", "Dataset", "DatasetError", "DESIGNS", "FAMILIES",
    "Fixed", "Float", "Int", "LAYOUTS", "Layout", "Metrics", "ModelError", "ModelFamily", "PSO", "PSOState",
    "SavedModel", "STRATEGIES", "SearchSpace", "Strategy", "Study", "StudyConfig", "StudyError", "StudyResult",
    "SwarmProgram", "SwarmRunner", "TUNERS", "TrainConfig", "Tuner", "cnn_space", "estimate_memory", "family_of",
    "from_arrays", "initial_design", "initialize_distributed", "kfold_indices", "load_dataset", "load_model",
    "load_result", "make_dense_train", "make_pso", "make_strategy", "make_swarm_runner", "make_train", "mlp_space",
    "optimize_batches", "run_baseline", "suggest", "tune",
    "Objective", "Task", "TaskData", "Trainable", "TrainingLoop", "make_engine", "supervised",
]
