"""The report card of a run: ``report.md`` and ``report.html`` for people, ``report.json`` for machines.

The card is assembled by the pipeline from every stage's results; this module only renders it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tunekit.config import PREFERENCE_METRICS, REGRESSION_METRICS, lower_is_better
from tunekit.evaluate.textgen import GENERATION_METRICS

METRIC_ORDER = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "balanced_accuracy", "mcc")


def write(card: dict, out_dir: Path) -> tuple[Path, Path, Path]:
    """Write ``report.md``, ``report.json`` and the self-contained ``report.html`` into ``out_dir``."""
    from tunekit.evaluate import html

    md, js, page = out_dir / "report.md", out_dir / "report.json", out_dir / "report.html"
    js.write_text(json.dumps(card, indent=2, default=str))
    text = render_markdown(card)
    md.write_text(text)
    page.write_text(html.render(text, out_dir, f"{card['name']} report card"))
    return md, js, page


def restamp(run_dir: Path, alias: str, why: str) -> bool:
    """Rewrite a run's report card after its version changed alias by hand (promote, rollback), so
    the card never says "challenger" for the version that serves. False when the run folder is not here."""
    path = run_dir / "report.json"
    if not path.is_file():
        return False
    card = json.loads(path.read_text())
    card["registry"]["alias"] = alias
    card["registry"]["reason"] = f"{why}; at registration: {card['registry']['reason'].split('; at registration: ')[-1]}"
    write(card, run_dir)
    return True


def comparison_rows(card: dict) -> list[tuple[str, float, float, float]]:
    """(metric, baseline, fine-tuned, difference) for the headline metrics."""
    base, tuned = card["baseline"]["metrics"], card["model"]["metrics"]
    return [(m, base[m], tuned[m], tuned[m] - base[m]) for m in _headline_metrics(card)]


def change_word(metric: str, diff: float) -> str:
    """``better``, ``worse`` or ``same`` for a fine-tuned-minus-baseline difference of ``metric``,
    in the metric's own direction (a negative RMSE difference is better)."""
    if diff == 0:
        return "same"
    return "better" if (diff < 0) == lower_is_better(metric) else "worse"


def direction_note(r: dict) -> str:
    """" (lower is better)" after an error metric's name in a comparison row that says so."""
    return " (lower is better)" if r.get("lower_is_better") else ""


def verdict_word(r: dict) -> str:
    """" (better)" / " (worse)" after a difference in a comparison row that carries its direction."""
    if "better" not in r:
        return ""
    return " (same)" if r["diff"] == 0 else (" (better)" if r["better"] else " (worse)")


def render_markdown(card: dict) -> str:
    if _task(card).paired:  # preference pairs: the evaluation that scores them renders their card
        from tunekit.evaluate.preference import render_markdown as render_pairs

        return render_pairs(card)
    if _is_generation(card):
        return _render_generation(card)
    if _is_regression(card):
        return _render_regression(card)
    primary = card["primary"]
    data, train = card["data"], card["train"]
    lines = [
        *_verdict(card),
        "",
        "## Test metrics: fine-tuned vs baseline (same test rows)",
        "",
        f"| metric | baseline ({card['baseline']['name']}) | fine-tuned ({card['method']}) | difference |",
        "|---|---:|---:|---:|",
    ]
    for metric, b, t, d in comparison_rows(card):
        mark = " **(primary)**" if metric == primary else ""
        lines.append(f"| {metric}{mark} | {b:.4f} | {t:.4f} | {d:+.4f} |")
    lines += _analysis_sections(card)
    lines += _champion(card)
    lines += [
        "",
        "## Data",
        "",
        _fingerprints(data),
        f"- rows: train {data['rows']['train']}, validation {data['rows']['validation']}, test {data['rows']['test']}; {data['n_labels']} labels",
        f"- full data report: `{data['report_path']}`",
    ]
    lines += _training(card, primary, f"{train['train_examples_per_second']:.1f} training examples/s")
    worst = sorted(card["model"]["metrics"]["per_class_f1"].items(), key=lambda kv: kv[1])[:10]
    lines += ["", "## Weakest classes (test F1)", "", "| label | fine-tuned F1 | baseline F1 |", "|---|---:|---:|"]
    lines += [f"| {label} | {f1:.3f} | {card['baseline']['metrics']['per_class_f1'].get(label, 0.0):.3f} |" for label, f1 in worst]
    lines += _label_noise_section(card.get("label_noise"))
    return "\n".join(lines + _plots_and_lineage(card))


