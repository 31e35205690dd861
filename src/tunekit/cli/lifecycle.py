"""The lifecycle commands: run, retrain, compare-methods, tune, plan, reproduce, export, report, eval, explain."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tunekit.artifacts import Workspace
from tunekit.cli.common import (
    DEFAULT_WORKSPACE,
    GATE_FAILED_EXIT,
    ConfigArg,
    JsonOpt,
    SetOpt,
    TrackingOpt,
    app,
    console,
    err_console,
    load,
    model_dir,
    tracking,
)
from tunekit.errors import TunekitError


@app.command()
def run(config: ConfigArg, set_: SetOpt = None,
        strict: Annotated[bool, typer.Option(help=f"Exit with code {GATE_FAILED_EXIT} when the new version is not promoted.")] = False,
        resume: Annotated[str | None, typer.Option(help="Id of an interrupted run (a folder in WORKSPACE/runs) to continue from its last checkpoint.")] = None,
        nproc: Annotated[int, typer.Option("--nproc", min=1, help="Train data-parallel in N processes on this machine: one per GPU, or CPU processes. "
                                                                   "The same result as one process with the same train.batch_size (the global batch). "
                                                                   "Leave it out under torchrun or accelerate launch.")] = 1) -> None:
    """Run the whole lifecycle: data check, baseline, train, evaluate, register and gate."""
    from tunekit import pipeline
    from tunekit.train import distributed

    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # run this same command in N processes; rank 0's exit code is ours
        args = ["run", str(config), *(f"--set={s}" for s in set_ or []), *(["--strict"] if strict else []),
                *(["--resume", resume] if resume else []), f"--nproc={nproc}"]
        raise typer.Exit(distributed.launch(nproc, args))
    distributed.init()  # one of several processes (--nproc, torchrun, accelerate launch): join the group, take GPU LOCAL_RANK
    outcome = pipeline.run(load(config, set_), console if distributed.is_main() else Console(quiet=True), resume)
    if outcome is None:  # a rank other than 0: it helped train; rank 0 evaluates, registers and reports
        return
    if strict and not outcome.decision.passed:
        raise typer.Exit(GATE_FAILED_EXIT)


@app.command()
def retrain(config: ConfigArg, from_feedback: Annotated[bool, typer.Option("--from-feedback", help="Add the corrections collected by the server (POST /v1/feedback) to the training data; with task: preference, corrected chat answers become preference pairs (chosen: the correction, rejected: the model's answer).")] = False,
            set_: SetOpt = None,
            strict: Annotated[bool, typer.Option(help=f"Exit with code {GATE_FAILED_EXIT} when the new version is not promoted.")] = False) -> None:
    """Retrain on the training data plus production feedback (labels, answers, or preference pairs for task: preference); promotion only through the gate (the champion stays if it fails)."""
    from tunekit.pipeline.retrain import retrain_from_feedback

    if not from_feedback:
        raise typer.BadParameter("say where the new data comes from: --from-feedback (for a plain retrain, use tunekit run)")
    outcome = retrain_from_feedback(load(config, set_), console)
    if strict and not outcome.decision.passed:
        raise typer.Exit(GATE_FAILED_EXIT)


@app.command("compare-methods")
def compare_methods_command(config: ConfigArg,
                            methods: Annotated[str, typer.Option(help="Comma-separated method kinds, e.g. lora,ia3,prompt_tuning,full.")] = "lora,ia3,freeze,full",
                            set_: SetOpt = None) -> None:
    """Train several methods on the same frozen splits; one table of cost and quality (eval.primary) against the baseline, for any task."""
    from tunekit.pipeline.compare import compare_methods

    compare_methods(load(config, set_), [m.strip() for m in methods.split(",") if m.strip()], console)


@app.command()
def tune(config: ConfigArg, set_: SetOpt = None,
         trials: Annotated[int | None, typer.Option(help="Override tune.trials.")] = None,
         minutes: Annotated[float | None, typer.Option(help="Override tune.minutes.")] = None) -> None:
    """Hyperparameter search with Optuna on the validation split; writes the best trial's config."""
    from tunekit.train.tune import tune as run_search

    extra = [f"tune.trials={trials}"] if trials else []
    extra += [f"tune.minutes={minutes}"] if minutes else []
    run_search(load(config, [*(set_ or []), *extra]), console)


