"""The production-loop part of a monitor run: champion against challenger per arm, per-slice live
accuracy, and (``--decide``) the live decision, carried out and audited.

Which challenger: ``settings.challenger`` if given, else the one the server's ``deployment.json``
runs in shadow or canary; none of either: no arms section. The decision's margin is
``settings.margin``, else the challenger's own ``gate.min_improvement`` (from the config stored
in its manifest), so the live gate asks for the same gain as the offline one.
"""

from __future__ import annotations

from tunekit import task_kinds
from tunekit.artifacts import Manifest, Workspace
from tunekit.config import GateConfig
from tunekit.errors import ConfigError
from tunekit.monitor import arms, rollout
from tunekit.monitor.decide import Arm, decide
from tunekit.monitor.settings import MonitorSettings
from tunekit.monitor.slices import live_slices


def online(settings: MonitorSettings, name: str, version: str | None, task: str, since: float) -> tuple[dict, list[str]]:
    """(the report's ``online`` section, its alerts) for model ``name`` v``version`` over the window from ``since``."""
    from tunekit.serve.deployment import read_state
    from tunekit.serve.requestlog import RequestLog

    state = read_state(settings.workspace_dir)
    ref = settings.challenger or (state.challenger if state.mode != "off" else None)
    challenger = _resolve(ref, settings) if ref else None
    path = Workspace(settings.workspace_dir).serving_db
    log = RequestLog(path)
    try:
        rows, feedback = log.requests_since(since), log.feedback_since(since)
    finally:
        log.close()
    parts = arms.split(rows, feedback, name, version, challenger[1] if challenger else None, task, challenger[2] if challenger else None)
    section: dict = {"deployment": state.model_dump()}
    alerts: list[str] = []
    if challenger:
        section["challenger"] = {"ref": ref, "version": challenger[1], "margin": _margin(settings, challenger[0])}
        section["arms"] = arms.summary(parts, task, settings.seed)
        if settings.graders:
            section["graders"] = _graders(settings, task, parts)
    if settings.slice_by:
        if not task_kinds.kind(task).labelled:
            raise ConfigError(f"slice_by: per-slice live accuracy needs a labelled task; {name} is a {task} model")
        champion = parts["arms"]["champion"]
        section["slices"] = live_slices(champion.given, champion.answered, champion.slices, settings.slice_by,
                                        settings.slice_margin, settings.min_slice_feedback)
        alerts += section["slices"]["alerts"]
    if settings.decide:
        section["decision"] = _decide(settings, name, version, task, challenger, section, parts)
        if section["decision"]["action"] == "rollback":
            alerts.append(section["decision"]["summary"])
    return section, alerts


def _decide(settings: MonitorSettings, name: str, version: str | None, task: str, challenger, section: dict, parts: dict) -> dict:
    if challenger is None:
        raise ConfigError("decide: no challenger to decide on: none runs in the workspace's deployment.json; pass --challenger NAME/VERSION")
    if not task_kinds.kind(task).labelled:
        raise ConfigError(f"decide: the live decision compares accuracy on feedback labels; {name} is a {task} model")
    counts = {arm: (len(r.given), sum(g == a for g, a in zip(r.given, r.answered))) for arm, r in parts["arms"].items()}
    decision = decide(Arm("champion", version, *counts["champion"]), Arm("challenger", challenger[1], *counts["challenger"]),
                      section["challenger"]["margin"], confidence=settings.confidence, power=settings.power,
                      min_per_arm=settings.min_per_arm, planning_effect=settings.planning_effect)
    applied = rollout.apply(decision, name, settings.tracking_uri, settings.workspace_dir)
    return decision.to_json() | {"applied": applied}


def _resolve(ref: str, settings: MonitorSettings):
    """(directory, registry version, the name the server logs it under) of the challenger."""
    from tunekit.registry import resolve_model

    found = resolve_model(ref, settings.tracking_uri)
    return found.path, found.version, found.name or Manifest.read(found.path).name


