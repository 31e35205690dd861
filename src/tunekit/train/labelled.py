"""Training's task part for labelled rows: classification (cross-entropy over the labels) and
regression (squared error on the standardised target), on an encoder with a new head.

Rows are tokenised once, unpadded; each micro-batch is padded to its longest row. Validation
scores the primary metric (``eval.primary``) in its own direction: higher accuracy or F1, lower
RMSE, MAE, MSE. Multi-task data (labels ``task:label``, ``data.multitask``) runs each row's softmax
over its own task's labels only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tunekit import methods, task_kinds
from tunekit.config import TunekitConfig, lower_is_better
from tunekit.data import multitask
from tunekit.data.prepare import text_pairs
from tunekit.artifacts import Manifest
from tunekit.errors import ModelError, TunekitError
from tunekit.evaluate.metrics import classification_metrics, regression_metrics
from tunekit.models import load_base, predict_proba, predict_values
from tunekit.train import distributed, loop
from tunekit.train.optimizer import is_head

__all__ = ["LabelledObjective", "smoothed_cross_entropy", "target_scaling"]


class LabelledObjective:
    """Classification and regression (see ``loop.Objective`` for what each member is)."""

    shardable = False  # an encoder fits on one GPU: DDP, never FSDP

    def __init__(self, cfg: TunekitConfig, data, device: torch.device, console) -> None:
        self.cfg, self.data, self.device = cfg, data, device
        regression = task_kinds.kind(cfg.task).numeric
        self.scaling = target_scaling(data) if regression else None
        model, self.tokenizer = load_base(cfg.model.base, data.labels, cfg.model.revision, quantize_4bit=methods.SPECS[cfg.method.kind].quantized_base,
                                          regression=regression, pooling=cfg.model.pooling)
        self.pooling = model.tunekit_pooling
        if cfg.train.head_init == "linear_probe":
            linear_probe(model, self.tokenizer, data, cfg, console)
        self.model = loop.adapt(model, cfg, device, cfg.task)
        if cfg.model.init_from:
            _init_from(self.model, cfg, data.labels, console)
        self.encoded = _tokenize(self.tokenizer, data.train, cfg.model.max_length)
        self.lengths = [len(e["input_ids"]) for e in self.encoded]
        self.labels = _train_labels(data, self.scaling)
        multi = getattr(data, "multitask", False)  # multi-task: labels "task:label", each row within its own task
        self.allowed = torch.as_tensor(multitask.allowed_matrix(data.labels), device=device) if multi else None
        self.lower_is_better = lower_is_better(cfg.eval.primary)
        self.improvement = f"better validation {cfg.eval.primary}"
        self.fingerprint = data.fingerprint
        self.val_texts, self.val_pairs = list(data.validation["text"]), text_pairs(data.validation)

    def setup(self, par, console) -> None:
        pass

    def count(self, rows) -> int:
        return len(rows)

    def loss(self, model, rows) -> tuple[torch.Tensor, int]:
        batch = self.tokenizer.pad([self.encoded[i] for i in rows], return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        logits = model(**batch).logits.float()
        y = self.labels[rows].to(self.device)
        if self.scaling is not None:
            loss = torch.nn.functional.mse_loss(logits.squeeze(-1), y, reduction="sum")
        else:
            if self.allowed is not None:  # multi-task: each row's softmax runs over its own task's labels only
                logits = multitask.mask_logits(logits, y, self.allowed)
            loss = smoothed_cross_entropy(logits, y, self.cfg.train.label_smoothing)
        return loss, int(batch["attention_mask"].sum())

    def validate(self, par) -> loop.Validation:
        """The validation metrics (regression: in the target's own units). With several processes
        each predicts a share of the rows and every rank gets all predictions, so all take the same
        early-stopping decision."""
        cfg, data, model = self.cfg, self.data, par.eval_model
        batch = (cfg.model.max_length, cfg.train.eval_batch_size, self.device)
        if self.scaling is not None:
            raw = distributed.gather_rows(lambda t, p: predict_values(model, self.tokenizer, t, p, *batch), self.val_texts, self.val_pairs)
            values = raw.astype(np.float64) * self.scaling["std"] + self.scaling["mean"]
            val = regression_metrics(np.asarray(list(data.validation["label"]), dtype=float), values)
        else:
            probs = distributed.gather_rows(lambda t, p: predict_proba(model, self.tokenizer, t, p, *batch), self.val_texts, self.val_pairs)
            probs = multitask.restrict_split(probs, data, data.validation)
            val = classification_metrics(np.asarray(list(data.validation["label"])), probs.argmax(1), data.labels)
        primary = cfg.eval.primary
        second = "accuracy" if "accuracy" in val else ("r2" if primary != "r2" else "rmse")
        return loop.Validation(score=val[primary], fields={f"val_{primary}": val[primary], f"val_{second}": val[second]},
                               line=f"{primary} {val[primary]:.4f}")

    def save(self, model, out_dir: Path, history: list[dict], best_epoch: int, state_dict: dict | None = None) -> None:
        cfg, data = self.cfg, self.data
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        multi = getattr(data, "multitask", False)
        loop.manifest(cfg, data, history, best_epoch, labels=data.labels, text_pair=cfg.data.text_pair_column is not None, pooling=self.pooling,
                      **({"tasks": data.tasks} if multi else {}),  # multi-task: label ids per task
                      **({"target": self.scaling} if self.scaling is not None else {}),  # regression: outputs are (y - mean) / std
                      ).write(out_dir)


def linear_probe(model, tokenizer, data, cfg: TunekitConfig, console) -> float:
    """Start the head from a logistic regression on the frozen model's features of the training rows
    (what the head reads: a hook on it catches its input). Returns the probe's validation accuracy.

    The probe is fitted with the head's own input and copied into the head's weight and bias, so the
    model's first logits are the probe's; the regularisation is scikit-learn's default (C=1)."""
    from sklearn.linear_model import LogisticRegression

    head = _last_linear(model)
    if head is None or head.out_features != len(data.labels):
        raise ModelError(f"train.head_init linear_probe: found no linear output layer with {len(data.labels)} outputs in {type(model).__name__}; "
                         "use head_init: random")
    x_train, x_val = (_head_inputs(model, head, tokenizer, getattr(data, split), cfg, console) for split in ("train", "validation"))
    probe = LogisticRegression(max_iter=2000).fit(x_train, np.asarray(list(data.train["label"])))
    weight = np.zeros((len(data.labels), x_train.shape[1]), dtype=np.float32)
    bias = np.full(len(data.labels), -1e4, dtype=np.float32)  # a label absent from the training rows stays improbable
    weight[probe.classes_] = probe.coef_ if len(probe.classes_) > 2 else np.vstack([-probe.coef_, probe.coef_]) / 2
    bias[probe.classes_] = probe.intercept_ if len(probe.classes_) > 2 else np.array([-probe.intercept_[0], probe.intercept_[0]]) / 2
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    accuracy = float(probe.score(x_val, np.asarray(list(data.validation["label"])))) if len(x_val) else float("nan")
    console.print(f"linear probe: head initialised from a logistic regression on frozen features (validation accuracy {accuracy:.4f})")
    return accuracy


@torch.inference_mode()
def _head_inputs(model, head: torch.nn.Linear, tokenizer, rows, cfg: TunekitConfig, console) -> np.ndarray:
    """What ``head`` reads for each of ``rows``, in row order (length-sorted batches, caught by a hook)."""
    from tunekit.models import sorted_batches
    from tunekit.progress import bar

    texts, pairs = list(rows["text"]), text_pairs(rows)
    out = np.zeros((len(texts), head.in_features), dtype=np.float32)
    caught: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda module, args: caught.append(args[0]))
    was_training = model.training
    model.eval()
    try:
        with bar(console, "rows") as progress:
            task = progress.add_task("linear probe features", total=len(texts), info="")
            for idx, batch in sorted_batches(tokenizer, texts, pairs, cfg.model.max_length, cfg.train.eval_batch_size):
                model(**{k: v.to(model.device) for k, v in batch.items()})
                out[idx] = caught.pop().float().cpu().numpy()
                progress.update(task, advance=len(idx))
    finally:
        hook.remove()
        model.train(was_training)
    return out