@app.command()
def plan(config: ConfigArg, gpu: Annotated[str | None, typer.Option(help="GPU to check the fit against, e.g. h100-80gb.")] = None,
         set_: SetOpt = None,
         time_it: Annotated[bool, typer.Option("--time/--no-time", help="Also measure a few training steps here and estimate the run's "
                                                                         "training time on this machine (classification and regression).")] = True) -> None:
    """Estimate parameters and training memory for the configured method before training; say whether it fits, and how long it takes here."""
    from tunekit import data, task_kinds
    from tunekit.train import plan as planning

    cfg = load(config, set_)
    task = task_kinds.kind(cfg.task)
    # an encoder's splits are read (and frozen): the head's size is part of the plan, and the time is measured on them
    prepared = None if task.causal else data.prepare(cfg)
    labels = None if task.causal else 1 if task.numeric else len(prepared.labels)
    console.print(planning.render_markdown(planning.plan(cfg, gpu, num_labels=labels)), markup=False, highlight=False)
    if time_it and prepared is not None:
        console.print(planning.render_time(planning.estimate_time(cfg, prepared)), markup=False, highlight=False)


@app.command("reproduce")
def reproduce_command(model: Annotated[str, typer.Argument(help="NAME/VERSION or NAME@ALIAS of a registered version.")],
                      tolerance: Annotated[float, typer.Option(help="Largest allowed |reproduced - recorded| per metric, times max(1, |recorded|).")] = 1e-4,
                      workspace: Annotated[Path | None, typer.Option(help="Workspace holding the frozen splits. Default: the one the version was trained in.")] = None,
                      tracking_uri: TrackingOpt = None) -> None:
    """Train a registered version again from its recorded config, data and seed; exit 1 unless every test metric matches."""
    from tunekit.pipeline.reproduce import reproduce

    result = reproduce(model, tracking(tracking_uri), tolerance, console, workspace)
    table = Table("metric", "recorded", "reproduced", "|diff|", "allowed", "match")
    for c in result.checks:
        table.add_row(c.name, f"{c.recorded:.6f}", "not measured" if c.reproduced is None else f"{c.reproduced:.6f}",
                      "" if c.diff is None else f"{c.diff:.1e}", f"{c.allowed:.1e}", "[green]yes[/]" if c.ok else "[red]no[/]")
    console.print(table)
    for note in result.notes:
        console.print(f"Note: {note}", highlight=False)
    if not result.ok:
        failed = [c.name for c in result.checks if not c.ok]
        err_console.print(f"[bold red]{result.name} v{result.version} did not reproduce:[/] {', '.join(failed)} differ by more than the "
                          f"tolerance; the new model is in {result.out_dir}", highlight=False)
        raise typer.Exit(1)
    console.print(f"[green]{result.name} v{result.version} reproduced:[/] every test metric within tolerance "
                  f"(data {result.data_fingerprint}); the new model is in {result.out_dir}", highlight=False)


def _onnx_help(field: str) -> str:
    """An ONNX export option's help: the settings field's own description, so the two cannot drift."""
    from tunekit.pipeline.export_onnx import OnnxExportSettings

    info = OnnxExportSettings.model_fields[field]
    return f"ONNX only: {info.description} (default: {info.default})"


@app.command()
def export(model: Annotated[str, typer.Argument(help="NAME@ALIAS, NAME/VERSION or a model directory.")],
           out: Annotated[Path | None, typer.Option(help="Folder for the export (must be new or empty); merged and gguf only: an ONNX "
                                                         "export goes into the model's own folder (MODEL/onnx/), where "
                                                         "`tunekit serve --runtime onnx` finds it.")] = None,
           format: Annotated[str, typer.Option("--format", help="`merged`: the adapter folded into the base weights (transformers "
                                               "folder); `gguf`: one GGUF file for llama.cpp and Ollama (Llama-architecture generation models), "
                                               "with a Modelfile; `onnx`: an ONNX Runtime graph of an encoder classifier or regressor "
                                               "(int8 by default), checked on the model's frozen test split.")] = "merged",
           quantize: Annotated[str | None, typer.Option(help="GGUF: f32, f16 (default) or q8_0. ONNX: int8 (default) or f32.")] = None,
           tolerance: Annotated[float | None, typer.Option(help="merged and GGUF: largest logit difference from the adapter model that passes the check "
                                                           "(default: 1e-3 merged; per GGUF kind: f32 1e-3, f16 0.25, q8_0 1.0).")] = None,
           per_channel: Annotated[bool | None, typer.Option("--per-channel", help=_onnx_help("per_channel"))] = None,
           max_metric_drop: Annotated[float | None, typer.Option(help=_onnx_help("max_metric_drop"))] = None,
           max_probability_diff: Annotated[float | None, typer.Option(help=_onnx_help("max_probability_diff"))] = None,
           max_value_diff: Annotated[float | None, typer.Option(help=_onnx_help("max_value_diff"))] = None,
           workspace: Annotated[Path | None, typer.Option(help="ONNX only: the workspace holding the model's frozen splits (default: "
                                                                "the one its folder is in, else its config's).")] = None,
           merge: Annotated[bool, typer.Option(hidden=True, help="Accepted for old scripts: merged is the default format.")] = True,
           tracking_uri: TrackingOpt = None) -> None:
    """Write a standalone model (merged, GGUF or ONNX), verified against the model it came from; nothing is kept on a mismatch."""
    source = model_dir(model, tracking_uri)
    if format == "onnx":
        return _export_onnx(model, source, out, quantize, per_channel, max_metric_drop, max_probability_diff, max_value_diff, workspace)
    if out is None:
        raise typer.BadParameter(f"--out: name a new folder for the {format} export")
    if format == "gguf":
        from tunekit.models.gguf_export import export_gguf

        g = export_gguf(source, out, kind=quantize or "f16", tolerance=tolerance)
        console.print(f"[green]GGUF ({g.kind}) written to {g.out_file}[/]: on {g.prompts} prompts the largest logit difference is "
                      f"{g.max_abs_logit_diff:.3g} (tolerance {g.tolerance:g}), next token agrees on {g.top1_agreement:.0%}, "
                      f"greedy answers on {g.greedy_agreement:.0%}")
        return
    if format != "merged":
        raise typer.BadParameter(f"--format {format!r}: use merged, gguf or onnx")
    from tunekit.models.export import export_merged

    result = export_merged(source, out, tolerance=1e-3 if tolerance is None else tolerance)
    console.print(f"[green]Merged model written to {result.out_dir}[/]: logits match the adapter model on {result.prompts} prompts "
                  f"(largest difference {result.max_abs_diff:.2e}, tolerance {result.tolerance:g})")


