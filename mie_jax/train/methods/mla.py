"""MLA: per-batch alternation of modalities over one shared head (a peer baseline).

Each step takes one batch and updates the model once per modality, in turn,
with that modality's loss through the shared head. The head kernels' gradients
pass through :func:`mie_jax.orthogonal_projection`, whose projections are
updated from each step's head-layer inputs, with OWM's ``alpha = base ** (1 +
batch / batches_per_epoch)``. One phase is one epoch; at test time the
per-modality predictions are fused (MLA uses the entropy-weighted fusion).

References:
  Zhang, Latham and Yao, `Multimodal Representation Learning by Alternating
  Unimodal Adaptation <https://arxiv.org/abs/2311.10707>`_, CVPR 2024.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import mie_jax
from mie_jax.models import Head, SharedHeadClassifier
from mie_jax.models.encoders import build_encoders
from mie_jax.models.head import HEAD_LAYERS
from mie_jax.train import augment, feed, options, parallel, registry, steps
from mie_jax.train.methods.single_model import SingleModelMethod


def _head_kernel_mask(params):
    """True at the shared head's kernels: the leaves MLA projects."""
    tree = steps.head_kernel_tree(params, {layer: True for layer in HEAD_LAYERS})
    return jax.tree.map(lambda leaf: leaf is True, tree, is_leaf=lambda x: x is None)


@dataclasses.dataclass(frozen=True)
class MLAOptions:
    """The ``mla`` section.

    Attributes:
      alpha_base: OWM's alpha is ``alpha_base ** (1 + batch / batches_per_epoch)``.
      projection: apply MLA's projection (its public code never does).
    """

    alpha_base: float = options.number(0.1, ("(", 0.0))
    projection: bool = options.flag(True)

    def __post_init__(self):
        options.validate("mla.", self)


class SharedHeadMethod(SingleModelMethod):
    """``mla``."""

    per_modality = True

    def __init__(self, config, train_split, num_classes: int, mesh=None):
        super().__init__(config, train_split, mesh)
        rngs = nnx.Rngs(config.seed)
        encoders = build_encoders(config, {m: self.inputs[m].shape[1:] for m in self.modalities}, rngs)
        model = SharedHeadClassifier(encoders, Head(config.model.dim, num_classes, rngs=rngs))
        projection = None
        m, per_epoch = len(self.modalities), self.steps_per_epoch
        if config.mla.projection:
            base = config.mla.alpha_base
            projection = mie_jax.orthogonal_projection(
                # One update per modality per batch: count // m is the batch number.
                alpha=lambda count: base ** (1.0 + ((count // m) % per_epoch) / per_epoch),
                mask=_head_kernel_mask,
            )
        # One update per modality per batch: an epoch is m * per_epoch updates.
        self._finish(
            model, steps.make_optimizer(config.optimizer, steps_per_epoch=m * per_epoch, projection=projection)
        )
        self.predicts = {m: steps.make_predict(self.graphdef, modality=m) for m in self.modalities}

    def _make_step(self):
        graphdef, tx, modalities = self.graphdef, self.tx, self.modalities
        project, mesh = self.config.mla.projection, self.mesh

        def step(constants, carry, batch):
            del constants
            params, model_state, opt_state = carry

            def features_of(aux):
                return {"features": steps.head_kernel_tree(params, jax.lax.stop_gradient(aux[0]))}

            y = parallel.shard_batch(batch.labels, mesh)
            losses = []
            for m in modalities:
                x = parallel.shard_batch(augment.apply(batch.inputs[m], batch.crops.get(m)), mesh)

                def loss_fn(p, x=x, m=m, model_state=model_state):
                    (logits, layer_inputs), new_state = steps.apply_model(graphdef, p, model_state, x, m, train=True)
                    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
                    return loss, (layer_inputs, new_state)

                params, opt_state, loss, (_, model_state) = steps.optimizer_step(
                    loss_fn,
                    tx,
                    params,
                    opt_state,
                    extra_args_from_aux=features_of if project else None,
                )
                losses.append(loss)
            return (params, model_state, opt_state), jnp.mean(jnp.stack(losses))

        return step

    def logits(self, variables, inputs) -> dict:
        """Every modality's logits through the shared head, ``eval_batch_size`` rows at a time (host arrays)."""
        return {
            m: feed.map_batches(
                lambda batch, m=m: self.predicts[m](variables["params"], variables["model_state"], batch[m]),
                {m: inputs[m]},
                self.config.train.eval_batch_size,
                self.mesh,
            )
            for m in self.modalities
        }


registry.register(
    registry.MethodSpec(
        "mla",
        SharedHeadMethod,
        "per-batch alternation over a shared head with MLA's orthogonal projection",
        {"mla": MLAOptions},
        (registry.ReportRow("MLA", fusion="weighted"),),
        "Zhang, Latham and Yao, CVPR 2024",
    )
)
