"""The annotation queue: which logged production rows a person should label first (active learning).

Labelling is the expensive step of the loop, so the queue spends it where a label teaches the next
model most. Each logged input gets three signals, each turned into a rank in [0, 1] (disagreement
is 0 or 1) so that no signal's scale drowns the others:

- **uncertainty**: 1 - the margin, the answered label's probability less the runner-up's (the log
  keeps it; rows logged before it was, 1 - the answered label's probability). The margin looks at
  the two classes the row sits between, which is where a label moves the decision boundary; with
  77 intents 1 - max probability mostly finds rows whose probability is spread thin over many
  classes, and on BANKING77 it is no better than random labelling (below);
- **disagreement**: 1 when a shadow or canary challenger answered the same input otherwise (from
  ``request.shadow_of`` rows); where champion and challenger disagree, one of them is wrong;
- **novelty**: distance from the training data: 1 - the largest cosine similarity of the input's
  sentence embedding to the reference embeddings stored with the model (``monitor.reference``),
  so new phrasings and new topics come up even when the model is (over)confident on them.

``score = w_u * rank(uncertainty) + w_d * disagreement + w_n * rank(novelty)``, by default
(``Weights()``) uncertainty alone: disagreement and novelty are computed and shown with each queued
row, and count only when given a weight (``tunekit queue --disagreement 1 --novelty 1``), because
at a budget of a few hundred labels every weight measured (0.1, 0.25, 1) let them outrank more
uncertain rows and cost accuracy. Then:

1. **de-duplication**: one row per normalised text (lower case, collapsed spaces), the best scored;
   rows already labelled (feedback with a label) are left out;
2. **a shortlist**: the ``SHORTLIST`` x k best-scored rows; only they can be queued, so the spread
   never trades a hard row for an easy one;
3. **spread over clusters**: the shortlist's embeddings are clustered (k-means, ``clusters``
   groups, by default k) and the queue takes the best row of each cluster, best clusters first
   (with fewer clusters than k, round after round), so k labels cover k different confusions
   instead of k paraphrases of one (the "cluster-margin" / diverse mini-batch idea of Citovsky et
   al. 2021 and Zhdanov 2019).

Measured (``bench/active_learning.py``, ``examples/production-loop/README.md``): on BANKING77
replayed as traffic (200 random labels, then 4 rounds of 100), labelling the queue's rows beats
labelling as many random rows at every round, +0.071 [+0.056, +0.085] test accuracy at 600 rows
(8 seeds), and the cluster spread adds +0.016 [+0.008, +0.025] over the bare margin; the design
and the weights were chosen on a validation split of the training stream (seeds 100-103), not on
the reported test split. The previous design (1 - max probability, all three signals at weight
1, 10 clusters) was no better than random there.

``rank`` is the pure core (arrays in, indices out), used by ``build`` on the request log and by the
benchmark on a replayed labelled set. Labels given in ``tunekit label`` are stored as feedback with
the key id ``ANNOTATION_KEY``: ``tunekit retrain --from-feedback`` trains on them like any
correction (a new dataset version, test rows left out), while the live-accuracy readers skip them,
because rows picked for being hard are no random sample of traffic.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tunekit import task_kinds
from tunekit.artifacts import Workspace
from tunekit.errors import ConfigError
from tunekit.monitor.embed import Embedder

SHORTLIST = 10  # the cluster spread picks among the 10 k best-scored rows (Zhdanov 2019's beta)
ANNOTATION_KEY = "annotation-queue"  # key_id of feedback given through `tunekit label`
QUEUE_FILE = "queue.jsonl"


@dataclass(frozen=True)
class Weights:
    """How much each signal counts in the score (0 turns it off). The defaults are what measured best (module docstring):
    on BANKING77's validation split, disagreement and novelty weights of 0.1, 0.25 and 1 each cost accuracy against 0."""

    uncertainty: float = 1.0
    disagreement: float = 0.0
    novelty: float = 0.0


@dataclass
class QueueItem:
    """One row to label: the logged request and input it comes from, and why it was picked."""

    request_id: str
    input_index: int
    text: str
    predicted: str
    challenger: str | None
    score: float
    uncertainty: float
    disagreement: float
    novelty: float
    cluster: int


def _rank01(values: np.ndarray) -> np.ndarray:
    """Each value's rank scaled to [0, 1] (ties share the mean rank); all zeros for fewer than 2 values."""
    if len(values) < 2:
        return np.zeros(len(values))
    from scipy.stats import rankdata

    return (rankdata(values) - 1) / (len(values) - 1)