def _export_onnx(model: str, source: Path, out: Path | None, quantize: str | None, per_channel: bool | None, max_metric_drop: float | None,
                 max_probability_diff: float | None, max_value_diff: float | None, workspace: Path | None) -> None:
    from tunekit.config import settings_from_yaml
    from tunekit.pipeline.export_onnx import OnnxExportSettings, export_onnx

    if out is not None:
        raise typer.BadParameter(f"--out: an ONNX export is written into the model's own folder ({source / 'onnx'}), where "
                                 "`tunekit serve --runtime onnx` finds it; leave --out out")
    settings = settings_from_yaml(OnnxExportSettings, None, "ONNX export", {
        "quantization": quantize, "per_channel": per_channel, "max_metric_drop": max_metric_drop,
        "max_probability_diff": max_probability_diff, "max_value_diff": max_value_diff})
    result = export_onnx(source, settings, workspace=workspace, model_ref=model)
    p = result.record.parity
    recorded = "" if result.recorded_metric is None else f" (recorded at evaluation: {result.recorded_metric:.4f})"
    what = "class probability" if p.output == "probability" else "predicted value (in target standard deviations)"
    console.print(f"[green]ONNX ({result.record.quantization}) written to {result.folder}[/] ({result.size_bytes / 1e6:.1f} MB). "
                  f"On the frozen test split ({p.rows} rows): {p.metric} {p.onnx:.4f} against PyTorch {p.torch:.4f}{recorded}, "
                  f"difference {p.diff:+.4f} (95% interval [{p.low:+.4f}, {p.high:+.4f}]); largest {what} difference "
                  f"{p.max_output_diff:.4f} (allowed {p.max_output_diff_allowed:g}); same label on {p.agreement:.1%} of rows. "
                  f"Serve it: tunekit serve --model {model} --runtime onnx", highlight=False)


RunsWorkspaceOpt = Annotated[Path, typer.Option("--workspace", help="Workspace holding runs/.")]


