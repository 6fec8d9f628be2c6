"""A word-level neural language model trained in pure NumPy on the standard library's docstrings.

The model is Bengio et al.'s feed-forward language model (2003): the embeddings of the
previous ``--context`` words are concatenated, go through one ``tanh`` hidden layer, and a
linear layer over the whole vocabulary gives the next word's logits. That last layer and the
cross-entropy are :func:`softxent.linear_cross_entropy_with_grad`: fused and chunked, so the
``(batch, vocabulary)`` logits are never kept, and it returns the gradients for the hidden
layer, the output weights and the output bias. Everything else (the hidden layer's backward
pass, the embedding gradient, Adam) is a few lines of NumPy below.

The text is every docstring of the Python standard library plus pydoc's help topics (see
``_stdlib_corpus.py``), about 330,000 training words; one document in ten (chosen by a hash
of its text) is held out for validation. The vocabulary is the 10,000 most frequent training
words plus ``<unk>``. As a yardstick the example also computes the perplexity of a unigram
model (word frequencies with add-one smoothing) on the same validation words.

Run ``python examples/word_lm.py --quick`` for a short run (well under a minute on two
cores), or without ``--quick`` for the full run documented in
``docs/linear_cross_entropy.md``; ``--plot curve.png`` saves the training curve (needs
matplotlib: ``pip install 'softxent[plot]'``).
"""

from __future__ import annotations

import argparse
import collections
import math
import pathlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # for _stdlib_corpus

import _stdlib_corpus as corpus

import softxent as sx

UNK, BOS = "<unk>", "<s>"  # unknown word; start-of-document padding (an input, never a target)


# ----------------------------------------------------------------------------------- data


@dataclass
class Dataset:
    """Next-word prediction examples: the previous ``k`` word ids and the word to predict."""

    contexts: np.ndarray  # (T, k) int64 ids into the input vocabulary (which includes <s>)
    targets: np.ndarray  # (T,) int64 ids into the output vocabulary (words and <unk>)


def build_vocabulary(train_docs: Sequence[list[str]], size: int) -> list[str]:
    """The ``size`` most frequent training words (ties alphabetical), then ``<unk>``."""
    counts = collections.Counter(w for doc in train_docs for w in doc)
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    return [*ranked[:size], UNK]


def make_dataset(docs: Sequence[list[str]], index: dict[str, int], k: int) -> Dataset:
    """Every word of every document as a target; its context is padded with ``<s>``."""
    unk, bos = index[UNK], len(index)  # <s> is one past the output vocabulary
    ids = [np.array([index.get(w, unk) for w in doc], np.int64) for doc in docs if doc]
    padded = [np.concatenate([np.full(k, bos, np.int64), doc]) for doc in ids]
    contexts = np.concatenate(
        [np.lib.stride_tricks.sliding_window_view(p[:-1], k) for p in padded]
    )  # (T, k)
    return Dataset(contexts, np.concatenate(ids))


def unigram_perplexity(train: Dataset, valid: Dataset, vocab_size: int) -> float:
    """Perplexity on ``valid`` of word frequencies in ``train`` with add-one smoothing."""
    counts = np.bincount(train.targets, minlength=vocab_size) + 1.0  # (V,)
    log_p = np.log(counts) - np.log(counts.sum())
    return float(np.exp(-log_p[valid.targets].mean()))


# ---------------------------------------------------------------------------------- model


