"""Build the two-task example data: BANKING77 intents (shipped in examples/banking77, CC BY 4.0)
and SST-2 sentiment (read from ../shared/data, not shipped: it has no licence to redistribute).

Both are "text, label" tables, so they share a format; this script only stacks them with a `task`
column, which is all `data.task_column` needs. It writes, under --out (default
tunekit-workspace/multitask-data, git-ignored):

  train.csv, test.csv                  both tasks (text, label, task)
  train-intent.csv, test-intent.csv    one task each, for single-task comparisons
  train-sentiment.csv, test-sentiment.csv

Training rows are a seeded sample of --rows per task; the test rows are all of BANKING77's official
test set and SST-2's labelled test set. Run from the repository root:

  python examples/multitask/make_data.py
  tunekit run examples/multitask/config.yaml
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BANKING = ROOT / "examples" / "banking77" / "data"
SST2 = ROOT.parent / "shared" / "data" / "sst2"


def banking(split: str) -> list[tuple[str, str]]:
    with (BANKING / f"{split}.csv").open(encoding="utf-8") as fh:
        return [(r["text"], r["category"]) for r in csv.DictReader(fh)]


def sst2(split: str) -> list[tuple[str, str]]:
    """SST-2's TSV has no quoting, so it is split on tabs rather than read with csv's quote rules."""
    path = SST2 / {"train": "train.tsv", "test": "test_labeled.tsv"}[split]
    if not path.is_file():
        raise SystemExit(f"{path} not found: SST-2 is read from ../shared/data/sst2 (see the README's data section)")
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [(text.strip(), {"0": "negative", "1": "positive"}[label.strip()]) for text, label in (ln.rsplit("\t", 1) for ln in lines)]


def write(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label", "task"])
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("tunekit-workspace/multitask-data"))
    parser.add_argument("--rows", type=int, default=2000, help="training rows sampled per task")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    tasks = {"intent": banking, "sentiment": sst2}
    stacked: dict[str, list] = {"train": [], "test": []}
    for task, read in tasks.items():
        for split in ("train", "test"):
            rows = read(split)
            if split == "train":
                rows = rng.sample(rows, min(args.rows, len(rows)))
            tagged = [(text, label, task) for text, label in rows]
            write(args.out / f"{split}-{task}.csv", tagged)
            stacked[split] += tagged
    for split, rows in stacked.items():
        write(args.out / f"{split}.csv", rows)
        print(f"{args.out / f'{split}.csv'}: {len(rows)} rows")


if __name__ == "__main__":
    main()
