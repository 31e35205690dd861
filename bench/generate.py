"""Benchmark: concurrent chat streams on SmolLM2, one-at-a-time HF `generate` against tunekit's
decoding scheduler (and CTranslate2's int8 CPU generator when it is installed).

`--streams` chat requests (Alpaca demo instructions from ../shared/data, else a built-in list) all
arrive at once and are answered greedily with up to `--max-new-tokens` tokens each:

- `hf_one_at_a_time`: what a server with a lock around `model.generate` does (the plain baseline a
  user writes): the requests run one after the other, each a single-row `generate` with its KV cache.
- `tunekit_scheduler`: `Generator.decoder` (``tunekit.models.decoding``), the server's path: the
  requests share every decoding step in one batched forward pass.
- `ctranslate2_int8`, `ctranslate2_float32` (if `import ctranslate2` works): SmolLM2 converted once to
  a CTranslate2 folder with int8 (or float32) weights, the same prompt ids, one `generate_batch` call over all requests (its own static
  batching; the time to first token comes from its per-step callback).

Per path: aggregate generated tokens/s (all answers' tokens over the wall time from the common
arrival to the last answer), mean and p50 time to first token (from the common arrival), and the
greedy answers; `parity` counts answers identical token for token to the HF ones. Then `ratios`.
`load` holds `uptime`'s load averages before and after (the machine's 2 cores are shared).

    PYTHONPATH=src .venv/bin/python bench/generate.py [--streams 8] [--max-new-tokens 64] [--threads 2] [--ct2 int8,float32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "data" / "alpaca_demo" / "alpaca_en_demo.json"
FALLBACK = ["Describe a process of making crepes.", "Give three tips for staying healthy.", "What is the capital of France?",
            "Explain why the sky is blue.", "Write a haiku about autumn.", "Name three primary colours.",
            "Summarise the plot of Romeo and Juliet in two sentences.", "How do I reverse a list in Python?",
            "Suggest a name for a bakery.", "What are the benefits of regular exercise?"]


def instructions(n: int) -> list[str]:
    """The first ``n`` Alpaca demo instructions (with their input), or the built-in list."""
    if ALPACA.is_file():
        rows = json.loads(ALPACA.read_text(encoding="utf-8"))
        texts = [r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "") for r in rows]
    else:
        texts = FALLBACK
    return [texts[i % len(texts)] for i in range(n)]


def smollm2_generator():
    """``bundled:smollm2`` as a tunekit ``Generator`` with its own chat template."""
    from tunekit.artifacts import BaseModelRef, Manifest
    from tunekit.models import resolve_base, templates
    from tunekit.models.causal import Generator, load_causal_base

    model, tokenizer = load_causal_base("bundled:smollm2")
    template = templates.resolve(tokenizer)
    info = Manifest(task="generation", name="smollm2", base_model=BaseModelRef(id="bundled:smollm2"), max_length=2048,
                    template=template.to_json())
    return Generator(model=model.eval(), tokenizer=tokenizer, template=template, info=info, path=Path(resolve_base("bundled:smollm2")),
                     device=torch.device("cpu"))


def summary(name: str, answers: list[list[int]], first: list[float], wall: float) -> dict:
    tokens = sum(len(a) for a in answers)
    return {"path": name, "tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 2),
            "ttft_mean_s": round(statistics.mean(first), 3), "ttft_p50_s": round(statistics.median(first), 3)}


class _FirstToken:
    """A ``generate`` streamer that notes when the first new token arrives (its first ``put`` is the prompt)."""

    def __init__(self):
        self.puts, self.at = 0, None

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 2:
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


@torch.inference_mode()
def hf_one_at_a_time(gen, prompts: list[list[int]], max_new: int) -> tuple[dict, list[list[int]]]:
    from tunekit.models import templates

    stops = templates.stop_token_ids(gen.tokenizer)
    answers, first = [], []
    start = time.perf_counter()
    for prompt in prompts:
        streamer = _FirstToken()
        out = gen.model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 max_new_tokens=max_new, do_sample=False, eos_token_id=stops, pad_token_id=gen.tokenizer.pad_token_id,
                                 streamer=streamer)
        answers.append(_until_stop(out[0, len(prompt):].tolist(), stops))
        first.append(streamer.at - start)
    return summary("hf_one_at_a_time", answers, first, time.perf_counter() - start), answers


def tunekit_scheduler(gen, prompts: list[list[int]], max_new: int) -> tuple[dict, list[list[int]]]:
    from tunekit.models import templates

    stops = templates.stop_token_ids(gen.tokenizer)
    first: list[float] = [0.0] * len(prompts)
    steps = gen.decoder.steps
    start = time.perf_counter()
    tickets = [gen.decoder.submit(p, max_new_tokens=max_new) for p in prompts]

    def read(i: int) -> None:
        for _ in tickets[i]:
            first[i] = first[i] or time.perf_counter() - start

    readers = [threading.Thread(target=read, args=(i,)) for i in range(len(tickets))]
    for r in readers:
        r.start()
    for r in readers:
        r.join()
    wall = time.perf_counter() - start
    answers = [_until_stop(t.tokens, stops) for t in tickets]
    return summary("tunekit_scheduler", answers, first, wall) | {"steps": gen.decoder.steps - steps}, answers


def ctranslate2_path(gen, prompts: list[list[int]], max_new: int, threads: int, kind: str) -> tuple[dict, list[list[int]]]:
    """CTranslate2's generator with ``kind`` weights (int8, float32), converted once into tunekit's cache."""
    import ctranslate2

    from tunekit.models import templates

    folder = Path(os.environ.get("TUNEKIT_CACHE", Path.home() / ".cache" / "tunekit")) / "bench" / f"smollm2-ct2-{kind}"
    if not (folder / "model.bin").is_file():
        ctranslate2.converters.TransformersConverter(str(gen.path)).convert(str(folder), quantization=kind, force=True)
    engine = ctranslate2.Generator(str(folder), device="cpu", compute_type=kind, intra_threads=threads)
    stops = templates.stop_token_ids(gen.tokenizer)
    pieces = [gen.tokenizer.convert_ids_to_tokens(p) for p in prompts]
    engine.generate_batch(pieces[:1], max_length=4, sampling_topk=1, include_prompt_in_result=False)  # warm-up
    first: list[float] = [0.0] * len(prompts)
    start = time.perf_counter()

    def on_step(step) -> None:
        first[step.batch_id] = first[step.batch_id] or time.perf_counter() - start

    results = engine.generate_batch(pieces, max_length=max_new, sampling_topk=1, include_prompt_in_result=False,
                                    end_token=gen.tokenizer.convert_ids_to_tokens(stops), callback=on_step)
    wall = time.perf_counter() - start
    answers = [_until_stop(r.sequences_ids[0], stops) for r in results]
    return summary(f"ctranslate2_{kind}", answers, first, wall), answers


def _until_stop(ids: list[int], stops: list[int]) -> list[int]:
    """The answer's ids up to and including its first stop token."""
    for i, t in enumerate(ids):
        if t in stops:
            return ids[: i + 1]
    return ids


