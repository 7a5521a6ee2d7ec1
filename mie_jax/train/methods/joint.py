"""Joint training over all modalities at once (the paper's Baseline) and OGM-GE.

``joint`` minimises one loss on the fused output: concatenated encoder
features into one head (``joint.fusion="concat"``) or the mean of the
per-modality branches' logits (``"average"``). ``ogm_ge`` is concat joint
training whose encoder gradients are modulated on the fly: with ``s_j`` the
summed softmax probability of the true class predicted from modality ``j``'s
share of the fused input, ``r_j = s_j / mean_{k != j} s_k`` and encoder
``j``'s gradient becomes ``g * (1 - tanh(alpha * relu(r_j - 1))) + N(0,
std(g)^2)`` (generalisation enhancement). Modality ``j``'s share is the head
applied to the concatenation with the other modalities' features zeroed,
which is OGM-GE's ``W_j h_j + b / m`` exactly when the head is one linear layer.

References:
  Peng et al., `Balanced Multimodal Learning via On-the-fly Gradient
  Modulation <https://arxiv.org/abs/2203.15996>`_, CVPR 2022.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mie_jax.models import ConcatClassifier, Head, LogitAverageClassifier
from mie_jax.models.encoders import build_encoders, build_unimodal_classifier, encoder_names
from mie_jax.train import options, registry, steps
from mie_jax.train.methods.single_model import SingleModelMethod, step_inputs


def ogm_coefficients(scores, alpha):
    """OGM's per-modality gradient scale ``1 - tanh(alpha * relu(r_j - 1))``.

    Args:
      scores: ``[m]`` summed true-class probabilities per modality.
      alpha: the modulation strength.

    Returns:
      ``[m]`` coefficients in (0, 1]; only modalities ahead of the others' mean
      are slowed down.
    """
    m = scores.shape[0]
    others_mean = (jnp.sum(scores) - scores) / (m - 1)
    ratio = scores / others_mean
    return 1.0 - jnp.tanh(alpha * jax.nn.relu(ratio - 1.0))


def _with_noise(grad, coefficient, key):
    """OGM-GE's modulated gradient: scaled, plus Gaussian noise of the gradient's own std."""
    noise = jax.random.normal(key, grad.shape, grad.dtype) * (jnp.std(grad) + 1e-8)
    return grad * coefficient + noise


@dataclasses.dataclass(frozen=True)
class JointOptions:
    """The ``joint`` section.

    Attributes:
      fusion: ``concat`` (encoder features concatenated into one head) or
        ``average`` (the mean of per-modality branches' logits).
    """

    fusion: str = options.choice("concat", ("concat", "average"))

    def __post_init__(self):
        options.validate("joint.", self)


@dataclasses.dataclass(frozen=True)
class OGMOptions:
    """The ``ogm_ge`` section.

    Attributes:
      alpha: OGM's modulation strength (the paper's alpha).
    """

    alpha: float = options.number(0.5, ("[", 0.0))

    def __post_init__(self):
        options.validate("ogm_ge.", self)


class JointMethod(SingleModelMethod):
    """``joint`` and ``ogm_ge``: one model, one loss, one epoch per phase."""

    per_modality = False

    def __init__(self, config, train_split, num_classes: int, mesh=None):
        super().__init__(config, train_split, mesh)
        rngs = nnx.Rngs(config.seed)
        if config.reads("joint") and config.joint.fusion == "average":
            names = encoder_names(config, self.modalities)
            model = LogitAverageClassifier(
                {
                    m: build_unimodal_classifier(config, names[m], self.inputs[m].shape[1:], num_classes, rngs, m)
                    for m in self.modalities
                }
            )
        else:
            encoders = build_encoders(config, {m: self.inputs[m].shape[1:] for m in self.modalities}, rngs)
            model = ConcatClassifier(encoders, Head(config.model.dim * len(self.modalities), num_classes, rngs=rngs))
        self._finish(model, steps.make_optimizer(config.optimizer, steps_per_epoch=self.steps_per_epoch))

    def _modality_scores(self, params, model_state, features, y):
        """Per modality, the summed true-class probability from its share of the head's input."""
        head = nnx.merge(self.graphdef, params, model_state).head
        names = sorted(features)
        scores = []
        for name in names:
            alone = jnp.concatenate([features[n] if n == name else jnp.zeros_like(features[n]) for n in names], axis=-1)
            probabilities = jax.nn.softmax(head(alone)[0])
            scores.append(jnp.sum(jnp.take_along_axis(probabilities, y[:, None], axis=1)))
        return names, jnp.stack(scores)

    def _make_step(self):
        graphdef, tx, config, mesh = self.graphdef, self.tx, self.config, self.mesh
        alpha = config.ogm_ge.alpha if config.reads("ogm_ge") else None

        def step(constants, carry, batch):
            del constants
            params, model_state, opt_state = carry
            xs, y = step_inputs(batch, mesh)

            def loss_fn(p):
                (logits, features), new_state = steps.apply_model(graphdef, p, model_state, xs, train=True)
                loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
                return loss, (features, new_state)

            def modify_grads(grads, aux):
                features = jax.lax.stop_gradient(aux[0])
                names, scores = self._modality_scores(params, model_state, features, y)
                coefficients = ogm_coefficients(scores, alpha)
                encoders = dict(grads["encoders"])
                for i, name in enumerate(names):
                    leaves, treedef = jax.tree.flatten(encoders[name])
                    leaf_keys = jax.random.split(jax.random.fold_in(batch.key, i), len(leaves))
                    encoders[name] = jax.tree.unflatten(
                        treedef, [_with_noise(g, coefficients[i], k) for g, k in zip(leaves, leaf_keys)]
                    )
                return {**grads, "encoders": encoders}

            params, opt_state, loss, (_, model_state) = steps.optimizer_step(
                loss_fn, tx, params, opt_state, modify_grads=modify_grads if alpha is not None else None
            )
            return (params, model_state, opt_state), loss

        return step

    def _phase_keys(self, rng, num_steps: int):
        # OGM-GE's noise: one key per step, drawn from the phase's own stream.
        return jax.random.split(jax.random.key(int(rng.integers(2**31))), num_steps)


registry.register(
    registry.MethodSpec(
        "joint",
        JointMethod,
        "one loss on the fused output (`joint.fusion`: `concat` or `average`): the paper's Baseline",
        {"joint": JointOptions},
        (
            registry.ReportRow("joint (concat)", {"joint": {"fusion": "concat"}}),
            registry.ReportRow("joint (average)", {"joint": {"fusion": "average"}}),
        ),
    )
)
registry.register(
    registry.MethodSpec(
        "ogm_ge",
        JointMethod,
        "concat joint training with OGM-GE's on-the-fly gradient modulation",
        {"ogm_ge": OGMOptions},
        (registry.ReportRow("OGM-GE"),),
        "Peng et al., CVPR 2022",
    )
)
