"""Does labelling tunekit's annotation queue beat labelling random rows? Measured on BANKING77.

The simulated stream: BANKING77's training set is replayed as production traffic with its labels
hidden; a small starting set (``--seed-rows``, random) is labelled. Each round, the current model
answers the stream, a strategy picks ``--k`` rows, their true labels are revealed (the simulated
annotator), and the model is retrained on everything labelled so far. Test accuracy on BANKING77's
untouched test split after each round gives a learning curve per strategy.

Strategies, on the same seeds, the same starting set and the same k:
- ``random``: k rows drawn uniformly from the unlabelled stream (what a team does without a queue);
- ``tunekit``: ``tunekit.monitor.annotation.rank`` with its defaults, the queue ``tunekit queue``
  builds: uncertainty (1 - margin, the answered label's probability less the runner-up's, as the
  server logs it), champion/challenger disagreement (the previous round's model against the
  current one), novelty (distance to the labelled rows' embeddings), de-duplicated, then spread
  over k k-means clusters of the 10 k most uncertain rows, the most uncertain row of each;
- ``margin``: the k smallest margins, nothing else (an ablation: is the cluster spread worth it?).

The ranking's design (margin rather than 1 - max probability, the shortlisted cluster spread, the
signal weights) was chosen on a validation split carved out of the training stream (2,000 rows)
with seeds 100-103, never on the test split or the seeds reported (0 up); ``--validation``
reruns that choice, e.g.

    PYTHONPATH=src python bench/active_learning.py --validation 2000 --first-seed 100 --seeds 4 --rounds 4 \
        --strategies random,maxprob,margin,tunekit --weights 1,0.1,0.1 --out /tmp/al-validation

The model is small on purpose, so the whole run fits in minutes on 2 CPU cores: logistic
regression on frozen all-MiniLM-L6-v2 sentence embeddings (the bundled encoder, ``bundled:minilm``),
embedded once and cached. It is a stand-in for fine-tuning; the ranking only sees what the
server logs (the answered label's probability, the challenger's answer, the text's embedding).

Prints one JSON line of figures (final accuracy per strategy with a 95% t-interval over seeds, and
the paired gain of tunekit over random) and writes a learning-curve plot.

    PYTHONPATH=src python bench/active_learning.py --seeds 8 --rounds 4 --out examples/production-loop/results
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "examples" / "banking77" / "data"


def read(split: str) -> tuple[list[str], list[str]]:
    with (DATA / f"{split}.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def embeddings(texts: list[str], cache: Path) -> np.ndarray:
    if cache.is_file():
        return np.load(cache)
    from tunekit.monitor.embed import MiniLMEmbedder

    vectors = MiniLMEmbedder(batch_size=128, max_length=64)(texts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def fit(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=10.0, max_iter=300).fit(x, y)


def pick(strategy: str, k: int, pool: np.ndarray, x: np.ndarray, texts: list[str], model, previous, labelled: np.ndarray,
         rng: np.random.Generator, seed: int, weights=None) -> np.ndarray:
    """``k`` indices into ``pool`` (the unlabelled stream) chosen by ``strategy``."""
    from tunekit.monitor.annotation import Weights, rank

    if strategy == "random":
        return rng.choice(len(pool), k, replace=False)
    proba = model.predict_proba(x[pool])
    answered = model.classes_[proba.argmax(1)]
    if strategy == "maxprob":
        return np.argsort(-(1 - proba.max(1)), kind="stable")[:k]
    top2 = np.sort(proba, axis=1)[:, -2:]
    uncertainty = 1 - (top2[:, 1] - top2[:, 0])  # 1 - margin, as `tunekit queue` reads it from the log (label score - runner-up's)
    if strategy == "margin":
        return np.argsort(-uncertainty, kind="stable")[:k]
    disagreement = (previous.predict(x[pool]) != answered).astype(float) if previous is not None else np.zeros(len(pool))
    picked, _ = rank([texts[i] for i in pool], uncertainty, disagreement, x[pool], x[labelled], k, weights=weights or Weights(), seed=seed)
    return np.asarray(picked)


def run(strategy: str, seed: int, args, x, y, texts, x_test, y_test) -> list[float]:
    rng = np.random.default_rng(seed)
    labelled = rng.choice(len(y), args.seed_rows, replace=False)  # the same starting set for every strategy of this seed
    rng = np.random.default_rng(seed + 1000)
    model, previous, curve = fit(x[labelled], y[labelled]), None, []
    curve.append(float((model.predict(x_test) == y_test).mean()))
    for _ in range(args.rounds):
        pool = np.setdiff1d(np.arange(len(y)), labelled)
        chosen = pool[pick(strategy, args.k, pool, x, texts, model, previous, labelled, rng, seed, args.weights)]
        labelled = np.r_[labelled, chosen]
        previous, model = model, fit(x[labelled], y[labelled])
        curve.append(float((model.predict(x_test) == y_test).mean()))
    return curve


def interval(values: list[float]) -> tuple[float, float, float]:
    from scipy import stats

    a = np.asarray(values)
    if len(a) < 2:
        return float(a.mean()), float(a.mean()), float(a.mean())
    half = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))
    return float(a.mean()), float(a.mean() - half), float(a.mean() + half)


def plot(curves: dict, sizes: list[int], path: Path, evaluated: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for strategy, runs in curves.items():
        stats = [interval([r[i] for r in runs]) for i in range(len(sizes))]
        mean = [s[0] for s in stats]
        ax.plot(sizes, mean, marker="o", label=strategy)
        ax.fill_between(sizes, [s[1] for s in stats], [s[2] for s in stats], alpha=0.2)
    ax.set_xlabel("labelled rows")
    ax.set_ylabel(f"accuracy ({evaluated})")
    ax.set_title(f"Active learning: mean of {len(next(iter(curves.values())))} seeds, 95% t-interval")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed-rows", type=int, default=200, help="Rows labelled at the start (random).")
    parser.add_argument("--k", type=int, default=100, help="Rows labelled per round.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("examples/production-loop/results"))
    parser.add_argument("--first-seed", type=int, default=0, help="Seeds run from here (the design was chosen on 100 up).")
    parser.add_argument("--validation", type=int, default=0, metavar="ROWS",
                        help="Hold out ROWS of the training stream (a fixed draw) and measure on them instead of the test split: "
                             "how the ranking's design was chosen.")
    parser.add_argument("--strategies", default="random,tunekit,margin", help="Comma-separated; also: maxprob (1 - max probability, top k).")
    parser.add_argument("--weights", default=None, metavar="U,D,N", help="The tunekit strategy's signal weights (default: rank's defaults).")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/tunekit-bench-cache"), help="Where the embeddings are cached (15 MB).")
    args = parser.parse_args()
    started = time.perf_counter()
    texts, labels = read("train")
    test_texts, test_labels = read("test")
    x = embeddings(texts, args.cache / "banking77-train-minilm.npy")
    x_test = embeddings(test_texts, args.cache / "banking77-test-minilm.npy")
    embedded = time.perf_counter() - started
    y, y_test = np.asarray(labels), np.asarray(test_labels)
    evaluated = f"BANKING77 test split, {len(y_test):,} rows"
    if args.validation:  # a validation split carved out of the training stream; the rest is replayed
        order = np.random.default_rng(12345).permutation(len(y))
        held, stream = order[:args.validation], np.sort(order[args.validation:])
        x_test, y_test = x[held], y[held]
        x, y, texts = x[stream], y[stream], [texts[i] for i in stream]
        evaluated = f"validation split of BANKING77 train, {len(y_test):,} rows"
    if args.weights:
        from tunekit.monitor.annotation import Weights

        args.weights = Weights(*(float(w) for w in args.weights.split(",")))
    strategies = tuple(args.strategies.split(","))
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    curves = {s: [run(s, seed, args, x, y, texts, x_test, y_test) for seed in seeds] for s in strategies}
    sizes = [args.seed_rows + args.k * r for r in range(args.rounds + 1)]
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, sizes, args.out / "active_learning.png", evaluated)
    final = {s: dict(zip(("mean", "low", "high"), interval([r[-1] for r in runs]))) for s, runs in curves.items()}
    def paired(strategy: str, at) -> dict:
        return dict(zip(("mean", "low", "high"), interval([at(np.subtract(t, r)) for t, r in zip(curves[strategy], curves["random"])])))

    both = "tunekit" in curves and "random" in curves
    gain = paired("tunekit", lambda d: d[-1]) if both else None
    area = paired("tunekit", np.mean) if both else None
    per_round = {f"{s}_minus_random": [{k: round(v, 4) for k, v in paired(s, lambda d, i=i: d[i]).items()} for i in range(len(sizes))]
                 for s in strategies if s != "random" and "random" in curves}
    mean_curve = {s: [round(float(np.mean([r[i] for r in runs])), 4) for i in range(len(sizes))] for s, runs in curves.items()}
    figures = {"bench": "active_learning", "data": "banking77", "model": "logistic regression on frozen all-MiniLM-L6-v2 embeddings",
               "seed_rows": args.seed_rows, "k": args.k, "rounds": args.rounds, "seeds": args.seeds, "first_seed": args.first_seed,
               "evaluated_on": evaluated, "tunekit_weights": asdict(args.weights) if args.weights else "defaults", "sizes": sizes,
               "final_accuracy": final, "tunekit_minus_random_final": gain, "tunekit_minus_random_mean_over_curve": area,
               "mean_curve": mean_curve, "per_round": per_round,
               "curves": {s: [[round(v, 4) for v in r] for r in runs] for s, runs in curves.items()},
               "seconds": {"embedding": round(embedded, 1), "total": round(time.perf_counter() - started, 1)},
               "plot": str(args.out / "active_learning.png")}
    (args.out / "active_learning.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps({k: v for k, v in figures.items() if k != "curves"}))


if __name__ == "__main__":
    main()
