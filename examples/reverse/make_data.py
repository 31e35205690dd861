"""Write the synthetic reverse-a-list task (train.jsonl), a self-check for chat fine-tuning.

A model can only score near 100% exact match on held-out lists when the loss covers the answers,
the prompt is rendered at evaluation exactly as in training, and EOS was trained so it stops.
Run from anywhere: python examples/reverse/make_data.py
"""

import json
import random
from pathlib import Path

WORDS = "apple pear plum fig kiwi lime mango peach".split()


def main(n: int = 400, seed: int = 0) -> None:
    rng = random.Random(seed)
    seen: set[tuple[str, ...]] = set()
    rows = []
    while len(rows) < n:
        words = tuple(rng.choice(WORDS) for _ in range(3))
        if words not in seen:
            seen.add(words)
            rows.append({"messages": [{"role": "user", "content": "reverse: " + " ".join(words)},
                                      {"role": "assistant", "content": " ".join(reversed(words))}]})
    out = Path(__file__).with_name("train.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} examples to {out}")


if __name__ == "__main__":
    main()