def _last_linear(model) -> torch.nn.Linear | None:
    linears = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and is_head(name)]
    return linears[-1] if linears else None


def smoothed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Summed cross-entropy against ``1 - smoothing`` on the true label plus ``smoothing`` spread over
    the labels a row may take. Not torch's own ``label_smoothing``: it spreads over every logit, and a
    multi-task row's other-task logits are -inf, which would make the loss infinite."""
    if smoothing == 0:
        return torch.nn.functional.cross_entropy(logits, y, reduction="sum")
    logp = torch.log_softmax(logits, dim=-1)
    allowed = torch.isfinite(logits)
    spread = -logp.masked_fill(~allowed, 0.0).sum(-1) / allowed.sum(-1)
    true = -logp.gather(1, y.unsqueeze(1)).squeeze(1)
    return ((1 - smoothing) * true + smoothing * spread).sum()


def target_scaling(data) -> dict[str, float]:
    """Mean and standard deviation of the training target; the network learns ``(y - mean) / std``.

    Why: the new head starts from small random weights, so the untrained model outputs values close
    to 0. A target in the hundreds (prices, durations) would make the first squared errors around
    10^4, their gradients would swamp the pretrained weights (clipping then throws most of each step
    away), and the head would spend its epochs just learning the offset. On the standardised scale
    the initial output is already a sensible guess (the mean), the loss starts near 1 whatever the
    units, and the learning rates that work for classification work here too. Predictions are
    mapped back with ``value * std + mean`` (``TrainedModel.predict``), and both numbers are saved in
    ``tunekit.json`` so the server does the same.
    """
    y = np.asarray(list(data.train["label"]), dtype=float)
    std = float(y.std())
    return {"mean": float(y.mean()), "std": std if std > 0 else 1.0}


