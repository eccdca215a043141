"""Your own Flax CNN on Fashion-MNIST under the swarm: learning rate, weight decay, dropout and width.

The width (filters of the first block; the second has twice as many) is static: a program per width,
reused whenever the swarm comes back to it. The learning rate, the weight decay (AdamW, the Task's
default optimizer when the space tunes `weight_decay`) and the dropout rate are traced: the module
reads the rate from ``hp``, so moving it never recompiles. The winner is retrained on train +
validation and scored on the test split.

Needs Fashion-MNIST's IDX files (Debian: ``apt-get install dataset-fashion-mnist``, or ``--data-dir``):

    python examples/cnn_fashion_mnist.py                 # about two minutes on a small CPU
    python examples/cnn_fashion_mnist.py --rounds 1 --swarm-size 2 --epochs 1 --train-rows 256   # a smoke run
"""

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxswarm as js


class CNN(nn.Module):
    """Two conv blocks (``width`` and ``2 * width`` filters, 3x3, ReLU, 2x2 average pooling), dropout at the
    member's traced rate, and a dense layer of 10 logits."""

    width: int

    @nn.compact
    def __call__(self, x, hp, train):
        for filters in (self.width, 2 * self.width):
            # js.task.Conv is nn.Conv (stride 1, 'SAME') as matmuls: XLA:CPU runs nn.Conv in a training loop slowly.
            x = nn.avg_pool(nn.relu(js.task.Conv(filters, 3)(x)), (2, 2), strides=(2, 2))
        x = x.reshape(len(x), -1)
        if train:  # inverted dropout at a traced rate (nn.Dropout takes a Python float)
            keep = jax.random.uniform(self.make_rng("dropout"), x.shape) >= hp["dropout"]
            x = jnp.where(keep, x / (1.0 - hp["dropout"]), 0.0)
        return nn.Dense(10)(x)


SPACE = js.SearchSpace({
    "width": js.Choice([4, 8, 16]),
    "learning_rate": js.Float(3e-4, 1e-2, log=True),
    "weight_decay": js.Float(1e-5, 1e-2, log=True),
    "dropout": js.Float(0.0, 0.5),
})


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--swarm-size", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-rows", type=int, default=2048, help="training images used (of 54,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="results folder  [none: in memory]")
    args = p.parse_args(argv)

    full = js.load_dataset("fashion_mnist", data_dir=args.data_dir)
    n = args.train_rows
    data = js.TaskData.from_dataset(full._replace(x_train=full.x_train[:n], y_train=full.y_train[:n],
                                                  x_val=full.x_val[:500], y_val=full.y_val[:500],
                                                  x_test=full.x_test[:1000], y_test=full.y_test[:1000]))
    task = js.Task(lambda static: CNN(static["width"]), js.task.softmax_loss, js.task.classification_metrics,
                   js.Objective("accuracy"), data, batch_size=64, space=SPACE)
    t0 = time.perf_counter()
    result = js.tune(None, task, swarm_size=args.swarm_size, rounds=args.rounds, epochs=args.epochs,
                     seed=args.seed, out_dir=args.out, progress=False)
    print(f"winner {result.best_config}: validation accuracy {result.best_fitness:.4f}, test accuracy "
          f"{result.test_metrics['test_accuracy']:.4f} after its retrain; {time.perf_counter() - t0:.0f} s")
    return {"config": result.best_config, "val_accuracy": result.best_fitness,
            "test_accuracy": result.test_metrics["test_accuracy"]}


if __name__ == "__main__":
    main()