def novelty(embeddings: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """1 - the largest cosine similarity of each row to the reference rows (0 without a reference)."""
    if reference is None or len(reference) == 0:
        return np.zeros(len(embeddings))
    a = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    b = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    best = np.zeros(len(a))
    for start in range(0, len(a), 1024):  # bounded memory on long windows
        best[start:start + 1024] = (a[start:start + 1024] @ b.T).max(axis=1)
    return 1 - best


def rank(texts: list[str], uncertainty: np.ndarray, disagreement: np.ndarray, embeddings: np.ndarray, reference: np.ndarray | None,
         k: int, *, weights: Weights = Weights(), clusters: int | None = None, seed: int = 0,
         shortlist: int = SHORTLIST) -> tuple[list[int], dict[str, np.ndarray]]:
    """The indices of the ``k`` rows to label first, in order, and the per-row signals (module docstring).

    ``clusters``: the k-means groups the shortlist is spread over, default ``k`` (one pick per group);
    ``shortlist``: how many times ``k`` best-scored rows the groups are drawn from."""
    n = len(texts)
    if not n or k <= 0:
        return [], {"score": np.zeros(n), "uncertainty": np.zeros(n), "disagreement": np.zeros(n), "novelty": np.zeros(n), "cluster": np.zeros(n, int)}
    nov = novelty(embeddings, reference)
    dis = np.asarray(disagreement, dtype=float)
    score = weights.uncertainty * _rank01(np.asarray(uncertainty, dtype=float)) + weights.disagreement * dis + weights.novelty * _rank01(nov)
    best: dict[str, int] = {}
    for i in np.argsort(-score, kind="stable"):
        best.setdefault(" ".join(str(texts[i]).lower().split()), int(i))  # de-duplicate: the best-scored copy of each text
    unique = np.array(sorted(best.values()))
    short = unique[np.argsort(-score[unique], kind="stable")[:max(k, shortlist * k)]]  # diversity only among rows worth labelling
    labels = np.full(n, -1, dtype=int)
    groups = min(clusters or k, len(short))
    if groups > 1:
        from sklearn.cluster import KMeans

        labels[short] = KMeans(groups, n_init=1, random_state=seed).fit_predict(embeddings[short])
    else:
        labels[short] = 0
    per_cluster: dict[int, list[int]] = {}
    for i in short:  # short is best-first, so each group's list is too
        per_cluster.setdefault(int(labels[i]), []).append(int(i))
    picked: list[int] = []
    while len(picked) < min(k, len(short)):
        heads = sorted((c for c in per_cluster if per_cluster[c]), key=lambda c: -score[per_cluster[c][0]])
        for c in heads[:k - len(picked)]:  # a round: the best remaining row of each group, best groups first
            picked.append(per_cluster[c].pop(0))
    signals = {"score": score, "uncertainty": np.asarray(uncertainty, dtype=float), "disagreement": dis, "novelty": nov, "cluster": labels}
    return picked, signals


def build(workspace: Path, name: str, version: str | None, task: str, reference: np.ndarray | None, embedder: Embedder, k: int,
          since: float, *, weights: Weights = Weights(), clusters: int | None = None, seed: int = 0) -> list[QueueItem]:
    """Rank the window's logged inputs of model ``name`` (``version``) and write the top ``k`` to the queue file."""
    from tunekit.serve.requestlog import RequestLog

    if not task_kinds.kind(task).labelled:
        raise ConfigError(f"the annotation queue ranks classification traffic by the model's confidence; {name} is a {task} model")
    path = Workspace(workspace).serving_db
    if not path.is_file():
        raise ConfigError(f"workspace: no request log {path}; point --workspace at the folder the server was started with")
    log = RequestLog(path)
    try:
        rows, feedback = log.requests_since(since), log.feedback_since(since)
    finally:
        log.close()
    labelled = {(f["request_id"], f.get("input_index") or 0) for f in feedback if f.get("label")}
    shadows = {(r.get("request") or {}).get("shadow_of"): r.get("response") or [] for r in rows if (r.get("request") or {}).get("shadow_of")}
    candidates = []
    for row in rows:
        request, response = row.get("request") or {}, row.get("response") or []
        if (row.get("model") != name or row.get("status") != 200 or request.get("shadow_of") or (version is not None and row.get("version") != version)
                or len(response) != len(request.get("inputs") or []) or not response or not isinstance(response[0], dict)):
            continue
        other = shadows.get(row["id"])
        for i, (text, answer) in enumerate(zip(request["inputs"], response)):
            if (row["id"], i) in labelled:
                continue
            theirs = other[i]["label"] if other and i < len(other) else None
            confidence = answer["margin"] if answer.get("margin") is not None else answer["score"]  # logs before the margin: 1 - max prob
            candidates.append((row["id"], i, str(text), str(answer["label"]), float(confidence), theirs))
    if not candidates:
        return write_queue(workspace, [])
    texts = [c[2] for c in candidates]
    embeddings = np.asarray(embedder(texts), dtype=np.float32)
    picked, sig = rank(texts, np.array([1 - c[4] for c in candidates]), np.array([float(c[5] is not None and c[5] != c[3]) for c in candidates]),
                       embeddings, reference, k, weights=weights, clusters=clusters, seed=seed)
    items = [QueueItem(candidates[i][0], candidates[i][1], candidates[i][2], candidates[i][3], candidates[i][5], round(float(sig["score"][i]), 4),
                       round(float(sig["uncertainty"][i]), 4), float(sig["disagreement"][i]), round(float(sig["novelty"][i]), 4), int(sig["cluster"][i]))
             for i in picked]
    return write_queue(workspace, items)


def queue_path(workspace: Path) -> Path:
    return Workspace(workspace).root / "annotation" / QUEUE_FILE


def write_queue(workspace: Path, items: list[QueueItem]) -> list[QueueItem]:
    path = queue_path(workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(i), ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    return items


def read_queue(workspace: Path) -> list[QueueItem]:
    path = queue_path(workspace)
    if not path.is_file():
        raise ConfigError(f"{path}: no annotation queue; build one with `tunekit queue MODEL --workspace {workspace}`")
    return [QueueItem(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
