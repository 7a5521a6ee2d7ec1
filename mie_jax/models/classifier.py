"""Classifiers built from encoders and heads: one per modality, or one over all."""

from typing import Mapping

import jax.numpy as jnp
from flax import nnx

from mie_jax.models.head import Head


class UnimodalClassifier(nnx.Module):
    """An encoder followed by MIE's head: one modality's late-fusion branch.

    Calling it returns the logits and the head layers' inputs (see :class:`Head`).
    """

    def __init__(self, encoder: nnx.Module, head: Head):
        self.encoder = encoder
        self.head = head

    def __call__(self, x, *, train: bool = False):
        return self.head(self.encoder(x, train=train))


class ConcatClassifier(nnx.Module):
    """Joint training's early fusion: per-modality encoders, concatenated, one head.

    Calling it with a mapping from modality name to input returns the logits
    and, per modality, its encoder output (OGM-GE scores each modality's share
    of the first head layer from them).
    """

    def __init__(self, encoders: Mapping[str, nnx.Module], head: Head):
        self.encoders = nnx.Dict(encoders)
        self.head = head

    def __call__(self, inputs: Mapping[str, jnp.ndarray], *, train: bool = False):
        features = {name: self.encoders[name](inputs[name], train=train) for name in sorted(inputs)}
        logits, _ = self.head(jnp.concatenate([features[n] for n in sorted(features)], axis=-1))
        return logits, features


class LogitAverageClassifier(nnx.Module):
    """Joint training's late fusion: the mean of the per-modality branches' logits."""

    def __init__(self, branches: Mapping[str, UnimodalClassifier]):
        self.branches = nnx.Dict(branches)

    def __call__(self, inputs: Mapping[str, jnp.ndarray], *, train: bool = False):
        logits = {name: self.branches[name](inputs[name], train=train)[0] for name in sorted(inputs)}
        return jnp.mean(jnp.stack(list(logits.values())), axis=0), logits


class SharedHeadClassifier(nnx.Module):
    """MLA's model: one encoder per modality into one shared head.

    ``model(x, modality)`` returns the logits and the head layers' inputs.
    """

    def __init__(self, encoders: Mapping[str, nnx.Module], head: Head):
        self.encoders = nnx.Dict(encoders)
        self.head = head

    def __call__(self, x, modality: str, *, train: bool = False):
        return self.head(self.encoders[modality](x, train=train))
