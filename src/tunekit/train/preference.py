"""Training's task part for preference pairs: DPO or ORPO on a causal LM, with TRL's losses.

Each micro-batch takes ``train.batch_size`` pairs; both sides of every pair go through one padded
forward pass (``evaluate.preference.pair_logps``: the summed log-probability of the answer tokens,
the prompt masked). The loss per pair is TRL's, not a copy of it:

- ``dpo``: TRL's ``DPOTrainer._compute_loss`` with ``loss_type="sigmoid"``. The reference model is
  the starting model: its log-probabilities of every training and validation pair are computed
  once, before the method is applied, and passed in as TRL's precomputed reference log-probs
  (``precompute_ref_logps``), so no second copy of the model is kept or run while training.
- ``orpo``: the preferred answer's mean token loss (prompt masked, as supervised fine-tuning) minus
  TRL's ``ORPOTrainer.odds_ratio_loss`` on the mean per-token log-probabilities of both answers
  (as TRL's ORPO computes them), weighted by ``preference.beta``.

TRL 1.x exposes neither loss as a free function: DPO's lives inside ``DPOTrainer._compute_loss``,
which also runs the model forward and logs metrics through the trainer's accelerator, and ORPO's is
a method reading ``self.beta``. Both are called here as plain functions on a minimal stand-in for
the trainer (``_DPOState``, ``_ORPOState``: the attributes the code reads, no ``Trainer`` built).
For DPO the forward pass handed to TRL is a stand-in too: it returns the log-probabilities already
computed, as one "token" per sequence, so TRL's sum over tokens is the sequence's log-probability
and every line of its loss runs unchanged. ``tests/generation/test_preference.py`` pins both against
hand-computed values, so a TRL upgrade that moves these internals fails loudly, not silently.

The loss the loop sees is the mean over the micro-batch's pairs times their number (a sum over
pairs, which the loop divides by the pairs of the whole optimisation step). Validation is the same
loss on the validation pairs; its score is minus that loss (higher is better), and the epoch also
records validation pair accuracy and reward margin.
"""

from __future__ import annotations

import collections
import types
import warnings

import numpy as np
import torch

from tunekit import methods
from tunekit.config import TunekitConfig
from tunekit.evaluate.preference import pair_logps, score_pairs
from tunekit.models.causal import load_causal_base
from tunekit.train import loop
from tunekit.train.causal import CausalObjective

__all__ = ["PreferenceObjective", "dpo_loss", "orpo_loss"]


class _Accelerator:
    """What TRL's loss code asks of the trainer's accelerator: one process, nothing to gather."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @staticmethod
    def gather(t):
        return t

    gather_for_metrics = gather
    unwrap_model = gather


def _dpo_state(beta: float, device: torch.device):
    """The attributes ``DPOTrainer._compute_loss`` reads for the sigmoid loss with precomputed references."""
    return types.SimpleNamespace(
        model=types.SimpleNamespace(training=True), accelerator=_Accelerator(device), aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=["sigmoid"], loss_weights=[1.0], beta=beta,
        use_weighting=False, _metrics=collections.defaultdict(lambda: collections.defaultdict(list)), _total_train_tokens=0, _tp_size=1)


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """TRL's sigmoid DPO loss, the mean over pairs, from summed answer log-probabilities (policy and reference)."""
    from trl.trainer.dpo_trainer import DPOTrainer

    n = chosen.shape[0]
    logps = torch.cat([chosen, rejected]).unsqueeze(1)  # one "token" per sequence: TRL's sum over tokens is the value itself
    outputs = types.SimpleNamespace(log_probs=logps, entropy=torch.zeros_like(logps.detach()), mean_logits=torch.zeros_like(logps.detach()),
                                    is_top1=torch.zeros_like(logps.detach(), dtype=torch.bool))
    inputs = {"input_ids": torch.zeros(2 * n, 2, dtype=torch.long, device=logps.device),
              "attention_mask": torch.ones(2 * n, 2, dtype=torch.long, device=logps.device),
              "completion_mask": torch.tensor([[0, 1]] * (2 * n), device=logps.device),
              "ref_chosen_logps": ref_chosen.to(logps), "ref_rejected_logps": ref_rejected.to(logps)}
    return DPOTrainer._compute_loss(_dpo_state(beta, logps.device), lambda **kw: outputs, inputs, False)


