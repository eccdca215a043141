"""Your own Flax regression MLP under the swarm: scikit-learn's diabetes data, MSE minimized.

The depth and width are static (each pair compiles its programs once, reused whenever the swarm comes
back to it); the learning rate and weight decay are traced. `js.tune` runs the study (PSO by default);
the winner is retrained alone on train + validation and scored on the test split beside
scikit-learn's `MLPRegressor()` with its defaults, on the same standardized split.

    python examples/regression_diabetes.py                 # about a minute on a small CPU
    python examples/regression_diabetes.py --rounds 1 --swarm-size 2 --epochs 2   # a smoke run
"""

import argparse
import time

import flax.linen as nn
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

import jaxswarm as js


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` ReLU units and one output."""

    depth: int
    width: int

    @nn.compact
    def __call__(self, x, hp, train):
        for _ in range(self.depth):
            x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(1)(x)[:, 0]


def splits(seed: int = 0):
    """Train / validation / test (60 / 20 / 20), inputs and targets standardized on the training rows."""
    x, y = load_diabetes(return_X_y=True)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.25, random_state=seed)
    scale_x, scale_y = StandardScaler().fit(x_train), StandardScaler().fit(y_train[:, None])
    prep = lambda x, y: {"x": scale_x.transform(x).astype(np.float32),
                         "y": scale_y.transform(y[:, None])[:, 0].astype(np.float32)}
    return prep(x_train, y_train), prep(x_val, y_val), prep(x_test, y_test)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--swarm-size", type=int, default=12)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="results folder (evaluations, best.json, the saved winner)  [none: in memory]")
    args = p.parse_args(argv)

    train, val, test = splits(args.seed)
    space = js.SearchSpace({
        "depth": js.Int(1, 3),
        "width": js.Choice([16, 32, 64, 128]),
        "learning_rate": js.Float(1e-4, 3e-2, log=True),
        "weight_decay": js.Float(1e-6, 1e-1, log=True),
    })
    task = js.Task(lambda static: MLP(static["depth"], static["width"]), js.task.mse_loss,
                   js.task.regression_metrics, js.Objective("mse", "min"), js.TaskData(train, val, test),
                   batch_size=32)
    t0 = time.perf_counter()
    result = js.tune(space, task, swarm_size=args.swarm_size, rounds=args.rounds, epochs=args.epochs,
                     seed=args.seed, out_dir=args.out)  # the winner retrains on train + val, scored on test
    seconds = time.perf_counter() - t0
    swarm_mse = result.test_metrics["test_mse"]
    both = {k: np.concatenate([train[k], val[k]]) for k in train}
    mlp = MLPRegressor(random_state=args.seed).fit(both["x"], both["y"])
    sklearn_mse = float(np.mean((mlp.predict(test["x"]) - test["y"]) ** 2))
    print(f"winner {result.best_config}")
    print(f"test MSE (standardized target): swarm winner {swarm_mse:.4f}, MLPRegressor() {sklearn_mse:.4f}; "
          f"{seconds:.0f} s for the swarm and its retrain")
    return {"config": result.best_config, "swarm_mse": swarm_mse, "sklearn_mse": sklearn_mse, "seconds": seconds}


if __name__ == "__main__":
    main()
