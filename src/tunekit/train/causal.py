"""Training's task part for generation: supervised fine-tuning of a causal LM on packed token rows.

Each micro-batch takes ``train.batch_size`` examples (length-grouped like classification) and packs
them, first-fit decreasing, into rows of at most ``model.max_length`` tokens (``models.packing``):
examples share a row but never attend to each other, and no compute goes to padding beyond the
tail of each row. Prompt-based methods add virtual tokens per row, not per example, so they (and
``train.packing: false``, and models that cannot keep packed examples apart) use ordinary
right-padded batches instead.

The loss is the summed cross-entropy over trained tokens (``templates.encode``'s mask: assistant
turns and their EOS); the loop divides it by the trained tokens of the whole optimisation step, so
long answers are not down-weighted against short ones. Validation is the mean loss per trained
token (its score is minus that loss, so higher is better, like every other score).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from tunekit import methods
from tunekit.config import TunekitConfig
from tunekit.models.causal import load_causal_base
from tunekit.models.packing import collate, mean_loss, packing_isolates, token_loss
from tunekit.train import distributed, loop

__all__ = ["CausalObjective"]


class CausalObjective:
    """Generation (see ``loop.Objective`` for what each member is)."""

    shardable = True  # FSDP and DeepSpeed shard large causal LMs across GPUs
    lower_is_better = False
    improvement = "lower validation loss"

    def __init__(self, cfg: TunekitConfig, data, device: torch.device, console) -> None:
        self.cfg, self.data, self.device = cfg, data, device
        model, self.tokenizer = load_causal_base(cfg.model.base, cfg.model.revision, quantize_4bit=methods.SPECS[cfg.method.kind].quantized_base)
        self.model = loop.adapt(model, cfg, device, cfg.task)
        self.rows = data.encoded["train"]
        self.lengths = [len(e.ids) for e in self.rows]
        self.fingerprint = data.fingerprint
        self.packing = False

    def setup(self, par, console) -> None:
        self.packing = self.cfg.train.packing and not methods.SPECS[self.cfg.method.kind].prompt_based and \
            packing_isolates(par.eval_model, self.device, console)

    def count(self, rows) -> int:
        return sum(self.rows[i].trained for i in rows)

    def loss(self, model, rows) -> tuple[torch.Tensor, int]:
        batch = collate([self.rows[i] for i in rows], self.cfg.model.max_length, self.tokenizer.pad_token_id, self.packing)
        return token_loss(model, batch, self.device), int(batch["real_tokens"])

    def validate(self, par) -> loop.Validation:
        """The mean validation loss per trained token, the same on every rank.

        Replicated weights (one process, DDP): each rank scores a share of the rows and the sums are
        added up. Sharded weights (FSDP, DeepSpeed): every forward pass needs every rank, so all
        ranks score all rows in step."""
        encoded, pad = self.data.encoded["validation"], self.tokenizer.pad_token_id
        if par.sharded or distributed.world_size() == 1:
            val_loss = mean_loss(par.eval_model, encoded, self.cfg, pad, self.device, self.packing)
        else:
            share = encoded[distributed.rank() :: distributed.world_size()]
            count = sum(e.trained for e in share)
            total = mean_loss(par.eval_model, share, self.cfg, pad, self.device, self.packing) * max(count, 1)
            sums = distributed.all_reduce_sum(torch.tensor([total, count], dtype=torch.float64, device=self.device))
            val_loss = float(sums[0] / max(sums[1], 1))
        perplexity = math.exp(min(val_loss, 50))
        return loop.Validation(score=-val_loss, fields={"val_loss": val_loss, "val_perplexity": perplexity},
                               line=f"loss {val_loss:.4f} (perplexity {perplexity:.2f})")

    def save(self, model, out_dir: Path, history: list[dict], best_epoch: int, state_dict: dict | None = None) -> None:
        """The model directory: PEFT adapter (or full checkpoint), the tokenizer with the template as its
        own ``chat_template``, and ``tunekit.json`` with the template, so any loader renders identically."""
        cfg, data = self.cfg, self.data
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir, **({"state_dict": state_dict} if state_dict is not None else {}))
        self.tokenizer.chat_template = data.template.source
        self.tokenizer.save_pretrained(out_dir)
        loop.manifest(cfg, data, history, best_epoch, template=data.template.to_json(), system_prompt=cfg.data.system_prompt).write(out_dir)
