"""Scoring preference pairs: the starting model against the tuned one on the same held-out pairs.

A model's log-probability of an answer is the sum over the answer's tokens (its EOS included; the
prompt is context, not scored) of ``log p(token | everything before it)``, with the run's template.
Two figures per model, both per pair so that the comparison is paired:

- ``pair_accuracy``: the share of pairs whose preferred answer the model finds more likely than the
  other (``logp(chosen) > logp(rejected)``). The starting model's is the baseline the tuned model
  must beat: the same measurement, on the same pairs, before tuning.
- ``reward_margin``: the mean implicit reward margin of DPO, ``beta * ((logp(chosen) - ref(chosen))
  - (logp(rejected) - ref(rejected)))``, where ``ref`` is the starting model. The starting model's
  is 0 by definition; ``reward_accuracy`` (tuned model only) is the share of pairs with a margin > 0.

Both go through ``stats.bootstrap`` (the one bootstrap every task uses): one draw of pairs per
resample scores both models. A few test prompts are answered by both models (greedy, the same
decoding as generation's evaluation) and shown side by side: the numbers say the tuned model
prefers the right answers, the answers show what it now writes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tunekit.config import PREFERENCE_METRICS
from tunekit.evaluate import EvalResult, plots
from tunekit.evaluate.generation import last_user
from tunekit.evaluate.stats import bootstrap, bootstrap_p
from tunekit.models.packing import collate

__all__ = ["PreferenceBaseline", "evidence_lines", "pair_logps", "pair_metrics", "render_markdown", "run_preference",
           "run_starting", "score_pairs", "versus_start"]

STARTING = "starting model"


@dataclass
class PreferenceBaseline:
    """The starting model on the test pairs: its metrics, its log-probabilities per pair (the
    reference of every reward margin) and its answers to the side-by-side prompts."""

    name: str
    metrics: dict
    seconds: float
    chosen: np.ndarray = field(repr=False)
    rejected: np.ndarray = field(repr=False)
    picked: list[int] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)


ROWS_AT_ONCE = 8  # rows whose vocabulary-wide log-softmax is held at once


def pair_logps(model, pairs: list, pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Summed log-probabilities of the answer tokens of each pair's preferred and non-preferred side
    through ``model`` (with gradients when enabled), their token counts, and the real tokens read.
    Both sides go through one padded forward pass, preferred rows first."""
    examples = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    batch = collate(examples, max(len(e.ids) for e in examples), pad_id, packing=False)
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device), use_cache=False).logits
    labels = batch["labels"].to(device)
    logits = logits[:, -labels.shape[1]:]  # prompt methods prepend virtual tokens to the logits
    labels = labels[:, 1:]
    mask = labels != -100
    picked = labels.clamp(min=0).unsqueeze(-1)
    # a few rows at a time: a full-vocabulary float log-softmax of the whole batch at once took 11 GB on SmolLM2 (49k tokens)
    logp = torch.cat([torch.log_softmax(logits[i : i + ROWS_AT_ONCE, :-1].float(), dim=-1).gather(-1, picked[i : i + ROWS_AT_ONCE]).squeeze(-1)
                      for i in range(0, logits.shape[0], ROWS_AT_ONCE)])
    sums, counts = (logp * mask).sum(1), mask.sum(1)
    n = len(pairs)
    return sums[:n], sums[n:], counts[:n], counts[n:], int(batch["real_tokens"])


