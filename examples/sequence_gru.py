"""A sequence model of your own under the swarm: a GRU reading synthetic token sequences.

Each example is a sequence of 24 tokens from {0, 1, 2, 3} with its true length (the rest is
padding); the label is 1 when token 3 occurs more often than token 0 among its real tokens. The data
is a dict of several inputs (``tokens`` and ``length``), so the Task says which the model reads
(``inputs``). The GRU's hidden size and the embedding's size are static (a program per pair); the
learning rate is traced.

    python examples/sequence_gru.py                      # about a minute on a small CPU
    python examples/sequence_gru.py --rounds 1 --swarm-size 2 --epochs 1   # a smoke run
"""

import argparse
import time

import flax.linen as nn
import numpy as np

import jaxswarm as js

LENGTH, TOKENS = 24, 4


def sequences(n: int, seed: int) -> dict:
    """``n`` padded token sequences, their lengths and labels (see the module docstring)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, TOKENS, size=(n, LENGTH)).astype(np.int32)
    length = rng.integers(LENGTH // 2, LENGTH + 1, size=n).astype(np.int32)
    real = np.arange(LENGTH)[None, :] < length[:, None]
    tokens = np.where(real, tokens, 0)
    label = ((tokens == 3) & real).sum(1) > ((tokens == 0) & real).sum(1)
    return {"tokens": tokens, "length": length, "y": label.astype(np.int32)}


class GRUClassifier(nn.Module):
    """Embedding, a GRU over the real tokens (``seq_lengths``), a dense layer of 2 logits from its last state."""

    embed: int
    hidden: int

    @nn.compact
    def __call__(self, inputs, hp, train):
        tokens, length = inputs
        x = nn.Embed(TOKENS, self.embed)(tokens)
        carry, _ = nn.RNN(nn.GRUCell(self.hidden), return_carry=True)(x, seq_lengths=length)
        return nn.Dense(2)(carry)


SPACE = js.SearchSpace({
    "embed": js.Choice([4, 8]),
    "hidden": js.Choice([16, 32]),
    "learning_rate": js.Float(1e-3, 3e-2, log=True),
})


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--swarm-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="results folder  [none: in memory]")
    args = p.parse_args(argv)

    data = js.TaskData(sequences(2048, args.seed), sequences(512, args.seed + 1), sequences(1024, args.seed + 2))
    task = js.Task(lambda static: GRUClassifier(static["embed"], static["hidden"]), js.task.softmax_loss,
                   js.task.classification_metrics, js.Objective("accuracy"), data, batch_size=64,
                   inputs=lambda batch: (batch["tokens"], batch["length"]), space=SPACE)
    t0 = time.perf_counter()
    result = js.tune(None, task, swarm_size=args.swarm_size, rounds=args.rounds, epochs=args.epochs,
                     seed=args.seed, out_dir=args.out, progress=False)
    majority = max(np.mean(data.test["y"]), 1 - np.mean(data.test["y"]))
    print(f"winner {result.best_config}: validation accuracy {result.best_fitness:.4f}, test accuracy "
          f"{result.test_metrics['test_accuracy']:.4f} (the majority class: {majority:.4f}); "
          f"{time.perf_counter() - t0:.0f} s")
    return {"config": result.best_config, "val_accuracy": result.best_fitness,
            "test_accuracy": result.test_metrics["test_accuracy"], "majority": float(majority)}


if __name__ == "__main__":
    main()
