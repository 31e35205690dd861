"""The typed config: one YAML file describes a task end to end.

One pydantic model per YAML section, a description on every field (they become the README's
config reference and the JSON schema), ``extra="forbid"`` so a misspelt key is an error rather than
a silently ignored default, and every problem reported at once with its YAML path and line.
Every relative path written in the config (data files, a local ``model.base``, ``model.init_from``,
``eval.suite``, ``workspace``) is relative to the config file's folder, not to the shell's working
directory, so ``tunekit run examples/banking77/config.yaml`` works from anywhere. Only the default
workspace, when the config names none, is ``./tunekit-workspace`` in the working directory, where
``tunekit serve`` and ``tunekit registry`` look for it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic_core import to_jsonable_python

from tunekit.artifacts import DEFAULT_WORKSPACE, Workspace
from tunekit.errors import ConfigError
from tunekit.grader_definitions import GraderDefinitionError, validate

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "balanced_accuracy", "mcc")
GENERATION_METRICS = ("exact_match", "rouge_l", "bleu", "chrf")
REGRESSION_METRICS = ("rmse", "mae", "mse", "r2")
PREFERENCE_METRICS = ("pair_accuracy", "reward_margin")
PRIMARY_METRICS = CLASSIFICATION_METRICS + GENERATION_METRICS + REGRESSION_METRICS + PREFERENCE_METRICS
TASK_METRICS = {"classification": CLASSIFICATION_METRICS, "generation": GENERATION_METRICS, "regression": REGRESSION_METRICS,
                "preference": PREFERENCE_METRICS}
LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse"})  # errors: every other metric is a score, higher is better
Metric = Literal["accuracy", "macro_f1", "macro_precision", "macro_recall", "balanced_accuracy", "mcc",
                 "exact_match", "rouge_l", "bleu", "chrf", "rmse", "mae", "mse", "r2", "pair_accuracy", "reward_margin"]


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is the better one (the error metrics of regression)."""
    return metric in LOWER_IS_BETTER


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(_Section):
    """How validation and test rows are split off the training file when no file is given for them."""

    validation: float = Field(0.1, gt=0, lt=0.5, description="Fraction of training rows held out for validation (early stopping) when `data.validation` is not given.")
    test: float = Field(0.2, gt=0, lt=0.5, description="Fraction of training rows held out for the final test when `data.test` is not given.")
    seed: int = Field(13, description="Seed of the stratified split (by label; for `task: regression` by quantile bins of the target); the same data and seed always give the same split.")


FileFormat = Literal["auto", "csv", "tsv", "jsonl", "json", "parquet"]
Quoting = Literal["auto", "none", "csv"]


class FileConfig(_Section):
    """One data file with reading options of its own; an option left out takes the `data` section's value."""

    path: str = Field(..., description="The file, relative to the config file's folder.")
    format: FileFormat | None = Field(None, description="File format of this file (default: `data.format`).")
    header: bool | None = Field(None, description="Whether this CSV/TSV file starts with a header row (default: `data.header`).")
    columns: list[str] | None = Field(None, description="Column names, in order, of this headerless CSV/TSV file (default: `data.columns`).")
    encoding: str | None = Field(None, description="Text encoding of this file (default: `data.encoding`).")
    delimiter: str | None = Field(None, min_length=1, max_length=1, description="Field delimiter of this CSV/TSV file (default: `data.delimiter`).")
    quoting: Quoting | None = Field(None, description="Quoting of this CSV/TSV file (default: `data.quoting`).")
    rest_in_last_column: bool | None = Field(None, description="Whether extra fields of this file's rows join its last column (default: `data.rest_in_last_column`).")


class ReadOptions(_Section):
    """How one file is read: the `data` section's options with a file's own (`FileConfig`) on top."""

    key: str = Field(..., description="The config key naming the file, e.g. `data.train`.")
    path: str = Field(..., description="The file as written in the config.")
    format: FileFormat = Field("auto", description="File format.")
    header: bool = Field(True, description="CSV/TSV: a header row comes first.")
    columns: list[str] | None = Field(None, description="CSV/TSV: column names when there is no header.")
    encoding: str = Field("utf-8", description="Text encoding.")
    delimiter: str | None = Field(None, description="CSV/TSV field delimiter; None: by format.")
    quoting: Quoting = Field("auto", description="CSV/TSV quoting.")
    rest_in_last_column: bool = Field(False, description="CSV/TSV: extra fields join the last column.")


DataFile = str | FileConfig
FILE_OPTIONS = ("format", "header", "columns", "encoding", "delimiter", "quoting", "rest_in_last_column")


