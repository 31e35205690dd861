"""``tunekit reproduce NAME/VERSION``: train a registered version again and check its metrics.

The recipe: resolve the version to its adapter folder, read ``tunekit.json`` (the resolved config,
the data fingerprint, the test metrics), load the frozen splits that fingerprint names from the
workspace (never the source files, which may have changed since), train with the recorded config
and seed into ``WORKSPACE/reproduce/<name>-v<version>-<time>/``, score on the same test split the
way ``pipeline.run`` did, and compare every recorded headline metric.

Training on CPU with a fixed seed is deterministic in tunekit (``tests/test_resume.py`` shows
bit-identical weights), so the default tolerance is tight: ``|reproduced - recorded|`` may be at
most ``tolerance * max(1, |recorded|)`` (absolute for metrics in [0, 1], relative for unbounded
ones such as RMSE or perplexity). A run on another device (the original on a GPU, the reproduction
on CPU, or the other way round) or with other package versions can differ by more; the result
notes package versions that changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console

from tunekit import registry, task_kinds
from tunekit.config import TunekitConfig
from tunekit.errors import ConfigError, DataError, ModelError
from tunekit.artifacts import MANIFEST, Manifest, Workspace, package_versions

__all__ = ["MetricCheck", "ReproduceResult", "reproduce"]

DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class MetricCheck:
    name: str
    recorded: float
    reproduced: float | None   # None: the reproduction did not measure it
    diff: float | None
    allowed: float
    ok: bool


@dataclass
class ReproduceResult:
    ref: str
    name: str
    version: str
    data_fingerprint: str
    out_dir: Path
    tolerance: float
    checks: list[MetricCheck]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def reproduce(ref: str, tracking_uri: str, tolerance: float = DEFAULT_TOLERANCE, console: Console | None = None,
              workspace: Path | None = None) -> ReproduceResult:
    """Train ``ref`` (``NAME/VERSION`` or ``NAME@ALIAS``) again from what it recorded and compare its test metrics.

    ``workspace`` holds the frozen splits; by default the one the version was trained in (its
    ``run_dir`` tag), else the recorded config's. A missing or altered frozen split is a
    ``DataError`` naming the fingerprint.
    """
    console = console or Console()
    resolved = registry.resolve(ref, tracking_uri)
    manifest = _manifest(ref, resolved.path)
    cfg = _config(ref, manifest)
    tags = registry.client(tracking_uri).get_model_version(resolved.name, resolved.version).tags or {}
    workspace = Workspace(workspace if workspace else (Path(tags["run_dir"]).parents[1] if tags.get("run_dir") else cfg.workspace_dir))
    fp = manifest.data_fingerprint

    console.rule(f"[bold]1/3 data {fp[:16]}")
    cfg, data = _frozen_data(ref, cfg, workspace, fp)

    out_dir = workspace.reproduce / f"{resolved.name}-v{resolved.version}-{datetime.now():%Y%m%d-%H%M%S}"
    console.rule(f"[bold]2/3 train ({cfg.method.kind} on {cfg.model.base}, seed {cfg.train.seed})")
    from tunekit import train

    train.run(cfg, data, out_dir / "adapter", console)

    console.rule("[bold]3/3 evaluate on the same test split")
    reproduced = _score(cfg, data, out_dir / "adapter", console)
    checks = [_check(name, float(value), reproduced.get(name), tolerance) for name, value in sorted(manifest.metrics.items())]
    result = ReproduceResult(ref, resolved.name, resolved.version, fp, out_dir, tolerance, checks, _notes(manifest))
    (out_dir / "reproduce.json").write_text(json.dumps(
        {"ref": ref, "version": resolved.version, "data_fingerprint": fp, "tolerance": tolerance, "ok": result.ok,
         "checks": [vars(c) for c in checks], "notes": result.notes}, indent=2), encoding="utf-8")
    return result


def _manifest(ref: str, path: Path) -> Manifest:
    try:
        manifest = Manifest.read(path)
    except ModelError as exc:
        raise ModelError(f"{ref}: the version records nothing to reproduce from; it was not made by `tunekit run`. {exc}") from None
    missing = [k for k in ("config", "data_fingerprint") if getattr(manifest, k) is None]
    if missing:
        raise ModelError(f"{ref}: {path / MANIFEST} lacks {', '.join(missing)}; it was not made by `tunekit run`, so it cannot be reproduced")
    if not manifest.metrics:
        raise ModelError(f"{ref}: {path / MANIFEST} records no test metrics (its run stopped before evaluation); nothing to compare with")
    return manifest


def _config(ref: str, manifest: Manifest) -> TunekitConfig:
    from pydantic import ValidationError

    try:
        return TunekitConfig.from_dump(manifest.config)
    except ValidationError as exc:
        raise ConfigError(f"{ref}: its recorded config is no longer valid for this tunekit version ({exc.error_count()} problem(s), "
                          f"first: {exc.errors()[0]['msg']}); reproduce it with the tunekit version that trained it "
                          f"({manifest.versions.get('tunekit', 'unknown')})") from None


def _frozen_data(ref: str, cfg: TunekitConfig, workspace: Workspace, fp: str) -> tuple[TunekitConfig, object]:
    """The config rooted in the original config's folder, and the frozen splits of fingerprint
    ``fp``, checked against it, in the form the train stage reads.

    Relative paths in the config (``model.base``, ``model.init_from``) are resolved from the
    original config's folder again, found from the sources recorded with the splits."""
    from tunekit.data import conversations, store, versions

    directory = workspace.dataset(fp)
    if not (directory / "meta.json").is_file():
        now, chain = versions.current(workspace.root, fp)
        if chain:
            raise DataError(f"{ref}: the data no longer matches fingerprint {fp[:16]}: rows were erased from it by `tunekit data forget` "
                            f"on {chain[0]['at']} ({chain[0]['reason']}); it is now {now[:16]}. A model trained on erased rows cannot "
                            "be reproduced; retrain on the current data (`tunekit run CONFIG`) and retire this version")
        raise DataError(f"{ref}: the data no longer matches fingerprint {fp[:16]}: there are no frozen splits for it in {workspace.datasets} "
                        "(deleted, or frozen in another workspace: pass --workspace). To make them again, run `tunekit data check CONFIG` "
                        "on the original data files, then reproduce again")
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        # both loaders check the rows against meta.json's fingerprint
        loaded = conversations.read_frozen(directory)[0] if task_kinds.kind(cfg.task).causal else store.read_directory(directory)
    except (DataError, OSError, ValueError, KeyError) as exc:
        why = "do not hash to it (were files in it edited?)" if isinstance(exc, DataError) else f"cannot be read ({exc})"
        raise DataError(f"{ref}: the data no longer matches fingerprint {fp[:16]}: the frozen splits in {directory} {why}. Restore the folder from a backup, or delete it and run "
                        "`tunekit data check CONFIG` on the original data files to freeze it again") from None
    if meta["fingerprint"] != fp:
        raise DataError(f"{ref}: the data no longer matches fingerprint {fp[:16]}: {directory} holds {meta['fingerprint'][:16]}. "
                        "Delete that folder and run `tunekit data check CONFIG` on the original data files to freeze it again")
    cfg = TunekitConfig.from_dump(cfg.dump(), _config_folder(meta, cfg), cfg.working_dir)
    if task_kinds.kind(cfg.task).causal:
        return cfg, _conversations(cfg, directory, loaded, meta)
    from tunekit.data.prepare import PreparedData, limit_test

    test, test_fingerprint, sample = limit_test(cfg, loaded.datasets["test"], loaded.rows["test"], loaded.test_fingerprint)  # eval.max_test_rows
    return cfg, PreparedData(train=loaded.datasets["train"], validation=loaded.datasets["validation"], test=test,
                        labels=loaded.labels, fingerprint=loaded.fingerprint, test_fingerprint=test_fingerprint,
                        directory=directory, report={}, reused=True, task=cfg.task, test_sample=sample)