@app.command()
def report(run: Annotated[str, typer.Argument(help="Run id (a folder in WORKSPACE/runs) or a run folder.")],
           compare: Annotated[str | None, typer.Option(help="Another run on the same test rows to compare against RUN.")] = None,
           workspace: RunsWorkspaceOpt = DEFAULT_WORKSPACE) -> None:
    """Rebuild a run's report card (Markdown, JSON, self-contained HTML), or compare two runs."""
    from tunekit.report import compare as comparing
    from tunekit.evaluate import html
    from tunekit.report import markdown as card_report

    run_dir = _run_dir(run, workspace)
    if compare is None:
        _, _, page = card_report.write(comparing.load_card(run_dir), run_dir)
        console.print(f"Report card: {page}")
        return
    other = _run_dir(compare, workspace)
    result, text = comparing.compare(other, run_dir)
    stem = f"compare-{other.name}"
    (run_dir / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (run_dir / f"{stem}.md").write_text(text)
    page = run_dir / f"{stem}.html"
    page.write_text(html.render(text, run_dir, f"{run_dir.name} vs {other.name}"))
    console.print(text, markup=False, highlight=False)
    console.print(f"Comparison: {page}")


def _run_dir(run: str, workspace: Path) -> Path:
    space = Workspace(workspace)
    for candidate in (Path(run), space.run(run)):
        if (candidate / "report.json").is_file():
            return candidate
    runs = sorted(p.name for p in space.runs.glob("*")) if space.runs.is_dir() else []
    raise TunekitError(f"run {run!r}: no report.json in {run} or {space.run(run)}; runs in {workspace}: {', '.join(runs[-5:]) or 'none'}")


@app.command("eval")
def eval_command(run: Annotated[str, typer.Argument(help="Run id (a folder in WORKSPACE/runs) or a run folder.")],
                 graders: Annotated[Path, typer.Option("--graders", help="YAML or JSON file of grader definitions (OpenAI's: string_check, "
                                                       "text_similarity, python...): a list, or {graders: [...]}; an entry may carry "
                                                       "min_pass_rate, or be {grader: {...}, min_pass_rate: 0.8} as in gate.graders.")],
                 json_: JsonOpt = False, workspace: RunsWorkspaceOpt = DEFAULT_WORKSPACE) -> None:
    """Grade a finished run's test answers (the fine-tuned model and each baseline) with grader definitions."""
    from tunekit.evaluate.gate_graders import answered_rows, pass_rates

    run_dir = _run_dir(run, workspace)
    from tunekit.evaluate.graders import read_grader_file

    definitions, minimums = read_grader_file(graders)
    card = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    from tunekit.task_kinds import KINDS, kind

    if card.get("task") not in KINDS or not kind(card["task"]).causal:
        raise TunekitError(f"run {run_dir.name} is a {card.get('task')} run; graders grade generated text (generation and preference runs)")
    try:
        rows = answered_rows(run_dir, card["task"], card.get("analysis"))
    except FileNotFoundError as exc:
        raise TunekitError(str(exc)) from None
    results = pass_rates(definitions, rows, allow_python=True)  # the user's own file, on this machine
    below = []
    for r, minimum in zip(results, minimums):
        r["min_pass_rate"] = minimum
        mine = r["models"].get("fine_tuned", {"rate": 0.0})["rate"]
        r["passed"] = None if minimum is None else mine >= minimum
        if r["passed"] is False:
            below.append(r["name"])
    if json_:
        console.print_json(json.dumps({"run": run_dir.name, "items": len(rows), "graders": results, "passed": not below}))
    else:
        models = list(results[0]["models"]) if results and results[0]["models"] else ["fine_tuned"]
        table = Table(title=f"{run_dir.name}: grader pass rates on {len(rows)} test answers")
        table.add_column("grader")
        for m in models:
            table.add_column(m, justify="right")
        table.add_column("required", justify="right")
        for r in results:
            cells = [f"{r['models'][m]['rate']:.3f} ({r['models'][m]['passed']}/{r['models'][m]['total']})" if m in r["models"] else "-"
                     for m in models]
            verdict = "" if r["min_pass_rate"] is None else f"[{'green' if r['passed'] else 'red'}]{r['min_pass_rate']:.3f}[/]"
            table.add_row(f"{r['name']} ({r['type']})", *cells, verdict)
        console.print(table)
        for r in results:
            for f in r["failures"]:
                why = f" [{f['error']}]" if f["error"] else f" (score {f['score']:.3f})"
                console.print(f"  {r['name']} fails {f['id'] or ''}: answer {_clip(f['answer'])!r}, reference {_clip(f['reference'])!r}{why}",
                              markup=False, highlight=False)
    if below:
        if not json_:
            err_console.print(f"[red]Below min_pass_rate: {', '.join(below)}[/]")
        raise typer.Exit(1)


def _clip(text, n: int = 80) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= n else text[:n] + "..."


@app.command()
def explain(model: Annotated[str, typer.Option(help="NAME@ALIAS, NAME/VERSION or a model directory.")],
            texts: Annotated[list[str], typer.Argument(help="Texts to explain.", show_default=False)],
            tracking_uri: TrackingOpt = None) -> None:
    """Show which words drove each prediction (occlusion: the drop in probability without the word)."""
    from tunekit.evaluate.explain import occlusion
    from tunekit.serve import ServeSettings
    from tunekit.serve.loading import default_loader

    loaded = default_loader(ServeSettings(model=model, tracking_uri=tracking(tracking_uri)))
    for text in texts:
        e = occlusion(loaded.model.predict_proba, text, loaded.model.labels)
        words = " ".join(_shade(w, a) for w, a in e["attributions"])
        console.print(f"{words}  ->  [bold]{e['label']}[/] ({e['probability']:.2f})")
        console.print("  " + ", ".join(f"{w} {a:+.2f}" for w, a in sorted(e["attributions"], key=lambda wa: -wa[1])[:5]), highlight=False)


def _shade(word: str, attribution: float) -> str:
    from rich.markup import escape

    if attribution >= 0.2:
        return f"[bold green]{escape(word)}[/]"
    if attribution >= 0.05:
        return f"[green]{escape(word)}[/]"
    if attribution <= -0.05:
        return f"[red]{escape(word)}[/]"
    return escape(word)