def _graders(settings: MonitorSettings, task: str, parts: dict) -> list[dict]:
    """``settings.graders`` on the shadowed pairs of a generation challenger (``arms.grader_rates``)."""
    if not task_kinds.kind(task).causal:
        raise ConfigError(f"graders: grader definitions grade generated text; the monitored model is a {task} model")
    from tunekit.evaluate.graders import read_grader_file

    definitions, _ = read_grader_file(settings.graders, judge=True)  # min_pass_rate is the gate's; not used here
    if any(d["type"] in ("label_model", "score_model") for d in definitions) and not settings.judge:
        raise ConfigError(f"graders: {settings.graders} has model graders (label_model, score_model); name the model that judges with --judge")
    return arms.grader_rates(definitions, parts["pairs"], _judge(settings), allow_python=True)  # the user's own file, on this machine


def _judge(settings: MonitorSettings):
    """``complete(model, messages, params)`` answered by ``settings.judge``, loaded once here (None without one)."""
    if not settings.judge:
        return None
    from tunekit.models.causal import load_generator
    from tunekit.registry import resolve_model

    gen = load_generator(resolve_model(settings.judge, settings.tracking_uri).path)

    def complete(model: str, messages: list[dict], params: dict) -> str:
        limit = int(params.get("max_completion_tokens") or params.get("max_tokens") or 128)
        [answer] = gen.generate([gen.encode_chat(messages)], max_new_tokens=limit, temperature=float(params.get("temperature") or 0.0),
                                top_p=float(params.get("top_p") or 1.0), seed=params.get("seed"))
        return answer.text

    return complete


def _margin(settings: MonitorSettings, path) -> float:
    if settings.margin is not None:
        return settings.margin
    config = Manifest.read(path).config or {}
    return GateConfig(**config.get("gate", {})).min_improvement


def lines(section: dict) -> list[str]:
    """The ``online`` section in words, one line each (the Markdown report and the CLI print these)."""
    out = []
    ch = section.get("challenger")
    if ch:
        out.append(f"challenger {ch['ref']} (v{ch['version']}) in {section['deployment']['mode']}; live margin {ch['margin']:+.3f}")
        for arm in ("champion", "challenger"):
            a = section["arms"][arm]
            q = a.get("labelled") or {}
            acc = (f"accuracy {q['accuracy']:.3f} ({q['accuracy_low']:.3f}-{q['accuracy_high']:.3f}) on {q['n']} labelled"
                   if q.get("n") and "accuracy" in q else "no labelled feedback")
            lat = f"latency mean {a['latency_ms_mean']:.1f} ms, p95 {a['latency_ms_p95']:.1f} ms" if a["requests"] else "no requests"
            flags = f", {a['flagged_share']:.1%} flagged" if a["requests"] else ""
            out.append(f"  {arm}: {a['requests']} requests, {acc}; {lat}{flags}")
        ag = section["arms"]["agreement"]
        if ag["compared"]:
            out.append(f"  agreement with the champion on shadowed inputs: {ag['share']:.3f} ({ag['low']:.3f}-{ag['high']:.3f}) "
                       f"over {ag['compared']} inputs")
        for g in section.get("graders") or []:
            rate = f"{g['rate']:.3f} ({g['low']:.3f}-{g['high']:.3f})" if g["total"] else "n/a"
            errors = f", {g['errors']} not graded ({g['first_error']})" if g["errors"] else ""
            out.append(f"  grader {g['name']} ({g['type']}) on shadowed pairs: {rate}, {g['passed']}/{g['total']} passed{errors}")
    sl = section.get("slices")
    if sl:
        out.append(f"live accuracy by {sl['field']} (alert when {sl['margin']:g} below the other slices, from {sl['min_n']} labelled):")
        out += [f"  {'ALERT ' if s['alert'] else ''}{s['value']}: {s['accuracy']:.3f} ({s['accuracy_low']:.3f}-{s['accuracy_high']:.3f}) "
                f"on {s['n']}" + (f", others {s['others_accuracy']:.3f}" if s["others_accuracy"] is not None else "") for s in sl["slices"]]
    d = section.get("decision")
    if d:
        out.append(f"decision: {d['action']}: " + "; ".join(d["reasons"]))
        out.append(f"  done: {d['applied']}")
    return out