def _train_labels(data, scaling: dict[str, float] | None) -> torch.Tensor:
    """Label ids (classification) or the standardised float target (regression) of every training row."""
    if scaling is None:
        return torch.tensor(list(data.train["label"]))
    y = np.asarray(list(data.train["label"]), dtype=np.float32)
    return torch.tensor((y - scaling["mean"]) / scaling["std"], dtype=torch.float32)


def _tokenize(tokenizer, ds, max_length: int) -> list[dict]:
    """Tokenise every row once (truncated, unpadded); batches are padded when they are drawn."""
    pairs = text_pairs(ds)
    enc = tokenizer(list(ds["text"]), pairs, truncation="longest_first" if pairs else True, max_length=max_length)
    keys = list(enc.keys())
    return [{k: enc[k][i] for k in keys} for i in range(len(ds))]


def _init_from(model, cfg: TunekitConfig, labels: list[str], console) -> None:
    """Start from an earlier model's trained weights (same base and method); its head only when
    it was trained for the same labels, since a head for other labels means nothing here."""
    from safetensors.torch import load_file

    source = cfg.path(cfg.model.init_from)
    try:
        info = Manifest.read(source)
    except ModelError as exc:
        raise TunekitError(f"model.init_from: {exc}") from None
    if info.base_model.id != cfg.model.base:
        raise TunekitError(f"model.init_from: {source} was trained on base {info.base_model.id!r}, this config uses {cfg.model.base!r}")
    theirs, ours = (info.config or {}).get("method"), cfg.method.model_dump(mode="json")
    if theirs != ours:
        raise TunekitError(f"model.init_from: {source} was trained with method {theirs}, this config has {ours}; use the same method and options")
    adapter = (source / "adapter_config.json").is_file()
    state = load_file(str(source / ("adapter_model.safetensors" if adapter else "model.safetensors")))
    keep_head = info.labels == labels and info.task == cfg.task
    if not keep_head:
        state = {k: v for k, v in state.items() if not is_head(k)}
    if adapter:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, state)
    else:
        model.load_state_dict(state, strict=False)
    if console is not None:
        console.print(f"  started from {source} ({len(state)} tensors; head {'kept' if keep_head else 'new: the labels or the task differ'})")