class DataConfig(_Section):
    """Where the labelled rows are and which columns hold what. Each file key (`train`, `validation`, `test`) takes a path, or a mapping `{path: ..., header: false, columns: [...], ...}` whose reading options override the section's for that file alone."""

    train: DataFile = Field(..., description="Training file (CSV, TSV, JSONL, JSON or Parquet), relative to the config file; or `{path: ..., <reading options>}` for options of its own.")
    validation: DataFile | None = Field(None, description="Validation file (a path or `{path: ..., <reading options>}`). If absent, `split.validation` of the training rows is held out.")
    test: DataFile | None = Field(None, description="Test file (a path or `{path: ..., <reading options>}`). If absent, `split.test` of the training rows is held out.")
    format: FileFormat = Field("auto", description="File format; `auto` picks it from the file extension. Every task reads every format (generation: CSV, TSV and Parquet rows are `prompt_completion` or `alpaca` rows by their columns).")
    header: bool = Field(True, description="Whether CSV/TSV files start with a header row. When false, name the columns in `columns`.")
    columns: list[str] | None = Field(None, description="Column names, in order, for CSV/TSV files without a header row.")
    delimiter: str | None = Field(None, min_length=1, max_length=1, description="Field delimiter of CSV/TSV files, one character (e.g. `;` or `|`; a tab is `\"\\t\"`). Default: `,` for CSV, a tab for TSV.")
    quoting: Quoting = Field("auto", description="How CSV/TSV fields are quoted. `csv`: a field may be wrapped in double quotes (holding delimiters, line breaks, and `\"\"` for a quote), and a quote that does not follow these rules is an error naming the line. `none`: one row per line, quotes are ordinary characters (TSV's convention: GLUE and most corpora). `auto`: `csv` for CSV files, `none` for TSV files.")
    rest_in_last_column: bool = Field(False, description="CSV/TSV read with `quoting: none`: a row with more fields than columns puts the rest of its line, delimiters included, into the last column, so `DESC:manner How did serfdom end ?` lines read with `delimiter: \" \"`, `header: false` and `columns: [label, text]`.")
    layout: Literal["auto", "chat", "alpaca", "prompt_completion"] = Field("auto", description="Generation only: how rows are laid out. `chat`: OpenAI fine-tuning JSONL (`{\"messages\": [...]}`); `alpaca`: `instruction`, `input`, `output`; `prompt_completion`: `prompt_column` and `completion_column`; `auto` tells them apart by their keys. All become chat messages. CSV, TSV and Parquet files hold `alpaca` or `prompt_completion` rows.")
    system_prompt: str | None = Field(None, description="Generation only: a system message put first in every conversation that has none (training, evaluation and serving alike).")
    prompt_column: str = Field("prompt", description="Generation only: key (column) of the prompt in `prompt_completion` rows.")
    completion_column: str = Field("completion", description="Generation only: key (column) of the completion in `prompt_completion` rows.")
    overlength: Literal["error", "truncate", "drop"] = Field("error", description="Generation only: what to do with an example longer than `model.max_length` tokens: `error` names each one; `truncate` shortens the prompt side first (earlier turns, then the end of the last prompt; the system message and the answer are kept) and cuts the answer only when it alone is too long; `drop` leaves it out of train and validation (test rows: see `overlength_test`). Counted per split in the data report either way.")
    overlength_test: Literal["error", "truncate", "drop"] | None = Field(None, description="Generation only: what to do with an over-length *test* example. Default: as `overlength`, except that `drop` is refused for test rows (dropping them changes what the test measures): set `drop` here to drop them anyway (the report and the data check then say how many of the test rows went).")
    text_column: str | list[str] = Field("text", description="Column holding the text to classify; a list of columns (e.g. `[title, description]`) joins their values, in order, with `text_separator`.")
    text_separator: str = Field(" | ", description="Put between the values of the columns when `text_column` is a list. The default ` | ` is a token every tokenizer keeps (a line break would read as a plain space to most encoders).")
    text_pair_column: str | None = Field(None, description="Column holding a second text, for sentence-pair tasks (entailment, similarity, ...).")
    label_column: str = Field("label", description="Column holding the label; for `task: regression` the target, a finite number.")
    label_map: dict[str, str] | None = Field(None, description="Classification only: names for the labels as found in the files, e.g. `{\"1\": World, \"2\": Sports}`, so numeric class ids read (and are served) as names. A label not in the map is an error naming its line.")
    id_column: str | None = Field(None, description="Column holding each row's id (unique in its file), so row ids stay the same when rows move between files (retraining writes one). Default: the split and place of the row, `train-12` for line 12 of `data.train` named `train.*`, `train-tickets-12` for line 12 of `data.train` named `tickets.csv`.")
    task_column: str | None = Field(None, description="Classification only: multi-task training. The column naming each row's task (e.g. `intent`, `sentiment`); every task has its own label set, read as `task:label`. One encoder and one head are trained on all tasks, and each row's prediction is restricted to its own task's labels (exactly one head per task). Test metrics are reported per task and overall.")
    metadata_columns: list[str] = Field([], description="Extra columns kept with every row (e.g. channel, language, customer tier) so the evaluation can be sliced by them (`eval.slice_columns`). Empty values are kept as empty strings. Generation: extra keys of a row (`id`, `question_id`, ...) are errors unless listed here.")
    fallback_columns: dict[str, str] = Field({}, description="Where a used column is empty or null in a row, take the value of another column instead, e.g. `{answer: long_answer}`. A row empty in both is still an error naming its line.")
    duplicates: Literal["keep", "drop", "error"] | None = Field(None, description="Training rows whose input also sits in the validation or test split exactly (for classification: the same text and text pair): `keep` (with a warning: those scores are optimistic), `drop` (from train, counted in the data report) or `error` (each one named). Default: `keep` for classification and regression, `drop` for generation.")
    encoding: str = Field("utf-8", description="Text encoding of the data files, e.g. `utf-8`, `latin-1`, `cp1252`.")
    max_train_rows: int | None = Field(None, gt=0, description="Train on a seeded, stratified sample of this many training rows (for quick runs); validation and test rows are never sampled.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Split of the training file into train/validation/test.")

    @model_validator(mode="before")
    @classmethod
    def _label_map_keys(cls, raw: Any) -> Any:
        """YAML reads `1: World` with an integer key; labels are read as text, so keys are too."""
        if isinstance(raw, dict) and isinstance(raw.get("label_map"), dict):
            raw = {**raw, "label_map": {_label_key(k): v for k, v in raw["label_map"].items()}}
        return raw

    @model_validator(mode="after")
    def _columns_for_headerless(self) -> DataConfig:
        if not self.text_columns:
            raise ValueError("`data.text_column` is an empty list; name at least one column")
        for role in ("train", "validation", "test"):
            options = self.read_options(role)
            if options is not None and not options.header and not options.columns:
                where = "`data.header`" if isinstance(getattr(self, role), str) or getattr(self, role).header is None else f"`data.{role}.header`"
                raise ValueError(f"{where} is false, so list the column names in `data.columns` or `data.{role}.columns` (e.g. [text, label])")
        return self

    def file_path(self, role: str) -> str | None:
        """The path written for ``role`` (`train`, `validation`, `test`), or None when not given."""
        value = getattr(self, role)
        return value.path if isinstance(value, FileConfig) else value

    def read_options(self, role: str) -> ReadOptions | None:
        """How the file for ``role`` is read: the section's options with the file's own on top."""
        value = getattr(self, role)
        if value is None:
            return None
        own = value.model_dump(exclude_none=True) if isinstance(value, FileConfig) else {"path": value}
        merged = {name: getattr(self, name) for name in FILE_OPTIONS} | own
        return ReadOptions(key=f"data.{role}", **merged)

    def for_written_files(self, **update: Any) -> DataConfig:
        """This section pointed at files tunekit wrote itself (UTF-8; CSV with a header and comma, or chat
        JSONL): every reading and column option back to its default, then ``update`` (the file paths,
        the columns written). Retraining reads its new version of the data so; the user's options
        (a `;` delimiter, a label map, Latin-1) described the original files, not these."""
        reset = {name: field.get_default(call_default_factory=True) for name, field in DataConfig.model_fields.items()
                 if name in (*FILE_OPTIONS, "layout", "prompt_column", "completion_column", "text_column", "text_separator",
                             "text_pair_column", "label_column", "label_map", "id_column", "fallback_columns", "max_train_rows")}
        return self.model_copy(update=reset | update)

    @property
    def text_columns(self) -> list[str]:
        """The columns joined into the text (one, unless `text_column` is a list)."""
        return [self.text_column] if isinstance(self.text_column, str) else list(self.text_column)

    @property
    def duplicates_policy(self) -> str:
        """`data.duplicates` in force for a classification or regression task (generation reads its own default)."""
        return self.duplicates or "keep"