class Model:
    """Embedding -> concatenate -> tanh hidden layer -> (fused) linear + cross-entropy."""

    def __init__(self, vocab_size: int, k: int, embed: int, hidden: int, unigram, rng) -> None:
        self.k = k
        self.params = {
            "embedding": rng.normal(0, 0.1, (vocab_size + 1, embed)).astype(np.float32),
            "w1": rng.normal(0, 1 / math.sqrt(k * embed), (k * embed, hidden)).astype(np.float32),
            "b1": np.zeros(hidden, np.float32),
            "w_out": rng.normal(0, 1 / math.sqrt(hidden), (vocab_size, hidden)).astype(np.float32),
            # Starting from the unigram log-frequencies, the model begins at the baseline and
            # spends its training on what the context adds.
            "b_out": np.log(unigram / unigram.sum()).astype(np.float32),
        }

    def _hidden(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        x = p["embedding"][contexts].reshape(len(contexts), -1)  # (B, k * embed)
        return x, np.tanh(x @ p["w1"] + p["b1"])  # (B, H)

    def loss_and_grads(self, contexts, targets) -> tuple[float, dict[str, np.ndarray]]:
        """Mean cross-entropy of the batch and the gradient of every parameter."""
        p = self.params
        x, h = self._hidden(contexts)
        loss, d_h, d_w_out, d_b_out = sx.linear_cross_entropy_with_grad(
            h, p["w_out"], targets, p["b_out"]
        )
        d_a = d_h * (1 - h * h)  # (B, H) through tanh
        d_x = d_a @ p["w1"].T  # (B, k * embed)
        d_embedding = np.zeros_like(p["embedding"])
        np.add.at(d_embedding, contexts.reshape(-1), d_x.reshape(-1, d_embedding.shape[1]))
        grads = {
            "embedding": d_embedding,
            "w1": x.T @ d_a,
            "b1": d_a.sum(0),
            "w_out": d_w_out,
            "b_out": d_b_out,
        }
        return float(loss), grads

    def mean_loss(self, data: Dataset, batch: int = 4096) -> float:
        """Mean cross-entropy (nats per word) over ``data``, forward only."""
        total = 0.0
        for i in range(0, len(data.targets), batch):
            _, h = self._hidden(data.contexts[i : i + batch])
            total += float(
                sx.linear_cross_entropy(
                    h, self.params["w_out"], data.targets[i : i + batch], self.params["b_out"],
                    reduction="sum",
                )
            )  # fmt: skip
        return total / len(data.targets)


class Adam:
    """Adam (Kingma & Ba, 2015) on a dict of float32 arrays, updated in place."""

    def __init__(self, params: dict[str, np.ndarray], lr: float) -> None:
        self.lr, self.beta1, self.beta2, self.eps, self.t = lr, 0.9, 0.999, 1e-8, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        self.t += 1
        c1, c2 = 1 - self.beta1**self.t, 1 - self.beta2**self.t
        for name, g in grads.items():
            m, v = self.m[name], self.v[name]
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * (g * g)
            params[name] -= (lr / c1) * m / (np.sqrt(v / c2) + self.eps)


# ------------------------------------------------------------------------------- training


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a feed-forward word language model in NumPy on the standard "
        "library's docstrings, with softxent's fused output layer."
    )
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument(
        "--epochs",
        type=float,
        default=None,
        help="passes over the training words (default 2; 0.15 with --quick)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--plot", metavar="FILE.png", help="save the training curve (matplotlib)")
    parser.add_argument(
        "--vocab", type=int, default=10_000, help="vocabulary size (default 10000)"
    )
    parser.add_argument("--context", type=int, default=3, help="previous words seen (default 3)")
    parser.add_argument("--embed", type=int, default=32, help="embedding size (default 32)")
    parser.add_argument(
        "--hidden", type=int, default=None, help="hidden layer size (default 128; 64 with --quick)"
    )
    parser.add_argument("--batch", type=int, default=256, help="words per step (default 256)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3)")
    args = parser.parse_args(argv)  # fmt: skip
    if args.epochs is None:
        args.epochs = 0.15 if args.quick else 2.0
    if args.hidden is None:
        args.hidden = 64 if args.quick else 128
    for name in ("vocab", "context", "embed", "hidden", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not args.epochs > 0:
        parser.error(f"--epochs must be > 0, got {args.epochs}")
    return args


def check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(
            "--plot needs matplotlib, which is not installed: pip install 'softxent[plot]'"
        ) from None


def save_plot(path: str, history: list[tuple[int, float, float]], baseline: float) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    words, train, valid = zip(*history, strict=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(words, train, label="training (running mean of the batches)")
    ax.plot(words, valid, marker="o", label="validation")
    ax.axhline(baseline, color="gray", linestyle="--", label="unigram baseline (validation)")
    ax.set_xlabel("training words seen")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.set_title("Feed-forward word LM on the stdlib docstrings (softxent, NumPy)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class Progress:
    """``training [#####-----]  40%  1,234 words/s`` on stderr, redrawn in place.

    Drawn only when stderr is a terminal, so logs and tests stay clean.
    """

    def __init__(self, total: int, width: int = 24) -> None:
        self.total, self.width, self.done = total, width, 0
        self.enabled = sys.stderr.isatty()
        self.start = self.last = time.perf_counter()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.draw()
            sys.stderr.write("\n")

    def update(self, words: int) -> None:
        self.done += words
        if self.enabled and time.perf_counter() - self.last >= 0.1:  # at most 10 a second
            self.draw()

    def draw(self) -> None:
        self.last = time.perf_counter()
        fraction = min(1.0, self.done / self.total)
        filled = round(fraction * self.width)
        rate = self.done / max(self.last - self.start, 1e-9)
        bar = "#" * filled + "-" * (self.width - filled)
        sys.stderr.write(f"\rtraining [{bar}] {fraction:4.0%}  {rate:,.0f} words/s ")
        sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot:
        check_matplotlib()  # fail before training, not after
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()

    docs = corpus.documents()
    train_docs = [corpus.words(d) for d in docs if not corpus.is_validation(d)]
    valid_docs = [corpus.words(d) for d in docs if corpus.is_validation(d)]
    vocabulary = build_vocabulary(train_docs, args.vocab)
    index = {w: i for i, w in enumerate(vocabulary)}
    train = make_dataset(train_docs, index, args.context)
    valid = make_dataset(valid_docs, index, args.context)
    if args.quick:  # a fixed quarter of the validation words keeps evaluations quick
        valid = Dataset(valid.contexts[::4], valid.targets[::4])
    v = len(vocabulary)
    baseline = unigram_perplexity(train, valid, v)
    print(
        f"corpus: {len(train.targets):,} training and {len(valid.targets):,} validation words "
        f"from {len(docs):,} docstrings; vocabulary {v:,} (with {UNK}); "
        f"{time.perf_counter() - start:.1f}s"
    )
    print(f"unigram baseline perplexity (add-one smoothing): {baseline:.1f}")

    model = Model(v, args.context, args.embed, args.hidden,
                  np.bincount(train.targets, minlength=v) + 1.0, rng)  # fmt: skip
    optimizer = Adam(model.params, args.lr)
    steps = max(1, int(args.epochs * len(train.targets) / args.batch))
    evaluations = 3 if args.quick else 4 * math.ceil(args.epochs)
    eval_at = set(np.linspace(0, steps, evaluations + 1).astype(int)[1:])
    history: list[tuple[int, float, float]] = []
    running, order = [], np.empty(0, np.int64)
    with Progress(steps * args.batch) as bar:
        for step in range(1, steps + 1):
            if len(order) < args.batch:  # a new pass over the data, in a new random order
                order = np.concatenate([order, rng.permutation(len(train.targets))])
            batch, order = order[: args.batch], order[args.batch :]
            loss, grads = model.loss_and_grads(train.contexts[batch], train.targets[batch])
            lr = args.lr * min(1.0, 2.0 * (1.0 - step / (steps + 1)))  # linear decay, 2nd half
            optimizer.step(model.params, grads, lr)
            running.append(loss)
            bar.update(args.batch)
            if step in eval_at:
                valid_ppl = math.exp(model.mean_loss(valid))
                train_ppl = math.exp(sum(running) / len(running))
                running = []
                history.append((step * args.batch, train_ppl, valid_ppl))
                if bar.enabled:  # clear the bar's line before printing under it
                    sys.stderr.write("\r" + " " * 80 + "\r")
                print(
                    f"words {step * args.batch:>9,}  training perplexity {train_ppl:8.1f}  "
                    f"validation perplexity {valid_ppl:8.1f}",
                    flush=True,
                )
    final = history[-1][2]
    print(
        f"final validation perplexity: {final:.1f} (unigram baseline {baseline:.1f}); "
        f"{time.perf_counter() - start:.1f}s in all"
    )
    if args.plot:
        save_plot(args.plot, history, baseline)
        print(f"training curve saved to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
