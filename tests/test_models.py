import pytest

from tunekit.errors import ModelError
from tunekit.methods import apply, count_parameters
from tunekit.config import LoraMethod
from tunekit.models import load_base, load_trained, resolve_base


def test_bundled_minilm_resolves_to_a_local_folder():
    path = resolve_base("bundled:minilm")
    assert path.endswith("model")
    with pytest.raises(ModelError, match="unknown bundled model; available: bundled:minilm"):
        resolve_base("bundled:nope")


def test_local_path_saved_model_loads_with_a_new_head(tmp_path):
    """The loading path a user with their own checkpoint takes: MiniLM saved to a temp dir."""
    model, tokenizer = load_base("bundled:minilm", ["a", "b"])
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    again, _ = load_base(str(tmp_path / "m"), ["x", "y", "z"])
    assert again.config.num_labels == 3 and again.config.id2label[2] == "z"
    assert again.bert.embeddings.word_embeddings.weight.shape == model.bert.embeddings.word_embeddings.weight.shape


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(ModelError, match=r"no config.json.*found: weights.bin"):
        resolve_base(str(tmp_path))
    with pytest.raises(ModelError, match="no such folder"):
        resolve_base("./does/not/exist")
    with pytest.raises(ModelError, match="tunekit.json is missing"):
        load_trained(tmp_path)


def test_lora_default_targets_cover_every_encoder_linear_layer(tiny_bert):
    model, _ = load_base(str(tiny_bert), ["a", "b"])
    total_before = count_parameters(model)[1]
    wrapped = apply(model, LoraMethod(r=4))
    trainable, _ = count_parameters(wrapped)
    names = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    # per layer: q, k, v, attention-out (32x32), intermediate (32->64), output (64->32); plus the pooler
    hidden, inter, r, layers = 32, 64, 4, 2
    per_layer = 4 * r * (hidden + hidden) + r * (hidden + inter) + r * (inter + hidden)
    pooler = r * (hidden + hidden)
    head = hidden * 2 + 2
    assert trainable == layers * per_layer + pooler + head
    assert any("classifier" in n for n in names)
    assert trainable < total_before


def test_mean_pooling_feeds_the_head_the_masked_mean_of_the_token_states(tiny_bert):
    """``model.pooling: mean``: the head reads the mean over the real tokens instead of BERT's pooler
    on the first token's state; padding a row does not change its logits."""
    import torch

    from tunekit.models import pooling

    model, tokenizer = load_base(str(tiny_bert), ["a", "b", "c"], pooling="head")
    assert model.tunekit_pooling == "head"
    batch = tokenizer(["alpha beta gamma delta", "alpha"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        first_token = model(**batch).logits
        states = model.bert(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (states * mask).sum(1) / mask.sum(1)
        expected = model.classifier(mean)  # BERT's pooler is passed by: the head reads the mean itself
        pooling.apply(model, "mean")
        pooled = model(**batch).logits
        alone = model(**tokenizer(["alpha"], return_tensors="pt")).logits
    torch.testing.assert_close(pooled, expected)
    torch.testing.assert_close(pooled[1:], alone)  # the padded row reads only its real token
    assert (pooled - first_token).abs().max() > 1e-3


def test_auto_pooling_follows_the_checkpoint(tiny_bert):
    """The bundled MiniLM is a sentence-transformers model that means its tokens; a plain BERT folder is not."""
    from tunekit.models import pooling

    assert pooling.resolve("auto", resolve_base("bundled:minilm")) == "mean"
    assert pooling.resolve("auto", str(tiny_bert)) == "head"
    assert pooling.resolve("head", resolve_base("bundled:minilm")) == "head"


def test_mean_pooling_keeps_each_threads_batch_apart(tiny_bert):
    """The server may run two batches through one model at once (``concurrent_batches``): each
    thread's rows are pooled with its own attention mask."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    model, tokenizer = load_base(str(tiny_bert), ["a", "b"], pooling="mean")
    model.eval()
    batches = [tokenizer(["alpha beta gamma delta epsilon", "alpha"], padding=True, return_tensors="pt"),
               tokenizer(["beta"] * 3, padding=True, return_tensors="pt")]

    def logits(batch):
        with torch.inference_mode():
            return model(**batch).logits

    alone = [logits(b) for b in batches]
    with ThreadPoolExecutor(2) as pool:
        for _ in range(20):
            for got, expected in zip(pool.map(logits, batches), alone):
                torch.testing.assert_close(got, expected)