def _label_key(key: Any) -> str:
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return str(key).strip()


class ModelConfig(_Section):
    """The pretrained base model."""

    base: str = Field("bundled:minilm", description="`bundled:minilm` (all-MiniLM-L6-v2, shipped with tunekit; classification and regression), `bundled:smollm2` (SmolLM2-135M-Instruct from its GGUF file; generation), a local directory (relative to the config file's folder), or a Hugging Face hub id.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when `base` is a hub id.")
    max_length: int = Field(128, ge=8, le=8192, description="Longest input in tokens; longer inputs are truncated and counted in the data report.")
    template: Literal["auto", "chatml", "llama2", "alpaca", "plain"] = Field("auto", description="Generation only: how conversations become text. `auto`: the tokenizer's own chat template when it has one, else `chatml`. The template is saved with the model, so training, evaluation and serving render identically.")
    pooling: Literal["auto", "head", "mean"] = Field("auto", description="Classification and regression: the vector the new head reads. `head`: the architecture's own (BERT: the first token through its pooler). `mean`: the mean of the token states, as sentence-transformers models were trained to produce (on BANKING77, frozen MiniLM features give 84.0% accuracy through the pooler and 93.0% as the mean). `auto`: `mean` for a sentence-transformers checkpoint that means its tokens (the bundled MiniLM), else `head`. Recorded with the model, so it is served as trained.")
    init_from: str | None = Field(None, description="A tunekit model directory (e.g. an earlier run's `adapter/`) whose trained weights start this run: transfer to a related task. Same base model and method; the head is kept when the labels match (regression: when both are regression models), else trained afresh.")


KIND = "Adaptation method: `full`, `lora`, `dora`, `rslora`, `qlora` (CUDA), `ia3`, `prompt_tuning`, `prefix_tuning`, `p_tuning` or `freeze`."


