"""jaxswarm: PSO hyperparameter tuning with the whole swarm trained as one jit+vmap program."""

from jaxswarm.cnn import cnn_space
from jaxswarm.data import Dataset, DatasetError, from_arrays, kfold_indices, load_dataset
from jaxswarm.pso import PSO, PSOState, make_pso
from jaxswarm.sampling import initial_design
from jaxswarm.space import Choice, Fixed, Float, Int, SearchSpace, mlp_space
from jaxswarm.train import TrainConfig, make_dense_train, make_train
from jaxswarm.tuner import Study, StudyConfig, StudyError, StudyResult, tune

__version__ = "0.1.0"

__all__ = [
    "Choice", "cnn_space", "Dataset", "DatasetError", "Fixed", "Float", "Int", "PSO", "PSOState", "SearchSpace",
    "Study", "StudyConfig", "StudyError", "StudyResult", "TrainConfig", "from_arrays", "initial_design",
    "kfold_indices", "load_dataset", "make_dense_train", "make_pso", "make_train", "mlp_space", "tune",
]