@torch.no_grad()
def score_pairs(model, pairs: list, pad_id: int, device: torch.device, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed answer log-probabilities (preferred, non-preferred) of every pair, in order, in eval mode."""
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        c, r, *_ = pair_logps(model, pairs[start : start + batch_size], pad_id, device)
        chosen.append(c.double().cpu().numpy())
        rejected.append(r.double().cpu().numpy())
    model.train(was_training)
    return (np.concatenate(chosen), np.concatenate(rejected)) if pairs else (np.zeros(0), np.zeros(0))


def pair_metrics(chosen: np.ndarray, rejected: np.ndarray, ref_chosen: np.ndarray, ref_rejected: np.ndarray, beta: float) -> dict:
    """Pair accuracy, mean reward margin against the reference, reward accuracy, mean log-probabilities."""
    margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return {"pair_accuracy": float(np.mean(chosen > rejected)), "reward_margin": float(np.mean(margin)),
            "reward_accuracy": float(np.mean(margin > 0)), "chosen_logp": float(np.mean(chosen)), "rejected_logp": float(np.mean(rejected)),
            "pairs": len(chosen)}


def versus_start(chosen, rejected, ref_chosen, ref_rejected, beta: float, resamples: int, seed: int) -> dict[str, dict]:
    """Paired bootstrap of tuned minus starting model for pair accuracy and reward margin (``diff`` > 0: better)."""
    right_m, right_b = (chosen > rejected).astype(float), (ref_chosen > ref_rejected).astype(float)
    margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    per_row = {"pair_accuracy": (right_b, right_m), "reward_margin": (np.zeros_like(margin), margin)}
    diffs, low, high = bootstrap(lambda rows: [per_row[m][1][rows].mean() - per_row[m][0][rows].mean() for m in PREFERENCE_METRICS],
                                 len(chosen), resamples, seed)
    out = {}
    for k, name in enumerate(PREFERENCE_METRICS):
        base, model = float(per_row[name][0].mean()), float(per_row[name][1].mean())
        out[name] = {"baseline": base, "model": model, "diff": model - base, "low": float(low[k]), "high": float(high[k]),
                     "p_value": bootstrap_p(model - base, diffs[:, k])}
    return out


def _side_rows(cfg, data) -> list[int]:
    n = min(cfg.eval.side_by_side, len(data.test))
    return np.sort(np.random.default_rng(cfg.train.seed).choice(len(data.test), size=n, replace=False)).tolist()


def _answers(cfg, data, generator, picked: list[int]) -> list[str]:
    from tunekit.data.preference import prompt_of

    if not picked:
        return []
    return [a.text for a in generator.chat([prompt_of(data.test[i]) for i in picked], max_new_tokens=cfg.eval.max_new_tokens,
                                           batch_size=cfg.train.eval_batch_size)]


def run_starting(cfg, data, generator) -> PreferenceBaseline:
    """The starting model (``generator``: the bare base) on the test pairs: the baseline to beat."""
    started = time.perf_counter()
    pad = generator.tokenizer.pad_token_id
    chosen, rejected = score_pairs(generator.model, data.encoded["test"], pad, generator.device, cfg.train.eval_batch_size)
    metrics = pair_metrics(chosen, rejected, chosen, rejected, cfg.preference.beta)
    metrics.pop("reward_accuracy")  # no margin to be positive: it is 0 on every pair
    picked = _side_rows(cfg, data)
    answers = _answers(cfg, data, generator, picked)
    return PreferenceBaseline(STARTING, metrics, round(time.perf_counter() - started, 2), chosen, rejected, picked, answers)


def run_preference(cfg, data, generator, baselines: list, out_dir: Path, history: list[dict], console=None) -> EvalResult:
    """The tuned ``generator`` on the test pairs beside the starting model (``baselines[0]``): metrics,
    paired intervals, side-by-side answers, and ``predictions.jsonl`` with every pair's log-probabilities."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start, beta = baselines[0], cfg.preference.beta
    with generator.lock:
        chosen, rejected = score_pairs(generator.model, data.encoded["test"], generator.tokenizer.pad_token_id, generator.device,
                                       cfg.train.eval_batch_size)
    metrics = pair_metrics(chosen, rejected, start.chosen, start.rejected, beta)
    answers = _answers(cfg, data, generator, start.picked)
    from tunekit.data.preference import REJECTED, prompt_of

    side = [{"prompt": last_user(prompt_of(data.test[i])), "preferred": data.test[i]["messages"][-1]["content"],
             "non_preferred": data.test[i][REJECTED], "baseline": b, "fine_tuned": t}
            for i, b, t in zip(start.picked, start.answers, answers)]
    path = out_dir / "predictions.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i, row in enumerate(data.test):
            fh.write(json.dumps({"id": row["id"], "prompt": last_user(prompt_of(row)), "logp_chosen": chosen[i], "logp_rejected": rejected[i],
                                 "start_logp_chosen": start.chosen[i], "start_logp_rejected": start.rejected[i],
                                 "reward_margin": beta * ((chosen[i] - start.chosen[i]) - (rejected[i] - start.rejected[i]))},
                                ensure_ascii=False) + "\n")
    files = {"predictions": path}
    if history:
        files["training_curve"] = plots.training_curve(history, "loss", out_dir / "training_curve.png")
    analysis = {"versus_baseline": versus_start(chosen, rejected, start.chosen, start.rejected, beta, cfg.eval.bootstrap_resamples,
                                                cfg.train.seed),
                "side_by_side": side, "loss": cfg.preference.loss, "beta": beta,
                "decoding": {"max_new_tokens": cfg.eval.max_new_tokens, "strategy": "greedy"}}
    if cfg.gate.graders:  # their pass rates, which the gate decides on
        from tunekit.evaluate.gate_graders import for_gate

        analysis["gate_graders"] = for_gate(cfg, data, out_dir, analysis)
    return EvalResult(metrics=metrics, baseline=start.metrics, probs=None, files=files, analysis=analysis)


def evidence_lines(card: dict) -> list[str]:
    """The console's lines under the metric table: the primary metric's interval and the reward margin's."""
    a, primary, m = card["analysis"], card["primary"], card["model"]["metrics"]
    lines = []
    for name in dict.fromkeys([primary, *PREFERENCE_METRICS]):
        r = a["versus_baseline"][name]
        lines.append(f"{name} difference {r['diff']:+.4f}, 95% interval [{r['low']:+.4f}, {r['high']:+.4f}] (paired bootstrap against "
                     f"the {STARTING}, {m['pairs']} test pairs)")
    lines.append(f"{a['loss'].upper()} with beta {a['beta']}; reward accuracy {m['reward_accuracy']:.4f}; mean log-probability "
                 f"preferred {m['chosen_logp']:.2f}, non-preferred {m['rejected_logp']:.2f}")
    return lines


def render_markdown(card: dict) -> str:
    """The report card of a ``task: preference`` run."""
    data, train, a, reg = card["data"], card["train"], card["analysis"], card["registry"]
    m, b = card["model"]["metrics"], card["baseline"]["metrics"]
    lines = [f"# Report card: {card['name']} (run {card['run_id']})", "",
             f"**Verdict:** version {reg['version']} is **{reg['alias']}**: {reg['reason']}", "",
             f"## Held-out pairs: tuned vs the {STARTING} (same {m['pairs']} test pairs)", "",
             f"| metric | {STARTING} | tuned ({card['method']}, {a['loss']}) | difference | 95% interval | p |", "|---|---:|---:|---:|---:|---:|"]
    for name in PREFERENCE_METRICS:
        r = a["versus_baseline"][name]
        mark = " **(primary)**" if name == card["primary"] else ""
        lines.append(f"| {name}{mark} | {b[name]:.4f} | {m[name]:.4f} | {r['diff']:+.4f} | [{r['low']:+.4f}, {r['high']:+.4f}] | "
                     f"{'<0.001' if r['p_value'] < 0.001 else format(r['p_value'], '.3f')} |")
    lines += ["", ("Pair accuracy: the share of pairs whose preferred answer the model finds more likely (summed log-probability of the "
              f"answer tokens). Reward margin: beta ({a['beta']}) times the change, from the {STARTING}, of the log-probability gap "
              f"between the preferred and the non-preferred answer; 0 for the {STARTING} by definition. Reward accuracy (the share of "
              f"pairs with a positive margin): {m['reward_accuracy']:.4f}. Intervals: paired bootstrap over test pairs."), ""]
    champion = reg.get("champion")
    if champion:
        lines += [f"Champion before this run: v{champion['version']}, {card['primary']} {champion['score']:.4f} ({champion['how']}).", ""]
    side = a.get("side_by_side") or []
    if side:
        lines += [f"## Side by side ({len(side)} test prompts, greedy decoding)", "",
                  f"| prompt | preferred | non-preferred | {STARTING} | tuned |", "|---|---|---|---|---|"]
        lines += [f"| {_cell(r['prompt'])} | {_cell(r['preferred'])} | {_cell(r['non_preferred'])} | {_cell(r['baseline'])} | "
                  f"{_cell(r['fine_tuned'])} |" for r in side]
    lines += ["", "## Data", "",
              (f"- dataset fingerprint `{data['fingerprint'][:16]}` ({'reused frozen splits' if data['reused'] else 'splits frozen now'}), "
              f"test fingerprint `{data['test_fingerprint'][:16]}`"),
              (f"- pairs: train {data['rows']['train']}, validation {data['rows']['validation']}, test {data['rows']['test']}; "
              f"chat template `{data['template']}`"), f"- full data report: `{data['report_path']}`",
              "", "## Training", "",
              (f"- base model `{card['base_model']}`, method `{card['method']}`, loss `{a['loss']}`: {train['trainable_params']:,} of "
              f"{train['total_params']:,} parameters trained"),
              (f"- {len(train['history'])} epoch(s), best epoch {train['best_epoch']}{', stopped early' if train['stopped_early'] else ''}; "
              f"{train['seconds']:.0f} s, peak memory {train['peak_memory_mb']:.0f} MB"), "",
              "| epoch | train loss | validation loss | validation pair accuracy | validation reward margin |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {h['epoch']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | {h['val_pair_accuracy']:.4f} | {h['val_reward_margin']:.4f} |"
              for h in train["history"]]
    lines += ["", "## Plots", "", *[f"![{name}]({Path(path).name})" for name, path in card["plots"].items()], "", "## Lineage", "",
              f"- registered model `{card['name']}` version {reg['version']}, MLflow run `{reg['mlflow_run_id']}` at `{reg['tracking_uri']}`",
              f"- config hash `{card['lineage']['config_hash'][:16]}`; adapter `{card['adapter_dir']}`",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in card["lineage"]["versions"].items()), ""]
    return "\n".join(lines)


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"