class LoraMethod(_Section):
    """LoRA (Hu et al. 2021): low-rank updates on frozen weights; the classifier head is trained fully."""

    kind: Literal["lora"] = Field("lora", description=KIND)
    r: int = Field(16, ge=1, le=1024, description="Rank of the low-rank update.")
    alpha: int = Field(32, ge=1, description="Scaling numerator: updates are scaled by alpha / r.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(None, description="Module names to adapt. Default: every linear layer of the encoder (attention and feed-forward) for the base model's architecture.")


class DoraMethod(LoraMethod):
    """DoRA (Liu et al. 2024): LoRA on the direction of each weight plus a trained magnitude; closer to full fine-tuning at LoRA's cost."""

    kind: Literal["dora"] = Field("dora", description=KIND)  # type: ignore[assignment]


class RsLoraMethod(LoraMethod):
    """rsLoRA (Kalajdzievski 2023): LoRA scaled by alpha / sqrt(r), which keeps high ranks learning."""

    kind: Literal["rslora"] = Field("rslora", description=KIND)  # type: ignore[assignment]


class QLoraMethod(LoraMethod):
    """QLoRA (Dettmers et al. 2023): LoRA on a base model quantised to 4-bit NF4 (bitsandbytes, CUDA only)."""

    kind: Literal["qlora"] = Field("qlora", description=KIND)  # type: ignore[assignment]


class IA3Method(_Section):
    """(IA)^3 (Liu et al. 2022): learnt vectors that rescale keys, values and feed-forward activations; the fewest parameters of any adapter."""

    kind: Literal["ia3"] = Field("ia3", description=KIND)
    target_modules: list[str] | None = Field(None, description="Modules whose outputs are rescaled. Default: keys, values and the feed-forward output for the architecture.")
    feedforward_modules: list[str] | None = Field(None, description="Which of `target_modules` are feed-forward layers (rescaled on their input). Default: the feed-forward output.")


class PromptTuningMethod(_Section):
    """Prompt tuning (Lester et al. 2021): trained virtual tokens prepended to the input embeddings."""

    kind: Literal["prompt_tuning"] = Field("prompt_tuning", description=KIND)
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Number of trained virtual tokens.")


class PrefixTuningMethod(_Section):
    """Prefix tuning (Li & Liang 2021): trained key/value prefixes in every attention layer."""

    kind: Literal["prefix_tuning"] = Field("prefix_tuning", description=KIND)
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Length of the trained prefix.")


class PTuningMethod(_Section):
    """P-tuning (Liu et al. 2021): virtual tokens produced by a small trained encoder (MLP)."""

    kind: Literal["p_tuning"] = Field("p_tuning", description=KIND)
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Number of virtual tokens.")
    encoder_hidden_size: int = Field(128, ge=1, description="Hidden size of the prompt encoder.")


class FreezeMethod(_Section):
    """Freeze: train only the top `layers` transformer blocks and the head; a cheap, strong baseline for small data."""

    kind: Literal["freeze"] = Field("freeze", description=KIND)
    layers: int = Field(2, ge=0, description="How many of the top transformer blocks train (0: only the head).")


class FullMethod(_Section):
    """Full fine-tuning: every weight is trained; the saved model is a complete checkpoint."""

    kind: Literal["full"] = Field("full", description=KIND)


MethodConfig = Annotated[
    LoraMethod | DoraMethod | RsLoraMethod | QLoraMethod | IA3Method | PromptTuningMethod | PrefixTuningMethod
    | PTuningMethod | FreezeMethod | FullMethod,
    Field(discriminator="kind"),
]
METHODS: dict[str, type[_Section]] = {
    "lora": LoraMethod, "dora": DoraMethod, "rslora": RsLoraMethod, "qlora": QLoraMethod, "ia3": IA3Method,
    "prompt_tuning": PromptTuningMethod, "prefix_tuning": PrefixTuningMethod, "p_tuning": PTuningMethod,
    "freeze": FreezeMethod, "full": FullMethod,
}

# Learning rates that work for each method on MiniLM-sized encoders: adapters with few parameters
# need larger steps, methods that move pretrained weights need small ones.
DEFAULT_LEARNING_RATE = {
    "lora": 2e-3, "dora": 2e-3, "rslora": 1e-3, "qlora": 2e-3, "ia3": 1e-2, "prompt_tuning": 3e-2,
    "prefix_tuning": 1e-2, "p_tuning": 1e-2, "freeze": 1e-3, "full": 1e-4,
}
# Causal LMs of 0.5B+ parameters take an order of magnitude smaller steps (the usual SFT recipes).
GENERATION_LEARNING_RATE = {
    "lora": 2e-4, "dora": 2e-4, "rslora": 1e-4, "qlora": 2e-4, "ia3": 3e-3, "prompt_tuning": 3e-2,
    "prefix_tuning": 1e-2, "p_tuning": 1e-2, "freeze": 5e-5, "full": 2e-5,
}


class TrainConfig(_Section):
    """The training loop."""

    epochs: int = Field(4, ge=1, le=1000, description="Maximum number of passes over the training rows.")
    batch_size: int = Field(32, ge=1, description="Rows per optimisation step.")
    learning_rate: float | None = Field(None, gt=0, description="Peak learning rate of AdamW. Default per method, classification: 2e-3 for LoRA and DoRA, 1e-3 rsLoRA, 1e-2 IA3, prefix and p-tuning, 3e-2 prompt tuning, 1e-3 freeze, 1e-4 full fine-tuning; generation: 2e-4 LoRA, DoRA and QLoRA, 1e-4 rsLoRA, 3e-3 IA3, 5e-5 freeze, 2e-5 full, prompt methods as for classification.")
    head_learning_rate: float | None = Field(None, gt=0, description="Peak learning rate of the new classification head. It starts from random weights and has far to go, so it defaults to 5x the learning rate in force (on BANKING77 with 2,000 rows: 86% instead of 76% accuracy after 4 epochs).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not applied to biases and LayerNorm weights).")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Fraction of steps over which the learning rate rises linearly from 0; it then decays linearly to 0.")
    layer_lr_decay: float | None = Field(None, gt=0, le=1, description="Discriminative learning rates: each level below the top (head, then blocks from the top down, then embeddings) gets this factor times the rate of the level above, e.g. 0.9. Off by default.")
    gradual_unfreezing: bool = Field(False, description="ULMFiT-style: epoch 1 trains only the head, each later epoch also the next transformer block down (with any method).")
    head_init: Literal["random", "linear_probe"] = Field("random", description="Classification only: how the new head starts. `random`: small random weights. `linear_probe`: a logistic regression (scikit-learn) fitted on the frozen base model's features of the training rows, then fine-tuned from there (LP-FT, Kumar et al. 2022): the pretrained layers are not pushed around by a random head's large early gradients. Costs one pass over the training rows before training.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Classification only: train towards (1 - s) on the true label and s spread evenly over all labels (of the row's own task, multi-task), instead of all on the true label. Discourages over-confident logits on noisy or near-duplicate intents, e.g. 0.1. 0 is plain cross-entropy.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradients are clipped to this global norm.")
    early_stopping_patience: int = Field(2, ge=0, description="Stop after this many epochs without a better validation score; 0 never stops early.")
    group_by_length: bool = Field(True, description="Batch rows of similar length together (shuffled batches of similar length), so little compute is spent on padding.")
    seed: int = Field(13, description="Seed for weight init of the head, shuffling and dropout.")
    checkpoint_every: int = Field(200, ge=0, description="Save a resumable checkpoint every N optimisation steps and at every epoch end (`tunekit run --resume RUN_ID`); 0 never checkpoints.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches whose gradients are summed before each optimisation step (a larger effective batch in the same memory).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass instead of storing them: about a third slower, far less memory for long sequences.")
    packing: bool = Field(True, description="Generation only: pack several examples into each row of `model.max_length` tokens with restarting position ids, so no compute goes to padding and examples never attend to each other. Falls back to length-grouped padded batches for models that cannot keep packed examples apart.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="Weights and compute precision while training: `auto` is bf16 autocast on GPUs that support it, else fp32.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="Where to train; `auto` takes CUDA, then MPS, then CPU.")
    eval_batch_size: int = Field(64, ge=1, description="Rows per forward pass when predicting.")


class EvalConfig(_Section):
    """How models are scored."""

    primary: Metric = Field("macro_f1", description="Metric that the gate and the report lead with (classification and regression also stop early on it). Classification: `macro_f1` (default), `accuracy`, `macro_precision`, `macro_recall`, `balanced_accuracy`, `mcc`. Generation: `rouge_l` (default), `exact_match`, `bleu`, `chrf` (all 0-1). Regression: `rmse` (default), `mae`, `mse` (errors in the target's units: lower is better), `r2` (higher is better). Preference: `pair_accuracy` (default: the share of held-out pairs whose preferred answer the model finds more likely than the other), `reward_margin` (the mean implicit reward margin against the starting model).")
    bootstrap_resamples: int = Field(1000, ge=100, le=100_000, description="Paired bootstrap resamples for the confidence intervals of metric differences.")
    calibrate: bool = Field(True, description="Classification only: fit temperature scaling on validation; the server then returns calibrated probabilities.")
    slice_columns: list[str] = Field([], description="Metadata columns (from `data.metadata_columns`) to slice test metrics by; slices where the fine-tuned model is worse than the baseline are flagged.")
    length_buckets: list[int] = Field([5, 10, 20], description="Word-count edges of the text-length slices, e.g. [5, 10, 20] gives <=5, 6-10, 11-20, >20 words.")
    robustness_sample: int = Field(300, ge=0, description="Classification only: test rows perturbed (typos, casing, punctuation, whitespace) to measure prediction flip rates; 0 skips it.")
    suite: str | None = Field(None, description="Classification only: YAML file of behavioural test cases (must_predict, must_not_predict, invariant_pairs), relative to the config file.")
    explain_samples: int = Field(5, ge=0, description="Test rows whose word attributions (occlusion: the change in the predicted label's probability, or in the predicted value for regression, when a word is removed) are shown in the report.")
    label_noise: bool = Field(True, description="Classification only: list training rows whose label a cross-validated baseline confidently contradicts, for review.")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Generation only: longest generated answer when scoring (greedy decoding, the same for the baseline and the fine-tuned model).")
    k_shot: int = Field(3, ge=0, le=32, description="Generation only: worked examples (drawn from train with the split seed) shown to the few-shot baseline; 0 runs only the zero-shot baseline.")
    max_test_rows: int | None = Field(None, gt=0, description="Score on a sample of this many test rows, drawn with `data.split.seed`. Classification and regression: a stratified sample (by label; by target quantile for regression) that the baseline, the model and the champion are all scored on; the frozen test split stays whole, the data report and the console say how many of how many rows were scored, and the test fingerprint (report card, manifest) names the sampled rows. Generation: the rows decoded for text metrics (decoding is the slow part); loss and perplexity use every test row.")
    extract: str | None = Field(None, description="Generation only: score the answer inside the text rather than the whole text, in references and generated answers alike. `last_number`: the last number (`1,234.50` reads as `1234.5`); or a regular expression whose first group (or whole match) is the answer, e.g. `'#### *(.+)'` for math sets whose answers end in `#### 42`. A generated text without a match scores as an empty answer; a test reference without one is a data error naming its line.")
    grounding: bool = Field(False, description="Generation only: check every answer against its prompt (for retrieval-augmented data, where the prompt holds the source text): quoted spans must occur in it and at least half of the answer's content words must. The report gives the grounded rate of the baseline and the fine-tuned model.")
    side_by_side: int = Field(8, ge=0, description="Generation only: test rows shown in the report with prompt, reference, baseline and fine-tuned answers.")


GATE_GRADER_TYPES = ("string_check", "text_similarity")  # graders a gate may use: no served judge model, no submitted code


class GraderGate(_Section):
    """One grader (an OpenAI grader definition, as in `/v1/evals` testing criteria) whose pass rate on the test rows gates promotion."""

    grader: dict[str, Any] = Field(..., description="The grader definition, e.g. `{type: string_check, name: exact, input: '{{sample.output_text}}', reference: '{{item.reference}}', operation: eq}` or `{type: text_similarity, name: close, input: '{{sample.output_text}}', reference: '{{item.reference}}', evaluation_metric: rouge_l, pass_threshold: 0.5}`. Each test row is graded with `item` = its `reference`, `prompt`, `messages` and metadata columns, and `sample.output_text` = the fine-tuned model's answer. Only `string_check` and `text_similarity`: a gate must not depend on another served model (`label_model`, `score_model`) or run submitted code (`python`). Checked when the config loads, with the same rules as the evals API.")
    min_pass_rate: float = Field(..., ge=0, le=1, description="The fraction of test rows this grader must pass (0 to 1, e.g. 0.8); below it the version stays `challenger`. The starting model's pass rate is reported beside it.")


class GateConfig(_Section):
    """When a newly trained version becomes `champion`."""

    min_improvement: float = Field(0.0, description="The primary metric must beat the baseline's by at least this much (absolute, e.g. 0.02 = 2 points); at 0 it must be strictly better (a tie does not pass; a small negative value such as -0.001 accepts ties). For the error metrics `rmse`, `mae` and `mse` lower is better, so the improvement is the baseline's error minus the model's (in the target's units). Multi-task models (`data.task_column`) must clear it on every task's own rows as well as overall.")
    beat_champion: bool = Field(True, description="Also require the primary metric to be no worse than the current champion's on the same test rows (no lower; for `rmse`, `mae`, `mse` no higher).")
    live: bool = Field(False, description="Promotion needs live evidence too: a version that passes the offline gate while a champion exists becomes `challenger`, to run in shadow or canary (`tunekit deploy`) until `tunekit monitor --decide` promotes it on live feedback by `min_improvement` (or rolls it back). The first version still becomes champion at once.")
    require_suite: bool = Field(False, description="Also require every case of `eval.suite` to pass.")
    graders: list[GraderGate] = Field([], description="Generation and preference only: grader definitions whose pass rate on the test rows must reach their `min_pass_rate` (each one a reason of the gate, with the baseline's pass rate beside it). `tunekit eval RUN --graders FILE` applies the same definitions to a finished run.")

    @model_validator(mode="after")
    def _graders(self) -> GateConfig:
        names = set()
        for i, g in enumerate(self.graders):
            where = f"gate.graders[{i}].grader"
            kind = g.grader.get("type")
            if kind in ("label_model", "score_model", "python"):
                why = "runs submitted code" if kind == "python" else "needs another served model as its judge"
                raise ValueError(f"{where}.type: a {kind} grader {why}; a promotion gate must be decided by the run alone, so use "
                                 f"{' or '.join(GATE_GRADER_TYPES)} here (`tunekit eval` and the evals API take the others)")
            try:
                name = validate(g.grader, where)["name"]
            except GraderDefinitionError as exc:
                raise ValueError(str(exc)) from None
            if name in names:
                raise ValueError(f"{where}.name: {name!r} is also the name of an earlier grader; give each grader its own `name`")
            names.add(name)
        return self


class SearchParam(_Section):
    """One dimension of the search space."""

    type: Literal["float", "int", "categorical"] = Field(..., description="`float` and `int` take `low`/`high` (and `log`); `categorical` takes `choices`.")
    low: float | None = Field(None, description="Lower bound (float, int).")
    high: float | None = Field(None, description="Upper bound (float, int).")
    log: bool = Field(False, description="Sample on a log scale (float, int).")
    choices: list[Any] | None = Field(None, description="The values to choose from (categorical; also what `sampler: grid` walks).")

    @model_validator(mode="after")
    def _bounds(self) -> SearchParam:
        if self.type == "categorical" and not self.choices:
            raise ValueError("a categorical parameter needs `choices`")
        if self.type != "categorical" and (self.low is None or self.high is None or self.low >= self.high):
            raise ValueError(f"a {self.type} parameter needs `low` < `high`")
        return self


def _default_space() -> dict[str, SearchParam]:
    return {
        "train.learning_rate": SearchParam(type="float", low=1e-4, high=1e-2, log=True),
        "train.batch_size": SearchParam(type="categorical", choices=[16, 32, 64]),
    }


class TuneConfig(_Section):
    """Hyperparameter search (`tunekit tune`), scored on the validation split, never on test."""

    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="Optuna sampler: `tpe` (default), `random`, or `grid` (categorical parameters only).")
    trials: int = Field(20, ge=1, description="Number of trials to run (in this process; a shared study collects trials from several).")
    minutes: float | None = Field(None, gt=0, description="Stop starting new trials after this many minutes.")
    pruning: bool = Field(True, description="Stop trials early whose validation score after an epoch is below the median of earlier trials at that epoch.")
    storage: str | None = Field(None, description="Optuna storage URL. Default: SQLite `optuna.db` in the workspace; a PostgreSQL/MySQL URL lets several machines share one study.")
    study: str | None = Field(None, description="Study name. Default: `<name>-tune`.")
    space: dict[str, SearchParam] = Field(default_factory=_default_space, description="Search space: dotted config keys (as for `--set`) to parameter ranges.")


