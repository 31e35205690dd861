"""The production loop, scripted, on a slice of BANKING77: each step prints what it decided and why.

1. train a champion on short phrasings of 8 intents (LoRA on the bundled MiniLM; `gate.live`);
2. serve it (in-process) and replay traffic with a planted shift: long, new phrasings from the
   `app` channel and a changed class prior; simulated users send the correct label on some answers;
3. `tunekit monitor`: drift, live quality, and live accuracy per channel (the slice alert);
4. `tunekit queue`: the annotation queue picks rows; a simulated annotator labels them;
5. `tunekit retrain --from-feedback`: a new dataset version, a new model, the offline gate; with
   `gate.live` a passing version waits as `challenger`;
6. `tunekit deploy shadow`: the challenger answers copies of live traffic, never returned;
7. `tunekit monitor --decide`: promote, roll back, or ask for more labelled requests; the running
   server swaps in a new champion.

    PYTHONPATH=src python examples/production-loop/demo.py [--out /tmp/tunekit-demo]

About 5-10 minutes on 2 CPU cores (two short trainings). Everything is written under --out.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import time
from pathlib import Path

from rich.console import Console

DATA = Path(__file__).resolve().parents[1] / "banking77" / "data"
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "transfer_not_received_by_recipient",
           "pending_card_payment", "declined_card_payment", "refund_not_showing_up"]
SHORT = 9  # words: the champion learns from phrasings up to this long; traffic brings longer ones
say = Console(highlight=False).print


def step(n: int, title: str) -> None:
    say(f"\n[bold cyan]== {n}. {title}[/]")


def read(split: str) -> list[tuple[str, str]]:
    with (DATA / f"{split}.csv").open(encoding="utf-8") as fh:
        return [(r["text"], r["category"]) for r in csv.DictReader(fh) if r["category"] in INTENTS]


def write(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "category"])
        w.writerows(rows)


def prepare(out: Path, rng: random.Random) -> tuple[Path, list[tuple[str, str]]]:
    """The champion's data (short phrasings) and the traffic pool (the rest, long ones among them)."""
    train = read("train")
    rng.shuffle(train)
    short = [r for r in train if len(r[0].split()) <= SHORT]
    champion_rows = short[:400]
    traffic = [r for r in train if r not in champion_rows]
    test = read("test")
    write(out / "train.csv", champion_rows)
    write(out / "test.csv", test)
    config = out / "config.yaml"
    config.write_text(f"""name: demo-intent
task: classification
workspace: {out / 'workspace'}
data: {{train: train.csv, test: test.csv, text_column: text, label_column: category, split: {{validation: 0.15, seed: 1}}}}
model: {{base: "bundled:minilm", max_length: 48}}
method: {{kind: lora, r: 8, alpha: 16}}
train: {{epochs: 3, batch_size: 32, learning_rate: 3.0e-3, seed: 1}}
eval: {{primary: accuracy}}
gate: {{min_improvement: 0.0, live: true}}
""")
    say(f"{len(champion_rows)} training rows (phrasings of at most {SHORT} words, 8 intents), {len(test)} test rows, "
        f"{len(traffic)} rows left to replay as traffic")
    return config, traffic


