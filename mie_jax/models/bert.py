"""A BERT encoder in Flax NNX that loads Hugging Face safetensors checkpoints from a local directory.

Only the encoder is built (no pooler, no pretraining heads) and it has no dropout: it
serves as a text feature extractor, whose [CLS] vector (``cls_feature``) is the text
feature in the MIE paper's setting and whose masked mean (``mean_pool``) is the
sentence-transformers embedding.

Example:
    >>> model, tokenizer = load_bert("path/to/all-MiniLM-L6-v2")
    >>> input_ids, attention_mask, token_type_ids = tokenize(tokenizer, ["A sentence."], 32)
    >>> hidden = model(input_ids, attention_mask, token_type_ids)
    >>> features = cls_feature(hidden)
"""

import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

# The text side (tokenizer, token ids, the default checkpoint's directory) lives in the data layer.
from mie_jax.data.text import TOKENIZER_FILE, VOCAB_FILE, default_minilm_dir, load_tokenizer, tokenize

__all__ = [
    "BertConfig",
    "BertEncoder",
    "cls_feature",
    "default_minilm_dir",
    "load_bert",
    "load_tokenizer",
    "mean_pool",
    "tokenize",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_EXPECTED_FILES = f"{CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_FILE} (or {VOCAB_FILE})"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """BERT's architecture; the defaults are BERT-base's, as in Hugging Face's ``BertConfig``.

    Attributes:
        vocab_size: Number of WordPiece tokens.
        hidden_size: Width of every token's hidden state.
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Attention heads per layer; must divide ``hidden_size``.
        intermediate_size: Width of each layer's feed-forward block.
        max_position_embeddings: Longest sequence the position embeddings cover.
        type_vocab_size: Number of token types (segments).
        layer_norm_eps: LayerNorm epsilon.
        hidden_act: Feed-forward activation; only ``"gelu"`` (exact, erf-based) is supported.
        initializer_range: Standard deviation of the normal initialiser used for random weights.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.hidden_act != "gelu":
            raise ValueError(f"hidden_act must be 'gelu' (exact erf GELU), got {self.hidden_act!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})."
            )

    @classmethod
    def from_json(cls, path) -> "BertConfig":
        """Reads a Hugging Face ``config.json``, ignoring the keys this encoder does not use.

        Args:
            path: Path of the JSON file.

        Returns:
            The configuration.

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If the checkpoint uses position embeddings other than absolute ones,
                or an activation other than GELU.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"BERT config {path} does not exist.")
        raw = json.loads(path.read_text())
        # Relative position schemes have extra weights this encoder lacks: refuse them
        # rather than load a model that silently computes something else.
        position_type = raw.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(f"{path}: position_embedding_type must be 'absolute', got {position_type!r}.")
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in names})


class BertEmbeddings(nnx.Module):
    """Word + position + token-type embeddings, followed by LayerNorm."""

    def __init__(self, config: BertConfig, *, dtype, rngs: nnx.Rngs):
        init = nnx.initializers.normal(config.initializer_range)
        kwargs = dict(dtype=dtype, param_dtype=dtype, embedding_init=init, rngs=rngs)
        self.word_embeddings = nnx.Embed(config.vocab_size, config.hidden_size, **kwargs)
        self.position_embeddings = nnx.Embed(config.max_position_embeddings, config.hidden_size, **kwargs)
        self.token_type_embeddings = nnx.Embed(config.type_vocab_size, config.hidden_size, **kwargs)
        self.norm = nnx.LayerNorm(
            config.hidden_size, epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=dtype, rngs=rngs
        )

    def __call__(self, input_ids, token_type_ids):
        positions = jnp.arange(input_ids.shape[1])[None, :]
        summed = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.norm(summed)