class PreferenceConfig(_Section):
    """`task: preference`: how the model is tuned on pairs of a preferred and a non-preferred answer to one prompt."""

    loss: Literal["dpo", "orpo"] = Field("dpo", description="`dpo` (Rafailov et al. 2023): the sigmoid DPO loss against the starting model, whose log-probabilities of every pair are computed once before training; `orpo` (Hong et al. 2024): no reference model, the preferred answer's token loss plus the odds-ratio term. Both losses are TRL's own code.")
    beta: float = Field(0.1, gt=0, le=10, description="DPO: the temperature of the implicit reward `beta * (log pi(answer) - log pi_start(answer))`; smaller values let the model move further from the starting one. ORPO: the weight of the odds-ratio term (ORPO's lambda). The reported reward margin uses it too.")


class TunekitConfig(_Section):
    """A tunekit task: data, base model, method, training, evaluation and promotion gate."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Name of the task; the registered model is called this.")
    task: Literal["classification", "generation", "regression", "preference"] = Field("classification", description="What the model does. `classification`: one label per text (or text pair) with an encoder. `regression`: one number per text (or text pair) with an encoder (a score, a price, a rating); the label column holds the target and the baseline is TF-IDF + ridge. `generation`: instruction or chat supervised fine-tuning of a causal LM. `preference`: DPO or ORPO tuning of a causal LM on preferred and non-preferred answers (OpenAI's preference JSONL or `prompt`/`chosen`/`rejected` rows; see the `preference` section).")
    workspace: str = Field(DEFAULT_WORKSPACE, description="Folder for frozen splits, runs, the MLflow store and the serving log. Like every path in the config (data files, `model.base` when it is a folder, `model.init_from`, `eval.suite`), relative to the config file's folder; left out, `./tunekit-workspace` in the directory tunekit runs in, where `tunekit serve` and `tunekit registry` look by default. Every run says which at its top.")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI. Default: SQLite `mlflow.db` in the workspace. Point it at a shared MLflow server to share the registry.")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=LoraMethod)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig, description="Preference tuning (`task: preference`): the loss and its beta.")

    _source_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _cwd: Path = PrivateAttr(default_factory=Path.cwd)

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, raw: Any) -> Any:
        """Generation scores text, so its default primary metric is ROUGE-L rather than macro F1;
        regression scores numbers, so its default is RMSE (in the target's units, lower is better);
        preference scores pairs, so its default is pair accuracy."""
        task = raw.get("task") if isinstance(raw, dict) else None
        default = {"generation": "rouge_l", "regression": "rmse", "preference": "pair_accuracy"}.get(task) if isinstance(task, str) else None
        if default is not None:
            ev = raw.get("eval")
            if ev is None or (isinstance(ev, dict) and "primary" not in ev):
                raw = {**raw, "eval": {**(ev or {}), "primary": default}}
        return raw

    @model_validator(mode="after")
    def _cross_section_checks(self) -> TunekitConfig:
        allowed = TASK_METRICS[self.task]
        if self.eval.primary not in allowed:
            raise ValueError(f"`eval.primary` is {self.eval.primary!r}, which does not apply to task {self.task}; use one of {', '.join(allowed)}")
        if self.task == "regression" and self.eval.suite:
            raise ValueError("`eval.suite` holds label cases (must_predict, ...), which do not apply to task regression; remove it")
        if self.data.task_column and self.task != "classification":
            raise ValueError(f"`data.task_column` (multi-task) applies to task classification; for task {self.task} remove it "
                             "(generation: put every task's conversations in one training file, they share one format)")
        if self.eval.extract is not None and self.task != "generation":
            raise ValueError(f"`eval.extract` picks the answer out of generated text, for task generation; this task is {self.task}: remove it")
        if self.eval.extract not in (None, "last_number"):
            import re

            try:
                pattern = re.compile(self.eval.extract)
            except re.error as exc:
                raise ValueError(f"`eval.extract` is not a valid regular expression ({exc}); use `last_number` or a pattern like '#### *(.+)'") from None
            if pattern.groups > 1:
                raise ValueError(f"`eval.extract` has {pattern.groups} groups; the answer is the first group, so use one "
                                 "(make the others non-capturing: (?:...))")
        if self.task == "preference" and self.eval.suite:
            raise ValueError("`eval.suite` holds label cases (must_predict, ...), which do not apply to task preference; remove it")
        if self.task in ("generation", "preference") and self.data.duplicates == "keep":
            raise ValueError(f"`data.duplicates: keep` does not apply to task {self.task}: an example is identified by its content, "
                             "so a repeated one is kept once (`drop`, the default) or refused (`error`)")
        if self.gate.graders and self.task not in ("generation", "preference"):
            raise ValueError(f"`gate.graders` grade generated text, for task generation or preference; this task is {self.task}: remove them "
                             "(gate a label or a number on `eval.primary` and `gate.min_improvement`)")
        if self.gate.require_suite and not self.eval.suite:
            raise ValueError("`gate.require_suite` is true, so name the suite file in `eval.suite`")
        unknown = [c for c in self.eval.slice_columns if c not in self.data.metadata_columns]
        if unknown:
            raise ValueError(f"`eval.slice_columns` names {unknown}, which are not in `data.metadata_columns` ({self.data.metadata_columns}); add them there")
        return self

    @property
    def learning_rate(self) -> float:
        """The learning rate in force: the configured one, else the method's default."""
        defaults = GENERATION_LEARNING_RATE if self.task in ("generation", "preference") else DEFAULT_LEARNING_RATE
        return self.train.learning_rate or defaults[self.method.kind]

    @property
    def head_learning_rate(self) -> float:
        """The head's learning rate in force: the configured one, else 5x ``learning_rate``."""
        return self.train.head_learning_rate or 5 * self.learning_rate

    def path(self, value: str | Path) -> Path:
        """Resolve a path from the config relative to the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self._source_dir / p).resolve()

    @property
    def workspace_dir(self) -> Path:
        """The workspace. One rule for paths: a path written in the config is relative to the config
        file's folder, like every other path in it. Left out, it is ``./tunekit-workspace`` in the
        directory tunekit was started in (like ``./mlruns``), where ``tunekit serve`` and ``tunekit
        registry`` look for it by default."""
        p = Path(self.workspace).expanduser()
        if p.is_absolute():
            return p
        return ((self._source_dir if "workspace" in self.model_fields_set else self._cwd) / p).resolve()

    def paths_note(self) -> str:
        """One line for the top of every run: where relative paths start, and the workspace in force."""
        where = ("named in the config" if "workspace" in self.model_fields_set
                 else "the default, in the directory tunekit runs in")
        return (f"Paths in the config are relative to its folder {self._source_dir}; "
                f"workspace {self.workspace_dir} ({where})")

    @property
    def tracking(self) -> str:
        return self.tracking_uri or Workspace(self.workspace_dir).tracking_uri

    def hash(self) -> str:
        """sha256 of the resolved config (defaults included), to tell runs of identical configs apart."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def source_dir(self) -> Path:
        """The folder relative paths in the config resolve against (the config file's; else the working directory)."""
        return self._source_dir

    @property
    def working_dir(self) -> Path:
        """The directory tunekit was started in; a workspace the config does not name is ``./tunekit-workspace`` there."""
        return self._cwd

    def dump(self) -> dict[str, Any]:
        """The config as JSON-able data that ``from_dump`` turns back into an equal config.

        Unlike ``model_dump``, ``workspace`` is left out when the config did not name it: a written
        workspace is relative to the config's folder, the default one to the working directory, and
        a dump that wrote the default out would move the workspace of every derived config."""
        return self.model_dump(mode="json", exclude=None if "workspace" in self.model_fields_set else {"workspace"})

    @classmethod
    def from_dump(cls, raw: dict[str, Any], source_dir: str | Path | None = None, cwd: str | Path | None = None) -> TunekitConfig:
        """A config from ``dump()`` (or a recorded ``model_dump``) whose relative paths resolve against
        ``source_dir`` and whose default workspace lies in ``cwd`` (both default to the working
        directory): how a child process, or ``reproduce``, rebuilds the config a run was given.
        Raises pydantic's ``ValidationError``; callers say what the data was."""
        cfg = cls.model_validate(raw)
        cfg._source_dir = Path(source_dir) if source_dir is not None else Path.cwd()
        cfg._cwd = Path(cwd) if cwd is not None else Path.cwd()
        return cfg

    def derive(self, **dotted: Any) -> TunekitConfig:
        """A validated copy with dotted keys set, e.g. ``cfg.derive(**{"train.learning_rate": 1e-4, "data.train": path})``.

        The copy keeps this config's folders, so a relative path (given here or already in the
        config) resolves as it does in the original: a search trial, a retrain on extended data
        and a reproduction all read the same files. An invalid result is a ``ConfigError``
        listing every problem with its key."""
        import copy

        raw = copy.deepcopy(self.dump())
        for key, value in dotted.items():
            _set_dotted(raw, key, value)
        try:
            return TunekitConfig.from_dump(raw, self._source_dir, self._cwd)
        except ValidationError as exc:
            changes = ", ".join(f"{k}={v!r}" for k, v in dotted.items()) or "no changes"
            lines = [f"config {self.name!r} with {changes}: {exc.error_count()} problem(s):"]
            for err in exc.errors():
                where = ".".join(str(p) for p in _user_loc(err["loc"])) or "(top level)"
                msg = err["msg"]
                if err["type"] == "extra_forbidden":
                    msg = f"unknown key; valid keys here: {', '.join(_valid_keys(err['loc'][:-1]))}"
                elif "input" in err and not isinstance(err["input"], dict):
                    msg = f"{msg}, got {err['input']!r}"
                lines.append(f"  {where}: {msg}")
            raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TunekitConfig:
    """Read and validate a YAML config; raise one ``ConfigError`` listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (check the path; `tunekit config schema` shows the format)")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a YAML mapping of sections (name, data, model, ...), got {type(raw).__name__}")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        cfg = TunekitConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path, root)) from None
    cfg._source_dir = path.resolve().parent
    return _local_base(cfg, path)


def _local_base(cfg: TunekitConfig, path: Path) -> TunekitConfig:
    """A ``model.base`` that is a folder is relative to the config file's folder, like every path in the
    config; it is made absolute here, so the adapter records where its base really is. A folder
    found only relative to the current directory is an error that says what to write instead."""
    base = cfg.model.base
    if base.startswith("bundled:") or Path(base).expanduser().is_absolute():
        return cfg
    here = cfg._source_dir / Path(base).expanduser()
    if here.exists() or base.startswith("."):
        new = cfg.model_copy(update={"model": cfg.model.model_copy(update={"base": str(here.resolve())})})
        new._source_dir, new._cwd = cfg._source_dir, cfg._cwd
        return new
    there = Path.cwd() / base
    if there.exists():
        import os

        relative = os.path.relpath(there.resolve(), cfg._source_dir)
        raise ConfigError(f"{path}: model.base {base!r} is a folder relative to the current directory, but paths in a config "
                          f"are relative to the config file's folder ({cfg._source_dir}): write `base: {relative}`")
    return cfg  # a hub id


def settings_from_yaml(model: type[BaseModel], path: str | Path | None, what: str, overrides: dict[str, Any]):
    """``model`` validated from a YAML file (if given) with ``overrides`` (the CLI options that were
    set) on top; every problem in one ``ConfigError``. The server and the monitor read their settings so."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: {what} config not found")
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the {what} config must be a YAML mapping of settings")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path or what + ' settings'}: {exc.error_count()} problem(s):\n" + "\n".join(lines)) from None


