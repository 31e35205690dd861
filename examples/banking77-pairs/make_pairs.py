"""Build a sentence-pair task from BANKING77: do two customer queries ask for the same thing?

Half the pairs are two queries of one intent (label ``same``); the other half pair a query with one
of another intent (``different``), and half of those negatives are hard: the other intent shares a
word of its name (``card_arrival`` against ``card_delivery_estimate``), so word overlap alone cannot
tell the classes apart. Training pairs come from the official training rows and test pairs from the
official test rows only, so no query is in both. Seeded: the same files every time.

    python make_pairs.py            # writes data/train.csv (1,500 pairs) and data/test.csv (500)
"""
from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE.parent / "banking77" / "data"


def read(path: Path) -> dict[str, list[str]]:
    by_intent: dict[str, list[str]] = defaultdict(list)
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_intent[row["category"]].append(row["text"])
    return dict(by_intent)


def pairs(by_intent: dict[str, list[str]], n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    intents = sorted(by_intent)
    near = {a: [b for b in intents if b != a and set(a.split("_")) & set(b.split("_"))] for a in intents}
    out: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    while len(out) < n:
        intent = rng.choice(intents)
        first = rng.choice(by_intent[intent])
        kind = len(out) % 4  # 0, 1: same; 2: a random other intent; 3: an intent with a shared word
        if kind < 2:
            other_intent = intent
        elif kind == 2 or not near[intent]:
            other_intent = rng.choice([i for i in intents if i != intent])
        else:
            other_intent = rng.choice(near[intent])
        second = rng.choice(by_intent[other_intent])
        if second == first or (first, second) in seen:
            continue
        seen.add((first, second))
        out.append((first, second, "same" if other_intent == intent else "different"))
    rng.shuffle(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1500, help="training pairs")
    parser.add_argument("--test", type=int, default=500, help="test pairs")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    (HERE / "data").mkdir(exist_ok=True)
    for split, n in (("train", args.train), ("test", args.test)):
        rows = pairs(read(SOURCE / f"{split}.csv"), n, rng)
        with (HERE / "data" / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["query", "other_query", "label"])
            writer.writerows(rows)
        print(f"data/{split}.csv: {len(rows)} pairs")


if __name__ == "__main__":
    main()