class BertLayer(nnx.Module):
    """One post-LN transformer layer: self-attention and feed-forward, each with residual + LayerNorm."""

    def __init__(self, config: BertConfig, *, dtype, rngs: nnx.Rngs):
        hidden, inner = config.hidden_size, config.intermediate_size
        init = nnx.initializers.normal(config.initializer_range)
        dense = dict(dtype=dtype, param_dtype=dtype, kernel_init=init, rngs=rngs)
        norm = dict(epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.num_heads = config.num_attention_heads
        self.query = nnx.Linear(hidden, hidden, **dense)
        self.key = nnx.Linear(hidden, hidden, **dense)
        self.value = nnx.Linear(hidden, hidden, **dense)
        self.attention_out = nnx.Linear(hidden, hidden, **dense)
        self.attention_norm = nnx.LayerNorm(hidden, **norm)
        self.intermediate = nnx.Linear(hidden, inner, **dense)
        self.output = nnx.Linear(inner, hidden, **dense)
        self.output_norm = nnx.LayerNorm(hidden, **norm)

    def _attention(self, x, attention_mask):
        batch, length, hidden = x.shape
        head_dim = hidden // self.num_heads

        def heads(projection):
            return projection(x).reshape(batch, length, self.num_heads, head_dim)

        q, k, v = heads(self.query), heads(self.key), heads(self.value)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
        # Softmax in float32 so reduced-precision weights do not lose the attention's small probabilities.
        scores = scores.astype(jnp.float32)
        keep = attention_mask[:, None, None, :].astype(bool)
        scores = jnp.where(keep, scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        context = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, hidden)
        return self.attention_out(context)

    def __call__(self, x, attention_mask):
        x = self.attention_norm(x + self._attention(x, attention_mask))
        inner = jax.nn.gelu(self.intermediate(x), approximate=False)
        return self.output_norm(x + self.output(inner))


class BertEncoder(nnx.Module):
    """BERT's embeddings and transformer stack, returning every token's last hidden state.

    Args:
        config: The architecture.
        dtype: Dtype of the parameters and of the computation.
        rngs: Random streams for the (normal) initialisation.
    """

    def __init__(self, config: BertConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = BertEmbeddings(config, dtype=dtype, rngs=rngs)
        self.layers = nnx.List([BertLayer(config, dtype=dtype, rngs=rngs) for _ in range(config.num_hidden_layers)])

    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        """Encodes a batch of token sequences.

        Args:
            input_ids: Integer token ids, ``[B, T]``.
            attention_mask: 1 for real tokens, 0 for padding, ``[B, T]``; padding keys get no attention.
            token_type_ids: Segment ids, ``[B, T]``; all zeros (one segment) when None.

        Returns:
            The last hidden state, ``[B, T, hidden_size]``.

        Raises:
            ValueError: If ``T`` exceeds ``max_position_embeddings``.
        """
        length = input_ids.shape[1]
        # jnp.take would clamp out-of-range positions silently, so refuse them here.
        if length > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence length {length} exceeds max_position_embeddings ({self.config.max_position_embeddings})."
            )
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return x


def cls_feature(hidden):
    """The [CLS] (first) token's hidden state, ``[B, H]``: the text feature in the MIE paper's setting."""
    return hidden[:, 0]


def mean_pool(hidden, attention_mask):
    """Mean of the real (unmasked) tokens' hidden states, ``[B, H]``, as sentence-transformers pools.

    Args:
        hidden: Hidden states, ``[B, T, H]``.
        attention_mask: 1 for real tokens, 0 for padding, ``[B, T]``.

    Returns:
        The masked means; zeros for a sequence with no real token.
    """
    mask = attention_mask.astype(hidden.dtype)[..., None]
    # The floor of 1 keeps an all-padding row at zero instead of 0 / 0.
    count = jnp.maximum(mask.sum(axis=1), 1)
    return (hidden * mask).sum(axis=1) / count


# Hugging Face names of the NNX parameters, keyed by their path below BertEmbeddings / BertLayer.
_EMBEDDING_NAMES = {
    ("word_embeddings", "embedding"): "embeddings.word_embeddings.weight",
    ("position_embeddings", "embedding"): "embeddings.position_embeddings.weight",
    ("token_type_embeddings", "embedding"): "embeddings.token_type_embeddings.weight",
    ("norm", "scale"): "embeddings.LayerNorm.weight",
    ("norm", "bias"): "embeddings.LayerNorm.bias",
}
_LAYER_NAMES = {
    ("query", "kernel"): "attention.self.query.weight",
    ("query", "bias"): "attention.self.query.bias",
    ("key", "kernel"): "attention.self.key.weight",
    ("key", "bias"): "attention.self.key.bias",
    ("value", "kernel"): "attention.self.value.weight",
    ("value", "bias"): "attention.self.value.bias",
    ("attention_out", "kernel"): "attention.output.dense.weight",
    ("attention_out", "bias"): "attention.output.dense.bias",
    ("attention_norm", "scale"): "attention.output.LayerNorm.weight",
    ("attention_norm", "bias"): "attention.output.LayerNorm.bias",
    ("intermediate", "kernel"): "intermediate.dense.weight",
    ("intermediate", "bias"): "intermediate.dense.bias",
    ("output", "kernel"): "output.dense.weight",
    ("output", "bias"): "output.dense.bias",
    ("output_norm", "scale"): "output.LayerNorm.weight",
    ("output_norm", "bias"): "output.LayerNorm.bias",
}


def _hf_name(path) -> str:
    """The Hugging Face weight name of the NNX parameter at ``path``."""
    if path[0] == "embeddings":
        return _EMBEDDING_NAMES[tuple(path[1:])]
    _, index, *rest = path
    return f"encoder.layer.{index}.{_LAYER_NAMES[tuple(rest)]}"


def _normalise_names(weights: dict) -> dict:
    """Maps checkpoint names onto the current Hugging Face spelling used by ``_hf_name``."""
    normalised = {}
    for name, array in weights.items():
        # BertForPreTraining-style checkpoints nest the encoder under "bert.".
        name = name.removeprefix("bert.")
        # Checkpoints converted from the original TensorFlow code call LayerNorm's parameters gamma / beta.
        if name.endswith("LayerNorm.gamma"):
            name = name.removesuffix("gamma") + "weight"
        elif name.endswith("LayerNorm.beta"):
            name = name.removesuffix("beta") + "bias"
        normalised[name] = array
    return normalised


def _load_weights(model: BertEncoder, weights: dict, source: Path) -> None:
    """Writes the checkpoint's arrays into ``model``'s parameters, checking every name and shape."""
    weights = _normalise_names(weights)
    for path, variable in nnx.iter_graph(model):
        if not isinstance(variable, nnx.Param):
            continue
        name = _hf_name(path)
        target = variable.get_value()
        # torch's Linear stores [out, in]; Flax's kernel is [in, out].
        transpose = path[-1] == "kernel"
        expected = target.shape[::-1] if transpose else target.shape
        if name not in weights:
            raise ValueError(f"Weight {name} (expected shape {expected}) is missing from {source}.")
        array = weights[name]
        if array.shape != expected:
            raise ValueError(f"Weight {name} in {source}: expected shape {expected}, got {array.shape}.")
        variable.set_value(jnp.asarray(array.T if transpose else array, dtype=target.dtype))


def load_bert(directory, *, dtype=jnp.float32):
    """Builds a BertEncoder from a local Hugging Face BERT directory.

    Pooler and pretraining-head weights in the checkpoint are ignored.

    Args:
        directory: Directory holding ``config.json``, ``model.safetensors`` and
            ``tokenizer.json`` (or ``vocab.txt``).
        dtype: Dtype of the parameters and of the computation.

    Returns:
        ``(model, tokenizer)``: the encoder with the checkpoint's weights and the tokenizer
        from ``load_tokenizer``.

    Raises:
        FileNotFoundError: If the directory or one of its required files is missing.
        ValueError: If a weight is missing from the checkpoint or has the wrong shape, or the
            config describes an unsupported architecture.
    """
    from safetensors.numpy import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"BERT directory {directory} does not exist; expected it to hold {_EXPECTED_FILES}.")
    for required in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / required).is_file():
            raise FileNotFoundError(f"{directory / required} does not exist; a BERT directory holds {_EXPECTED_FILES}.")
    config = BertConfig.from_json(directory / CONFIG_FILE)
    # Build the module abstractly: the checkpoint overwrites every parameter, so a random init would be wasted.
    model = nnx.eval_shape(lambda: BertEncoder(config, dtype=dtype, rngs=nnx.Rngs(0)))
    _load_weights(model, load_file(str(directory / WEIGHTS_FILE)), directory / WEIGHTS_FILE)
    return model, load_tokenizer(directory)
