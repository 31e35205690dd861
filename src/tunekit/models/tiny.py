"""Tiny, randomly initialised models built in code, for fast tests of every code path.

No hub download is possible on CI, and the bundled MiniLM takes seconds per step; a two-layer
BERT with a word-level vocabulary learnt from the test's own texts trains in well under a second
per epoch and exercises the same loading, adapter and serving code as a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_bert(out_dir: str | Path, texts: list[str], hidden_size: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny BERT (config, random weights, WordPiece tokenizer trained on ``texts``) to ``out_dir``."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, model_input_names=["input_ids", "token_type_ids", "attention_mask"], unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    BertModel(config).save_pretrained(out)
    return out


TINY_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]


def build_tiny_llama(out_dir: str | Path, texts: list[str] | None = None, hidden_size: int = 64, layers: int = 2,
                     vocab_size: int = 512, seed: int = 0, chat_template: str | None = None) -> Path:
    """Write a tiny Llama-style causal LM (random weights) and a byte-level BPE tokenizer to ``out_dir``.

    The tokenizer is trained on ``texts`` (plus a little built-in English so any text encodes
    compactly); being byte-level it encodes every string losslessly, which templates and the
    reverse-a-list test rely on. It adds ``<s>`` at the start like Llama's, pads with ``<pad>`` and
    ends with ``</s>``; it has no chat template unless one is given, so ``model.template: auto``
    falls back to ChatML, whose ``<|im_start|>``/``<|im_end|>`` markers are single tokens here.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = list(texts or []) + [_BUILTIN_TEXT] * 4
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Spaces are tokens of their own, so a word is the same token at the start of a line and after a
    # space: copying tasks (the reverse-a-list test) then need no re-spelling, only attention.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=TINY_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=bos, eos_token_id=tok.token_to_id("</s>"), pad_token_id=tok.token_to_id("<pad>"),
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


_BUILTIN_TEXT = (
    "The quick brown fox jumps over the lazy dog. Answer the question below in one short sentence.\n"
    "user: reverse the list. assistant: system: You are a helpful assistant. Instruction: Input: Response:\n"
    "0 1 2 3 4 5 6 7 8 9 , . ; : ! ? ' \" ( ) [ ] { } - + = / * & % $ # @"
)