def shifted(traffic: list[tuple[str, str]], n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """``n`` requests: 60% from two intents (a changed prior), long phrasings come from the `app` channel."""
    hot = [r for r in traffic if r[1] in INTENTS[:2]]
    rest = [r for r in traffic if r[1] not in INTENTS[:2]]
    k_hot = min(int(n * 0.6), len(hot))
    rows = rng.sample(hot, k_hot) + rng.sample(rest, min(n - k_hot, len(rest)))
    rng.shuffle(rows)
    return [(t, y, "app" if len(t.split()) > SHORT else "web") for t, y in rows]


def replay(client, rows, rng: random.Random, feedback_share: float, user_prefix: str) -> dict[str, str]:
    """Send each row as a request; users correct ``feedback_share`` of the answers with the true label."""
    truth = {}
    for i, (text, label, channel) in enumerate(rows):
        answer = client.post("/v1/classify", json={"inputs": [text], "metadata": {"channel": channel}},
                             headers={"x-user-id": f"{user_prefix}{i % 50}"}).json()
        truth[text] = label
        if rng.random() < feedback_share:
            client.post("/v1/feedback", json={"request_id": answer["id"], "label": label})
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/tunekit-production-loop"))
    args = parser.parse_args()
    from fastapi.testclient import TestClient

    from tunekit import pipeline, registry
    from tunekit.config import load_config
    from tunekit.monitor import MonitorSettings, annotation, reference
    from tunekit.monitor import run as monitor
    from tunekit.monitor.embed import for_reference
    from tunekit.monitor.online import lines
    from tunekit.pipeline.retrain import retrain_from_feedback
    from tunekit.serve import ServeSettings, create_app
    from tunekit.serve.requestlog import RequestLog

    started = time.time()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    rng = random.Random(7)
    quiet = Console(quiet=True)

    step(1, "train the champion")
    config, traffic = prepare(args.out, rng)
    cfg = load_config(config)
    first = pipeline.run(cfg, quiet)
    say(f"v{first.version}: {first.decision.summary()}")
    workspace, uri = cfg.workspace_dir, cfg.tracking

    settings = ServeSettings(model="demo-intent@champion", tracking_uri=uri, workspace=str(workspace), auth=False,
                             reload_interval_s=0, deployment_poll_s=0)
    with TestClient(create_app(settings)) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.1)
        step(2, "serve it; replay shifted traffic (long phrasings from the app channel, 60% from two intents)")
        first_wave = shifted(traffic, 250, rng)
        truth = replay(client, first_wave, rng, 0.4, "u")
        used = {t for t, _, _ in first_wave}
        say(f"{len(first_wave)} requests, {sum(c == 'app' for *_, c in first_wave)} from the app channel; users corrected about 40%")

        step(3, "monitor: drift, live quality, per-channel accuracy")
        result = monitor(MonitorSettings(model="demo-intent@champion", tracking_uri=uri, workspace=str(workspace), since="1h",
                                         min_feedback_accuracy=0.9, min_feedback=20, slice_by="channel", slice_margin=0.1,
                                         min_slice_feedback=15))
        say(f"status {result.status}; " + (f"{len(result.alerts)} alerts:" if result.alerts else "no alert"))
        for alert in result.alerts:
            say(f"  - {alert}")
        for line in lines(result.report["online"]):
            say(line)

        step(4, "the annotation queue picks rows; a simulated annotator labels them")
        path = registry.resolve_model("demo-intent@champion", uri).path
        ref, ref_emb = reference.load(path)
        items = annotation.build(workspace, "demo-intent", first.version, "classification", ref_emb,
                                 for_reference(ref["embeddings"]["embedder"], None), 80, 0.0, clusters=8)
        items = [i for i in items if i.text in truth]  # the log redacts PII: a redacted text is not in the replayed set
        with RequestLog(workspace / "serving.db") as log:
            for item in items:
                log.add_feedback(item.request_id, None, truth[item.text], None, "simulated annotator", annotation.ANNOTATION_KEY, item.input_index)
        wrong = sum(truth[i.text] != i.predicted for i in items)
        say(f"queued {len(items)} rows over 8 clusters; the model had {wrong} of them wrong "
            f"({wrong / len(items):.0%}; its live accuracy on user feedback: {result.report['live']['labelled'].get('accuracy', float('nan')):.0%}); "
            f"{sum(len(i.text.split()) > SHORT for i in items)} are long phrasings")

        step(5, "retrain on the labels; the offline gate")
        second = retrain_from_feedback(cfg, quiet)
        say(f"v{second.version}: {second.decision.summary()}")
        if not second.decision.passed:
            say("the gate kept the champion; the loop ends here")
            return

        step(6, f"shadow v{second.version} beside the champion")
        put = client.put("/v1/deployment", json={"mode": "shadow", "challenger": f"demo-intent/{second.version}", "reason": "demo"})
        say(f"deployment: {put.json()['mode']} of v{put.json()['challenger_version']}")
        fresh = [r for r in traffic if r[0] not in used]
        wave = shifted(fresh, len(fresh), rng)
        truth |= replay(client, wave, rng, 0.5, "w")
        time.sleep(1.0)  # the last shadow answers finish in the background
        say(f"{len(wave)} more requests; every answer the clients got came from v{first.version}; "
            f"{client.get('/v1/deployment').json()['counts']['shadow']} shadow answers logged")

        step(7, "the live decision")
        decided = monitor(MonitorSettings(model="demo-intent@champion", tracking_uri=uri, workspace=str(workspace), since="1h",
                                          decide=True, min_per_arm=30))
        for line in lines(decided.report["online"]):
            say(line)
        client.post("/v1/reload")
        now = client.post("/v1/classify", json={"inputs": ["my card has still not arrived"]}).json()
        say(f"the server now answers with v{now['version']}")
    say(f"\n{time.time() - started:.0f} s in all; registry history:")
    for event in registry.history(registry.client(uri), "demo-intent"):
        say(f"  v{event['version']} {event['action']}: {event['reason'][:160]}")


if __name__ == "__main__":
    main()