def orpo_loss(chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, beta: float) -> torch.Tensor:
    """ORPO's loss, the mean over pairs, from the mean per-token log-probabilities of both answers:
    the preferred answer's token loss minus TRL's odds-ratio term (``ORPOTrainer.odds_ratio_loss``)."""
    with warnings.catch_warnings():  # TRL 1.x keeps ORPO under trl.experimental and warns on import; the version is pinned
        warnings.simplefilter("ignore")
        from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    state = types.SimpleNamespace(beta=beta, accelerator=_Accelerator(chosen_mean.device))
    ratio = ORPOTrainer.odds_ratio_loss(state, chosen_mean, rejected_mean)[0]
    return (-chosen_mean).mean() - ratio.mean()


class PreferenceObjective(CausalObjective):
    """Preference pairs (see ``loop.Objective`` for what each member is); saves like generation."""

    shardable = False  # the reference log-probs and the pair batches assume replicated weights
    lower_is_better = False
    improvement = "lower validation preference loss"

    def __init__(self, cfg: TunekitConfig, data, device: torch.device, console) -> None:
        self.cfg, self.data, self.device = cfg, data, device
        self.kind, self.beta = cfg.preference.loss, cfg.preference.beta
        quantized = methods.SPECS[cfg.method.kind].quantized_base
        model, self.tokenizer = load_causal_base(cfg.model.base, cfg.model.revision, quantize_4bit=quantized)
        if not quantized:
            model.to(device)
        self.pairs = data.encoded["train"]
        self.lengths = [p.tokens for p in self.pairs]
        self.fingerprint = data.fingerprint
        self.packing = False
        pad, size = self.tokenizer.pad_token_id, cfg.train.eval_batch_size
        splits = ("train", "validation") if self.kind == "dpo" else ("validation",)  # ORPO's loss needs no reference
        self.reference = {split: score_pairs(model, data.encoded[split], pad, device, size) for split in splits}
        if console is not None:
            console.print(f"  reference: the starting model's log-probabilities of {sum(len(v[0]) for v in self.reference.values())} "
                          f"pairs ({', '.join(splits)}), computed once")
        self.model = loop.adapt(model, cfg, device, cfg.task)

    def setup(self, par, console) -> None:
        """Pairs are never packed: both sides of a pair share one padded batch."""

    def count(self, rows) -> int:
        return len(rows)

    def _loss(self, chosen, rejected, n_chosen, n_rejected, split: str, rows) -> torch.Tensor:
        if self.kind == "orpo":
            return orpo_loss(chosen / n_chosen.clamp(min=1), rejected / n_rejected.clamp(min=1), self.beta)
        ref_c, ref_r = (torch.as_tensor(a[rows], dtype=torch.float32, device=chosen.device) for a in self.reference[split])
        return dpo_loss(chosen, rejected, ref_c, ref_r, self.beta)

    def loss(self, model, rows) -> tuple[torch.Tensor, int]:
        rows = np.asarray(rows)
        chosen, rejected, n_c, n_r, real = pair_logps(model, [self.pairs[i] for i in rows], self.tokenizer.pad_token_id, self.device)
        return self._loss(chosen, rejected, n_c, n_r, "train", rows) * len(rows), real

    @torch.no_grad()
    def validate(self, par) -> loop.Validation:
        """The preference loss, pair accuracy and reward margin on the validation pairs (every rank scores all of them)."""
        model, pairs, size = par.eval_model, self.data.encoded["validation"], self.cfg.train.eval_batch_size
        was_training = model.training
        model.eval()
        total, chosen, rejected = 0.0, [], []
        for start in range(0, len(pairs), size):
            rows = np.arange(start, min(start + size, len(pairs)))
            c, r, n_c, n_r, _ = pair_logps(model, [pairs[i] for i in rows], self.tokenizer.pad_token_id, self.device)
            total += float(self._loss(c, r, n_c, n_r, "validation", rows)) * len(rows)
            chosen.append(c.double().cpu().numpy())
            rejected.append(r.double().cpu().numpy())
        model.train(was_training)
        c, r = np.concatenate(chosen), np.concatenate(rejected)
        ref_c, ref_r = self.reference["validation"]
        val_loss = total / max(len(pairs), 1)
        accuracy = float(np.mean(c > r))
        margin = float(np.mean(self.beta * ((c - ref_c) - (r - ref_r))))
        return loop.Validation(score=-val_loss, fields={"val_loss": val_loss, "val_pair_accuracy": accuracy, "val_reward_margin": margin},
                               line=f"loss {val_loss:.4f}, pair accuracy {accuracy:.4f}, reward margin {margin:+.4f}")
