"""The console summary of a run: the metric table against the baseline, the statistics behind it
in one line each (``*_lines``, one function per task, named by the task's row), and where the
report card is. The same card renders to files in ``markdown``."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunekit.config import lower_is_better
from tunekit.report import markdown

__all__ = ["classification_lines", "generation_lines", "print_summary", "regression_lines"]


def print_summary(console: Console, card: dict, lines: list[str], report_page: Path, default_tracking: bool) -> None:
    """The table, the evidence ``lines`` (console markup), the registry's decision and what to do next."""
    table = Table(title=f"{card['name']}: test metrics on {card['data']['rows']['test']} rows")
    table.add_column("metric")
    table.add_column(f"baseline ({card['baseline']['name']})", justify="right")
    table.add_column(f"fine-tuned ({card['method']})", justify="right")
    table.add_column("difference", justify="right")
    for metric, b, t, d in markdown.comparison_rows(card):
        style = "bold" if metric == card["primary"] else None
        word = markdown.change_word(metric, d)
        colour = {"better": "green", "worse": "red"}.get(word, "default")
        name = f"{metric} (lower is better)" if lower_is_better(metric) else metric
        table.add_row(name, f"{b:.4f}", f"{t:.4f}", f"[{colour}]{d:+.4f} ({word})[/]", style=style)
    console.print(table)
    for line in lines:
        console.print(line, highlight=False)
    for g in card["analysis"].get("gate_graders") or []:  # gate.graders: pass rates of the model and each baseline
        rates = ", ".join(f"{name} {m['rate']:.3f}" for name, m in g["models"].items())
        console.print(f"grader {escape(g['name'])} ({g['type']}): pass rate {escape(rates)} (required {g['min_pass_rate']:.3f})", highlight=False)
    reg = card["registry"]
    colour = "green" if reg["passed"] else "yellow"
    console.print(f"[{colour}]Registered {card['name']} version {reg['version']} as [bold]{reg['alias']}[/bold][/]: {escape(reg['reason'])}")
    console.print(f"Report card: {report_page} (also .md and .json)")
    if reg["passed"]:
        console.print(f"Serve it:    tunekit serve --model {card['name']}@champion" + ("" if default_tracking else f" --tracking-uri {reg['tracking_uri']}"))


def generation_lines(card: dict) -> list[str]:
    a, primary, m = card["analysis"], card["primary"], card["model"]["metrics"]
    r = a["versus_baseline"][primary]
    return [f"{primary} difference {r['diff']:+.4f}, 95% interval [{r['low']:+.4f}, {r['high']:+.4f}] (paired bootstrap "
            f"against {card['baseline']['name']}, {m['scored_rows']} test rows, greedy decoding)",
            f"test loss {m['test_loss']:.4f} (perplexity {m['test_perplexity']:.2f}); baselines: "
            + ", ".join(f"{b['name']} {b['metrics'][primary]:.4f}" for b in card["baselines"])]


def classification_lines(card: dict) -> list[str]:
    a, primary, lines = card["analysis"], card["primary"], []
    if "collapsed" in a:
        c = a["collapsed"]
        lines.append(f"[bold red]The model predicts one class, {escape(c['label'])!r}, for every one of the {c['rows']} test rows[/]: it learnt "
                     "the majority class and nothing else. Try more epochs, a higher learning rate or another method (tunekit compare-methods)")
    r = a["versus_baseline"].get(primary) or a["versus_baseline"]["accuracy"]
    lines.append(f"{primary if primary in a['versus_baseline'] else 'accuracy'} difference {r['diff']:+.4f}, 95% interval "
                 f"[{r['low']:+.4f}, {r['high']:+.4f}] (paired bootstrap); McNemar p = {a['mcnemar']['p_value']:.3g}")
    lines.append(_worse_slices(a))
    if "calibration" in a:
        c = a["calibration"]
        lines.append(f"test calibration error (ECE) {c['ece_before']:.4f} -> {c['ece_after']:.4f} with temperature "
                     f"{c.get('fitted_temperature', c['temperature']):.2f}, " + ("applied by the server (decided on validation)"
                                                                                  if c.get("applied", True) else "not applied (decided on validation)"))
        if c.get("warning"):
            lines.append(f"[yellow]calibration: {escape(c['warning'])}[/]")
    if "robustness" in a:
        lines.append("flip rate under edits: " + ", ".join(f"{k} {v['flip_rate']:.1%}" for k, v in a["robustness"].items()))
    if "suite" in a:
        lines.append(f"behavioural suite: {a['suite']['passed']} passed, {a['suite']['failed']} failed")
    return lines


def regression_lines(card: dict) -> list[str]:
    """The regression statistics in words: which model is better on the primary error, how sure."""
    a, primary = card["analysis"], card["primary"]
    r, m, b = a["versus_baseline"][primary], card["model"]["metrics"], card["baseline"]["metrics"]
    word = markdown.change_word(primary, r["diff"])
    verdict = "the same as" if word == "same" else f"{word} than"
    sure = "excludes 0" if r["low"] > 0 or r["high"] < 0 else "includes 0: not a clear difference"
    lines = [f"{primary}: fine-tuned {r['b']:.4f} is {verdict} the baseline's {r['a']:.4f}"
             + (" (lower is better)" if lower_is_better(primary) else "") + f"; the 95% interval of fine-tuned minus baseline "
             f"[{r['low']:+.4f}, {r['high']:+.4f}] (paired bootstrap) {sure}"]
    if primary != "r2":
        lines.append(f"R² fine-tuned {m['r2']:.4f} vs baseline {b['r2']:.4f} (1 is perfect, 0 is predicting the mean)")
    lines.append(_worse_slices(a))
    return lines


def _worse_slices(analysis: dict) -> str:
    worse = [s["slice"] for s in analysis["slices"] if s["worse"]]
    more = f" and {len(worse) - 6} more" if len(worse) > 6 else ""
    return f"slices worse than the baseline: {escape(', '.join(worse[:6])) + more if worse else 'none'}"