def format_validation_error(exc: ValidationError, path: Path, root: yaml.Node | None) -> str:
    """One line per problem: ``file line N: data.train: field required``."""
    lines = [f"{path}: {exc.error_count()} problem(s) in the config:"]
    for err in exc.errors():
        loc = _user_loc(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(root, loc)
        where = f"line {line}: " if line else ""
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key; valid keys here: {', '.join(_valid_keys(err['loc'][:-1]))}"
        elif err["type"] == "missing":
            msg = "required, but missing"
        elif "input" in err and not isinstance(err["input"], dict):
            msg = f"{msg}, got {err['input']!r}"
        lines.append(f"  {where}{dotted}: {msg}")
    return "\n".join(lines)


def _user_loc(loc: tuple) -> tuple:
    """Drop pydantic's discriminator tags (method.lora.r -> method.r) and validator names."""
    out = []
    for i, part in enumerate(loc):
        if i == 1 and loc[0] == "method" and part in METHODS:
            continue
        out.append(part)
    return tuple(out)


def _valid_keys(loc: tuple) -> list[str]:
    if len(loc) == 2 and loc[0] == "method" and loc[1] in METHODS:
        return list(METHODS[loc[1]].model_fields)
    model: type[BaseModel] = TunekitConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            break
        ann = field.annotation
        candidates = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            break
        model = candidates[0]
    return list(model.model_fields)


def _line_of(root: yaml.Node | None, loc: tuple) -> int | None:
    node, line = root, None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for key, value in node.value:
            if key.value == str(part):
                node, line = value, key.start_mark.line + 1
                break
        else:
            break
    return line


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        raw = raw.setdefault(key, {})
    raw[leaf] = value


def config_reference_markdown() -> str:
    """The README's config reference, generated from the field descriptions."""
    sections: list[tuple[str, type[BaseModel]]] = [
        ("(top level)", TunekitConfig), ("data", DataConfig), ("data.train / data.validation / data.test as a mapping", FileConfig),
        ("data.split", SplitConfig),
        ("model", ModelConfig), *((f"method (kind: {kind})", cls) for kind, cls in METHODS.items()),
        ("train", TrainConfig), ("eval", EvalConfig), ("gate", GateConfig), ("preference", PreferenceConfig), ("tune", TuneConfig), ("tune.space.KEY", SearchParam),
    ]
    out = []
    for title, model in sections:
        out += [f"#### `{title}`", "", (model.__doc__ or "").strip(), "", "| key | default | description |", "|---|---|---|"]
        for key, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) or key == "method":
                continue
            default = "required" if field.is_required() else f"`{json.dumps(to_jsonable_python(field.get_default(call_default_factory=True), exclude_none=True))}`"
            out.append(f"| `{key}` | {default} | {field.description or ''} |")
        out.append("")
    return "\n".join(out)