def _render_generation(card: dict) -> str:
    """The card of a ``task: generation`` run: text metrics against the best base-model baseline,
    every baseline, the language-model loss, answers side by side, then training as for labels."""
    data, train, analysis = card["data"], card["train"], card["analysis"]
    primary, versus = card["primary"], analysis.get("versus_baseline", {})
    decoding = analysis.get("decoding")
    lines = [
        *_verdict(card),
        "",
        "## Test metrics: fine-tuned vs best baseline (same test rows)",
        "",
        f"| metric | best baseline ({card['baseline']['name']}) | fine-tuned ({card['method']}) | difference | 95% interval | p |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for metric, b, t, d in comparison_rows(card):
        mark = " **(primary)**" if metric == primary else ""
        r = versus.get(metric)
        interval = f"[{r['low']:+.4f}, {r['high']:+.4f}] | {p_value(r['p_value'])}" if r else "n/a | n/a"
        lines.append(f"| {metric}{mark} | {b:.4f} | {t:.4f} | {d:+.4f} | {interval} |")
    lines += ["", ("Exact match and ROUGE-L are means over test rows; BLEU and chrF are corpus scores; all in [0, 1]. "
                   "Intervals: paired bootstrap over test rows of fine-tuned minus baseline.")]
    if decoding:
        lines.append(f"Decoding: {decoding['strategy']}, at most {decoding['max_new_tokens']} new tokens.")
    lines += _champion(card)
    lines += _baselines(card)
    lines += _lm_loss(card["model"]["metrics"])
    lines += _grounding(analysis.get("grounding"))
    lines += _side_by_side(analysis.get("side_by_side") or [])
    over = data["overlength"]
    lines += [
        "",
        "## Data",
        "",
        _fingerprints(data),
        f"- rows: train {data['rows']['train']}, validation {data['rows']['validation']}, test {data['rows']['test']}; chat template `{data['template']}`",
        f"- over-length rows (policy `{over['policy']}`): {over['over']} over the maximum length, {over['truncated']} truncated, {over['dropped']} dropped",
        f"- full data report: `{data['report_path']}`",
    ]
    lines += _training(card, "loss", f"{train['train_tokens_per_second']:,.0f} training tokens/s")
    return "\n".join(lines + _plots_and_lineage(card))


def _grounding(result: dict | None) -> list[str]:
    """Grounded rate per model: answers whose quotes all occur in the prompt and whose content words mostly do."""
    if not result:
        return []
    lines = ["", "## Grounding in the prompt", "", "| model | grounded | rate | quotes not in the prompt | mean word support |", "|---|---:|---:|---:|---:|"]
    for name, r in result.items():
        lines.append(f"| {name.replace('_', ' ')} | {r['grounded']} of {r['n']} | {r['rate']:.3f} | {r['quotes_missing']} | {r['mean_support']:.3f} |")
    return lines


def _render_regression(card: dict) -> str:
    """The card of a ``task: regression`` run: error metrics against TF-IDF + ridge with paired
    intervals, which sections do not apply, slices, the target, training, and the plots."""
    from tunekit.evaluate.regression import NOT_APPLICABLE

    data, train, analysis = card["data"], card["train"], card["analysis"]
    primary, versus = card["primary"], analysis.get("versus_baseline", {})
    lines = [
        *_verdict(card),
        "",
        "## Test metrics: fine-tuned vs baseline (same test rows)",
        "",
        f"| metric | baseline ({card['baseline']['name']}) | fine-tuned ({card['method']}) | difference | 95% interval | p |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for metric, b, t, d in comparison_rows(card):
        mark = " **(primary)**" if metric == primary else ""
        lower = " (lower is better)" if lower_is_better(metric) else ""
        r = versus.get(metric)
        interval = f"[{r['low']:+.4f}, {r['high']:+.4f}] | {p_value(r['p_value'])}" if r else "n/a | n/a"
        lines.append(f"| {metric}{mark}{lower} | {b:.4f} | {t:.4f} | {d:+.4f} ({change_word(metric, d)}) | {interval} |")
    lines += ["", "MSE, RMSE and MAE are errors in the target's units: lower is better. R² is the share of the target's variance "
                  "explained: 1 is perfect, 0 is no better than always predicting the mean, higher is better. Differences are "
                  "fine-tuned minus baseline; intervals: paired bootstrap over test rows.",
              "", "Not computed for regression (they apply to labels): " + ", ".join(analysis.get("not_applicable", NOT_APPLICABLE)) + "."]
    lines += _regression_champion(analysis.get("versus_champion"))
    lines += _champion(card)
    lines += _regression_slices(analysis.get("slices") or [], primary)
    if analysis.get("explanations"):
        from tunekit.evaluate.explain import render_markdown as explain_md

        lines += ["", "## Why: word attributions (occlusion) on sample test rows", "",
                  "Each number is how much the predicted value drops when the word is removed.", ""]
        lines += [f"- {explain_md(e)}" for e in analysis["explanations"]]
    target, scaling = data.get("target") or {}, train.get("target_scaling")
    lines += [
        "",
        "## Data",
        "",
        _fingerprints(data),
        f"- rows: train {data['rows']['train']}, validation {data['rows']['validation']}, test {data['rows']['test']}",
    ]
    if target:
        lines.append("- target: " + "; ".join(f"{split} mean {s['mean']:.4g}, std {s['std']:.4g}, range {s['min']:.4g} to {s['max']:.4g}"
                                              for split, s in target.items() if s.get("n")))
    lines.append(f"- full data report: `{data['report_path']}`")
    lines += _training(card, primary, f"{train['train_examples_per_second']:.1f} training examples/s")
    if scaling:
        lines += ["", f"The network learns the target standardised with the training mean {scaling['mean']:.4g} and standard deviation "
                      f"{scaling['std']:.4g}; its outputs are mapped back (value x std + mean) before scoring and serving."]
    return "\n".join(lines + _plots_and_lineage(card))


def _regression_champion(vc: dict | None) -> list[str]:
    if not vc:
        return []
    lines = ["", f"## Against the current champion v{vc['version']} (same {vc['rows']} test rows)", "",
             "| metric | champion | this version | difference | 95% interval | p |", "|---|---:|---:|---:|---:|---:|"]
    for metric, r in vc["metrics"].items():
        lines.append(f"| {metric}{direction_note(r)} | {r['a']:.4f} | {r['b']:.4f} | {r['diff']:+.4f}{verdict_word(r)} | "
                     f"[{r['low']:+.4f}, {r['high']:+.4f}] | {p_value(r['p_value'])} |")
    return lines


def _regression_slices(rows: list[dict], primary: str) -> list[str]:
    if not rows:
        return []
    worse = sum(r["worse"] for r in rows)
    lines = ["", "## Slices", "", f"Slices where the fine-tuned model is worse than the baseline on {primary}: {worse} of {len(rows)}.", "",
             f"| slice | rows | fine-tuned {primary} | baseline {primary} | fine-tuned MAE | baseline MAE | |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        flag = "**worse than baseline**" if r["worse"] else ""
        lines.append(f"| {r['slice']} | {r['n']} | {r[primary]:.4f} | {r['baseline_' + primary]:.4f} | {r['mae']:.4f} | {r['baseline_mae']:.4f} | {flag} |")
    return lines


def _baselines(card: dict) -> list[str]:
    """Every baseline tried (zero- and few-shot base model), the one in the headline marked."""
    lines = ["", "## Baselines (same test rows)", "", "| baseline | " + " | ".join(GENERATION_METRICS) + " |",
             "|---|" + "---:|" * len(GENERATION_METRICS)]
    for b in card.get("baselines") or [card["baseline"]]:
        mark = " **(best, in the headline)**" if b["name"] == card["baseline"]["name"] else ""
        lines.append(f"| {b['name']}{mark} | " + " | ".join(f"{b['metrics'][m]:.4f}" for m in GENERATION_METRICS) + " |")
    return lines


def _lm_loss(metrics: dict) -> list[str]:
    """Validation and test loss (mean token cross-entropy on the reference answers) and perplexity."""
    lines = ["", "## Language-model loss on the reference answers", "", "| split | loss | perplexity |", "|---|---:|---:|"]
    for split in ("val", "test"):
        if f"{split}_loss" in metrics:
            name = "validation" if split == "val" else "test"
            lines.append(f"| {name} | {metrics[f'{split}_loss']:.4f} | {metrics[f'{split}_perplexity']:.3f} |")
    if "scored_rows" in metrics:
        lines += ["", f"Text metrics scored on {metrics['scored_rows']} test rows."]
    return lines


def _side_by_side(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", f"## Side by side ({len(rows)} sampled test rows)", "",
             "| prompt | reference | baseline | fine-tuned | ROUGE-L baseline / fine-tuned |", "|---|---|---|---|---:|"]
    lines += [f"| {_text_cell(r['prompt'])} | {_text_cell(r['reference'])} | {_text_cell(r['baseline'])} | "
              f"{_text_cell(r['fine_tuned'])} | {r['rouge_l_baseline']:.2f} / {r['rouge_l_fine_tuned']:.2f} |" for r in rows]
    return lines


def _verdict(card: dict) -> list[str]:
    reg = card["registry"]
    return [f"# Report card: {card['name']} (run {card['run_id']})", "",
            f"**Verdict:** version {reg['version']} is **{reg['alias']}**: {reg['reason']}"]


def _champion(card: dict) -> list[str]:
    champion = card["registry"].get("champion")
    if not champion:
        return []
    return ["", f"Champion before this run: v{champion['version']}, {card['primary']} {champion['score']:.4f} ({champion['how']})."]


def _fingerprints(data: dict) -> str:
    sample = data.get("test_sample")
    scored = (f"; test metrics on a sample of {sample['scored']} of the {sample['of']} test rows (eval.max_test_rows, stratified by "
              f"{sample['stratified_by']}, seed {sample['seed']}), not the full test set" if sample else "")
    return (f"- dataset fingerprint `{data['fingerprint'][:16]}` ({'reused frozen splits' if data['reused'] else 'splits frozen now'}), "
            f"test fingerprint `{data['test_fingerprint'][:16]}`{scored}")


def _training(card: dict, val_metric: str, speed: str) -> list[str]:
    """Parameters, epochs and speed, then one row per epoch with ``val_<val_metric>`` from the history."""
    train = card["train"]
    lines = [
        "",
        "## Training",
        "",
        f"- base model `{card['base_model']}`, method `{card['method']}`: {train['trainable_params']:,} of {train['total_params']:,} parameters trained ({100 * train['trainable_params'] / train['total_params']:.2f}%)",
        f"- {len(train['history'])} epoch(s), best epoch {train['best_epoch']} (validation {val_metric} {train['best_score']:.4f}){', stopped early' if train['stopped_early'] else ''}",
        f"- {train['seconds']:.0f} s, {speed}, peak memory {train['peak_memory_mb']:.0f} MB",
        "",
        "| epoch | train loss | validation " + val_metric + " | seconds |",
        "|---:|---:|---:|---:|",
    ]
    return lines + [f"| {h['epoch']} | {h['train_loss']:.4f} | {h[f'val_{val_metric}']:.4f} | {h['seconds']} |" for h in train["history"]]


def _plots_and_lineage(card: dict) -> list[str]:
    reg, lineage = card["registry"], card["lineage"]
    lines = ["", "## Plots", ""]
    lines += [f"![{name}]({Path(path).name})" for name, path in card["plots"].items()]
    return lines + [
        "",
        "## Lineage",
        "",
        f"- registered model `{card['name']}` version {reg['version']}, MLflow run `{reg['mlflow_run_id']}` at `{reg['tracking_uri']}`",
        f"- git commit of the project: `{lineage['git_commit'] or 'not a git repository'}`",
        f"- config hash `{lineage['config_hash'][:16]}`; adapter `{card['adapter_dir']}`",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in lineage["versions"].items()),
        "",
    ]


def _task(card: dict):
    """The card's task row (cards written before every card recorded its task are classification's)."""
    from tunekit import task_kinds

    return task_kinds.kind(card.get("task", "classification"))


def _is_generation(card: dict) -> bool:
    return _task(card).causal


def _is_regression(card: dict) -> bool:
    return _task(card).numeric


def _headline_metrics(card: dict) -> tuple[str, ...]:
    if _task(card).paired:
        return PREFERENCE_METRICS
    if _is_regression(card):
        return REGRESSION_METRICS
    return GENERATION_METRICS if _is_generation(card) else METRIC_ORDER


def _analysis_sections(card: dict) -> list[str]:
    """Significance, fixed/broken rows, slices, calibration, curves, robustness, suite, explanations."""
    a = card.get("analysis") or {}
    lines: list[str] = []
    if "versus_baseline" in a:
        lines += ["", "## Is the difference real? (paired bootstrap, 95% interval)", "",
                  "| metric | baseline | fine-tuned | difference | 95% interval | p |", "|---|---:|---:|---:|---:|---:|"]
        for metric, r in a["versus_baseline"].items():
            lines.append(f"| {metric} | {r['a']:.4f} | {r['b']:.4f} | {r['diff']:+.4f} | [{r['low']:+.4f}, {r['high']:+.4f}] | {p_value(r['p_value'])} |")
        m = a["mcnemar"]
        lines += ["", f"McNemar's test ({m['method']}): the fine-tuned model is right where the baseline is wrong on "
                      f"{m['a_wrong_b_right']} rows, and wrong where the baseline is right on {m['a_right_b_wrong']} rows; p = {m['p_value']:.3g}."]
    if a.get("tasks"):
        lines += ["", f"## Each task against the baseline ({card['primary']}, paired bootstrap on the task's own rows)", "",
                  "| task | rows | baseline | fine-tuned | difference | 95% interval |", "|---|---:|---:|---:|---:|---:|"]
        for task, r in a["tasks"].items():
            lines.append(f"| {task} | {r['rows']} | {r['a']:.4f} | {r['b']:.4f} | {r['diff']:+.4f} | [{r['low']:+.4f}, {r['high']:+.4f}] |")
    if a.get("versus_champion"):
        vc = a["versus_champion"]
        lines += ["", f"## Against the current champion v{vc['version']} (same {vc['rows']} test rows)", "",
                  "| metric | champion | this version | difference | 95% interval | p |", "|---|---:|---:|---:|---:|---:|"]
        for metric, r in vc["metrics"].items():
            lines.append(f"| {metric} | {r['a']:.4f} | {r['b']:.4f} | {r['diff']:+.4f} | [{r['low']:+.4f}, {r['high']:+.4f}] | {p_value(r['p_value'])} |")
    if "diff" in a:
        lines += _diff_section(a["diff"])
    if a.get("slices"):
        # every length and metadata slice; of the (many) label slices only those worse than the baseline
        shown = [r for r in a["slices"] if not r["slice"].startswith("label=") or r["worse"]]
        n_labels = sum(r["slice"].startswith("label=") for r in a["slices"])
        lines += ["", "## Slices", "", f"Labels worse than the baseline: {sum(r['worse'] for r in a['slices'] if r['slice'].startswith('label='))} of {n_labels} (listed below).",
                  "", f"| slice | rows | fine-tuned {card['primary']} | baseline | |", "|---|---:|---:|---:|---|"]
        for r in shown:
            flag = "**worse than baseline**" if r["worse"] else ""
            lines.append(f"| {r['slice']} | {r['n']} | {r[card['primary']]:.4f} | {r['baseline_' + card['primary']]:.4f} | {flag} |")
    if "collapsed" in a:
        c = a["collapsed"]
        lines += ["", "## Warning: one class for every row", "",
                  f"The model predicts **{c['label']}** for all {c['rows']} test rows (of {c['labels']} labels): it learnt the majority "
                  "class and nothing else, and no temperature is applied. Try more epochs, a higher learning rate or another method "
                  "(`tunekit compare-methods`)."]
    if "calibration" in a:
        c = a["calibration"]
        fitted = c.get("fitted_temperature", c["temperature"])
        lines += ["", "## Calibration", "", f"Expected calibration error on test: {c['ece_before']:.4f} before, {c['ece_after']:.4f} after "
                  f"temperature scaling (T = {fitted:.3f}, fitted on validation)."]
        held = (f" (held-out validation halves: calibration error {c['ece_held_out_before']:.4f} -> {c['ece_held_out_after']:.4f}, "
                f"log-loss {c['nll_held_out_before']:.4f} -> {c['nll_held_out_after']:.4f})" if c.get("nll_held_out_before") is not None else "")
        if c.get("applied", True):
            lines.append(f"The decision was made on validation, never on test: the server applies this temperature{held}.")
        else:
            lines.append(f"The decision was made on validation, never on test: the server does **not** apply it, and serves the model's own "
                         f"probabilities{held}.")
        if c.get("warning"):
            lines.append(f"Warning: {c['warning']}.")
    if a.get("curves", {}).get("macro_roc_auc") is not None:
        cv = a["curves"]
        lines += ["", f"One-vs-rest: macro ROC AUC {cv['macro_roc_auc']:.4f}, macro average precision {cv['macro_average_precision']:.4f}."]
    if "robustness" in a:
        lines += ["", "## Robustness: predictions that flip under small edits", "", "| perturbation | rows changed | flip rate |", "|---|---:|---:|"]
        lines += [f"| {name} | {r['n_changed']} | {r['flip_rate']:.3f} |" for name, r in a["robustness"].items()]
    if "suite" in a:
        su = a["suite"]
        lines += ["", f"## Behavioural suite: {su['passed']} passed, {su['failed']} failed", "", "| case | kind | result |", "|---|---|---|"]
        lines += [f"| {c['name']} | {c['kind']} | {'pass' if c['passed'] else 'FAIL: ' + _failures(c)} |" for c in su["cases"]]
    if a.get("explanations"):
        from tunekit.evaluate.explain import render_markdown as explain_md

        lines += ["", "## Why: word attributions (occlusion) on sample test rows", ""]
        lines += [f"- {explain_md(e)}" for e in a["explanations"]]
    return lines


def _failures(case: dict) -> str:
    return "; ".join(str(f) for f in case["failures"][:3]).replace("|", "/")


def _diff_section(diff: dict) -> list[str]:
    counts = diff["counts"]
    lines = ["", "## What changed against the baseline", "",
             f"Fixed (baseline wrong, fine-tuned right): {counts['fixed']}; broken (baseline right, fine-tuned wrong): "
             f"{counts['broken']}; both wrong: {counts['both_wrong']}.", ""]
    for kind in ("fixed", "broken"):
        if diff.get(kind):
            lines += [f"| {kind} | label | baseline | fine-tuned |", "|---|---|---|---|"]
            lines += [f"| {_cell(e['text'])} | {e['label']} | {e['a']} | {e['b']} |" for e in diff[kind]]
            lines.append("")
    return lines


def _label_noise_section(result: dict | None) -> list[str]:
    from tunekit.data.noise import markdown

    section = markdown(result) if result else ""
    return ["", section] if section else []


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")[:120]


MARKDOWN_SPECIAL = "\\`*_[]<>&|#!~"


def _text_cell(text: str, limit: int = 200) -> str:
    """Generated or reference text in a table cell, shown as written: cut to ``limit`` characters
    (before escaping, so no escape is cut in half), every Markdown and HTML character escaped with
    a backslash (``|`` stays text, ``<b>`` is not rendered in report.html), newlines as ``<br>``,
    and an empty answer visibly so."""
    if not text.strip():
        return "*(empty)*" if not text else f"*(only whitespace: {len(text)} characters)*"
    text = re.sub(r"\n{3,}", "\n\n", text.strip())  # a model stuck emitting newlines should not make a row a page tall
    cut = text[:limit] + ("..." if len(text) > limit else "")
    escaped = "".join("\\" + ch if ch in MARKDOWN_SPECIAL else ch for ch in cut)
    return escaped.replace("\r\n", "\n").replace("\n", "<br>")


def p_value(p: float) -> str:
    """A bootstrap p of 0 only means "below the resolution of the resamples"."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"
