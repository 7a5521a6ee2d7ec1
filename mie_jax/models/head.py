"""MIE's per-modality classification head."""

import jax
from flax import nnx

from mie_jax.models import taps

# The head's layers, in order; each is a Dense whose kernel MIE's T multiplies.
HEAD_LAYERS = ("fc1", "fc2", "fc3")


class Head(nnx.Module):
    """FC(dim x 256) -> ReLU -> FC(256 x 64) -> FC(64 x classes), as in the paper.

    Calling it returns the logits and the input of every layer, so the
    covariances of Eq. 5 need no second forward pass.
    """

    def __init__(self, dim: int, num_classes: int, *, widths=(256, 64), rngs: nnx.Rngs):
        self.fc1 = taps.Dense(dim, widths[0], rngs=rngs)
        self.fc2 = taps.Dense(widths[0], widths[1], rngs=rngs)
        self.fc3 = taps.Dense(widths[1], num_classes, rngs=rngs)

    def __call__(self, x):
        hidden = jax.nn.relu(self.fc1(x))
        bottleneck = self.fc2(hidden)
        logits = self.fc3(bottleneck)
        return logits, {"fc1": x, "fc2": hidden, "fc3": bottleneck}
