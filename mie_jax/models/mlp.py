"""An MLP encoder for feature-vector modalities."""

import jax
from flax import nnx

from mie_jax.models import taps


class MLPEncoder(nnx.Module):
    """Dense -> ReLU -> Dense -> ReLU mapping ``in_dim`` features to ``out_dim``.

    ``train`` is accepted, like every encoder's, and unused (no batch statistics).
    """

    def __init__(self, in_dim: int, out_dim: int, *, hidden: int = 256, rngs: nnx.Rngs):
        self.hidden = taps.Dense(in_dim, hidden, rngs=rngs)
        self.out = taps.Dense(hidden, out_dim, rngs=rngs)

    def __call__(self, x, *, train: bool = False):
        del train
        return jax.nn.relu(self.out(jax.nn.relu(self.hidden(x))))
