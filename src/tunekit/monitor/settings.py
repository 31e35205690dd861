"""Settings of ``tunekit monitor``: which model, which window of traffic, and when to alert."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunekit.artifacts import DEFAULT_WORKSPACE
from tunekit.config import settings_from_yaml
from tunekit.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str) -> float:
    """``"30m"``, ``"24h"``, ``"7d"``, ``"2w"``, ``"90s"`` as seconds; anything else is a ``ConfigError``."""
    match = _DURATION.match(str(value))
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"since: expected a positive duration such as 30m, 24h, 7d or 2w (s, m, h, d, w), got {value!r}")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


class MonitorSettings(BaseModel):
    """How ``tunekit monitor`` runs. Each field is also a CLI option (``p_value`` is ``--p-value``);
    all of them can come from a YAML file (``--config``), which is where teams keep their thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(..., description="Model to monitor: a registry reference (`NAME@ALIAS`, e.g. `intent@champion`, or `NAME/VERSION`) or the path of a tunekit model directory. Its directory holds `reference.json`, the training-time statistics traffic is compared with.")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI used to resolve registry references. Default: the registry's own default.")
    workspace: str = Field(DEFAULT_WORKSPACE, description="The server's workspace: requests are read from WORKSPACE/serving.db, the report goes to WORKSPACE/monitor/.")
    since: str = Field("24h", description="Window of traffic to check, back from now: a number and a unit, `s`, `m`, `h`, `d` or `w` (`30m`, `24h`, `7d`).")
    min_requests: int = Field(30, ge=1, description="Fewest production inputs in the window (each text of a batched request counts) for a drift verdict; with fewer the report says `not enough traffic` and raises no drift alert.")
    p_value: float = Field(0.01, gt=0, lt=1, description="Significance level of the per-feature tests (Kolmogorov-Smirnov, chi-square, two-proportion): a smaller p-value is drift.")
    ks_max_rows: int = Field(1000, ge=10, description="Numeric features are tested with Kolmogorov-Smirnov up to this many production rows; beyond it every shift is significant, so the effect size (Wasserstein distance relative to the reference's standard deviation) decides instead.")
    wasserstein_rel: float = Field(0.25, gt=0, description="Above `ks_max_rows` rows: a numeric feature drifted when its Wasserstein distance to the reference exceeds this many reference standard deviations.")
    label_js: float = Field(0.1, ge=0, le=1, description="A significant predicted-label shift (chi-square) alerts only when the Jensen-Shannon distance (base 2, 0-1) is at least this large, so a negligible shift on heavy traffic does not page anyone.")
    oov_increase: float = Field(0.05, ge=0, le=1, description="A significant rise of the out-of-vocabulary rate alerts only when it rises by at least this much (0.05: five more unknown words per hundred).")
    domain_auc: float = Field(0.75, gt=0.5, le=1, description="Embedding drift: a classifier telling reference from production sentence embeddings (logistic regression, 5-fold cross-validated) with an AUC at or above this means production texts look unlike the training texts (0.5: indistinguishable).")
    confidence_drop: float = Field(0.1, ge=0, le=1, description="Alert when the model's mean max-probability on production is this much below its mean on validation (classification).")
    psi: bool = Field(False, description="Also compute the population stability index of every feature (10 quantile bins for numbers), reported beside the tests.")
    psi_threshold: float = Field(0.2, gt=0, description="With `psi`: a PSI at or above this is an alert (0.1-0.2 is usually read as a moderate, above 0.2 a significant shift).")
    min_feedback_accuracy: float | None = Field(None, ge=0, le=1, description="Alert when the accuracy on feedback-labelled requests is below this (needs `min_feedback` labelled rows). None: no live-quality alert.")
    min_feedback: int = Field(20, ge=1, description="Fewest feedback-labelled requests for the live-quality alert.")
    embed_sample: int = Field(1000, ge=10, description="Most production texts embedded for the embedding-drift check (a seeded sample); embedding is the slow part.")
    seed: int = Field(0, description="Seed of the samples and of the domain classifier's cross-validation folds.")
    challenger: str | None = Field(None, description="A challenger running in shadow or canary beside the monitored champion (`NAME/VERSION`, or `NAME@challenger`): the report compares the two per arm (agreement, live accuracy, latency, guardrail flags). Default: the challenger of the server's `deployment.json` in the workspace, if one runs.")
    graders: str | None = Field(None, description="Generation: a YAML or JSON file of grader definitions (as `tunekit eval --graders`: string_check, text_similarity, label_model, ...) run on each shadowed pair; the sample (`{{sample.output_text}}`) is the challenger's answer, `{{item.reference}}` (also `{{item.champion}}`) the champion's answer to the same input, `{{item.prompt}}` the last user turn. The report gives each grader's pass rate with its interval.")
    judge: str | None = Field(None, description="With `graders`: a generation model (registry reference or model folder) loaded here to answer the model graders (`label_model`, `score_model`; their `model` field is not used), greedily.")
    decide: bool = Field(False, description="Decide on the challenger from live feedback and act on it: promote it, roll it back, or record how many more labelled requests are needed (every decision goes on its registry audit trail).")
    margin: float | None = Field(None, ge=-1, le=1, description="How much better (absolute accuracy) the challenger must be live to be promoted. Default: the challenger's own `gate.min_improvement`, the offline gate's margin.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of the interval of the accuracy difference the live decision rests on.")
    power: float = Field(0.8, gt=0, lt=1, description="Power of the estimate of how many more labelled requests a decision needs.")
    min_per_arm: int = Field(30, ge=1, description="Fewest feedback-labelled requests per arm before the live decision promotes or rolls back.")
    planning_effect: float = Field(0.05, gt=0, le=1, description="When the challenger's lead is between 0 and the margin: the gain above the margin the power estimate plans for (the smallest lead worth waiting for).")
    slice_by: str | None = Field(None, max_length=64, description="Request metadata field (sent as `metadata` with each request: channel, locale, tier, ...) to report live accuracy per value of, with an alert for a slice that falls behind.")
    slice_margin: float = Field(0.1, ge=0, le=1, description="With `slice_by`: alert when a slice's live accuracy is this much (absolute) below the accuracy of the other slices pooled.")
    min_slice_feedback: int = Field(20, ge=1, description="With `slice_by`: fewest feedback-labelled requests in a slice (and in the rest) for its alert.")

    @field_validator("since")
    @classmethod
    def _since_is_a_duration(cls, value: str) -> str:
        try:
            parse_since(value)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("since: ")) from None
        return value

    @property
    def workspace_dir(self) -> Path:
        return Path(self.workspace).expanduser()

    @property
    def window_seconds(self) -> float:
        return parse_since(self.since)


def load_settings(path: str | Path | None, **overrides) -> MonitorSettings:
    """Settings from a YAML file (if given) with ``overrides`` (CLI options that were set) on top."""
    return settings_from_yaml(MonitorSettings, path, "monitor", overrides)