def _conversations(cfg: TunekitConfig, directory: Path, rows: dict[str, list[dict]], meta: dict):
    """Encode the frozen conversations as ``prepare_conversations`` does (same tokenizer, template and overlength policy)."""
    from tunekit.data import conversations
    from tunekit.models import templates
    from tunekit.models.causal import load_causal_tokenizer

    tokenizer = load_causal_tokenizer(cfg.model.base, cfg.model.revision)  # with the run's pad token, without loading the weights
    template = templates.resolve(tokenizer, cfg.model.template)
    encoded, _ = conversations.encode_all(cfg, tokenizer, template, rows)
    return conversations.PreparedConversations(rows=rows, encoded=encoded, template=template, fingerprint=meta["fingerprint"],
                                               test_fingerprint=meta["test_fingerprint"], directory=directory, report={}, reused=True)


def _config_folder(meta: dict, cfg: TunekitConfig) -> Path:
    """The original config's folder, from a source file's absolute path and its relative ``data.ROLE`` value,
    so relative ``model.base`` and ``model.init_from`` resolve as they did; else the working directory."""
    for source in meta.get("sources", []):
        rel = Path(str(meta.get("data_config", {}).get(source["role"]) or ""))
        path = Path(source["path"])
        if rel.parts and not rel.is_absolute() and ".." not in rel.parts and path.parts[-len(rel.parts):] == rel.parts:
            return Path(*path.parts[: -len(rel.parts)])
    return cfg.source_dir


def _score(cfg: TunekitConfig, data, adapter: Path, console: Console) -> dict[str, float]:
    """The headline test metrics, measured as ``pipeline.run`` measured them."""
    from tunekit.evaluate.metrics import headline

    if not task_kinds.kind(cfg.task).causal:
        from tunekit import evaluate, models

        metrics, _ = evaluate.score(models.load_trained(adapter), data, cfg.train.eval_batch_size)  # on CPU, as the pipeline scores
        return headline(metrics)

    from tunekit.evaluate.generation import lm_losses, score_generator
    from tunekit.models.causal import load_generator

    generator = load_generator(adapter, cfg.train.device)
    metrics, _ = score_generator(cfg, data, generator, console)
    metrics.update(lm_losses(cfg, data, generator))
    return headline(metrics)


def _check(name: str, recorded: float, reproduced: float | None, tolerance: float) -> MetricCheck:
    allowed = tolerance * max(1.0, abs(recorded))
    if reproduced is None:
        return MetricCheck(name, recorded, None, None, allowed, False)
    diff = abs(reproduced - recorded)
    return MetricCheck(name, recorded, reproduced, diff, allowed, diff <= allowed)


def _notes(manifest: Manifest) -> list[str]:
    then, now = manifest.versions, package_versions()
    changed = [f"{k} {then[k]} -> {now.get(k, 'missing')}" for k in sorted(then) if then[k] != now.get(k)]
    return [f"package versions differ from the original run: {', '.join(changed)}"] if changed else []