def load() -> list[float]:
    return [float(x) for x in subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.rsplit(":", 1)[1].split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ct2", default="int8,float32", help="CTranslate2 weight types to measure when it is installed ('' for none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    before = load()
    gen = smollm2_generator()
    prompts = [gen.encode_chat([{"role": "user", "content": text}]) for text in instructions(args.streams)]
    gen.generate([prompts[0]], max_new_tokens=4)  # warm-up
    paths = {}
    paths["hf"], hf = hf_one_at_a_time(gen, prompts, args.max_new_tokens)
    paths["tunekit"], ours = tunekit_scheduler(gen, prompts, args.max_new_tokens)
    paths["tunekit"]["parity"] = sum(a == b for a, b in zip(ours, hf))
    for kind in filter(None, args.ct2.split(",")):
        try:
            paths[f"ct2_{kind}"], answers = ctranslate2_path(gen, prompts, args.max_new_tokens, args.threads, kind)
            paths[f"ct2_{kind}"]["parity"] = sum(a == b for a, b in zip(answers, hf))
        except ImportError as exc:
            paths[f"ct2_{kind}"] = {"path": f"ctranslate2_{kind}", "skipped": str(exc)}
    ratios = {f"{k}/hf_tokens_per_s": round(v["tokens_per_s"] / paths["hf"]["tokens_per_s"], 2) for k, v in paths.items()
              if k != "hf" and "tokens_per_s" in v}
    print(json.dumps({"bench": "generate", "model": "bundled:smollm2", "streams": args.streams, "max_new_tokens": args.max_new_tokens,
                      "threads": args.threads, "prompt_tokens": [len(p) for p in prompts], "results": list(paths.values()),
                      "ratios": ratios, "load": {"before": before, "after": load()}}))


if __name__ == "__main__":
    main()
