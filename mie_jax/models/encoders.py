"""Encoders by name: what ``TrainConfig.encoder`` selects for each modality."""

from flax import nnx

from mie_jax.models.mlp import MLPEncoder

ENCODERS = ("mlp",)


def build_encoder(config, input_shape, rngs: nnx.Rngs) -> nnx.Module:
    """The encoder ``config.encoder`` mapping one example of ``input_shape`` to ``config.dim`` features.

    Raises:
      ValueError: an unknown encoder, or inputs of a shape it cannot take.
    """
    if config.encoder == "mlp":
        if len(input_shape) != 1:
            raise ValueError(f"encoder 'mlp' expects feature vectors [d], got examples of shape {tuple(input_shape)}.")
        return MLPEncoder(input_shape[0], config.dim, hidden=config.encoder_hidden, rngs=rngs)
    raise ValueError(f"encoder must be one of {list(ENCODERS)}, got {config.encoder!r}.")
