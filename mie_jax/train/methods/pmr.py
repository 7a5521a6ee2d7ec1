"""PMR: Prototypical Modal Rebalance (Fan et al., CVPR 2023), on concat joint training.

Each modality ``m`` keeps one prototype per class, the mean of its encoder's
features over the training examples of that class (paper, Sec. 3.2):
``c^m_k = mean_{i: y_i = k} z^m_i``. Distances to the prototypes make a
non-parametric classifier, ``p^m_k(x) = softmax_k(-||z^m - c^m_k||_2)``, whose
cross-entropy is the prototypical loss ``L^m_PCE = -mean_i log p^m_{y_i}(x_i)``
and whose summed true-class probability over a batch, ``s^m = sum_i
p^m_{y_i}(x_i)``, is the modality's confidence. The imbalance ratio is
``rho^m = s^m / mean_{k != m} s^k`` (for two modalities the paper's
``rho = s^a / s^v`` and its reciprocal), and each step minimises

``L = CE(fused logits, y) + sum_m beta^m L^m_PCE - sum_m gamma^m E^m``

with ``beta^m = alpha * clip(1 / rho^m - 1, 0, 1)`` (only a modality behind the
others is pushed towards its prototypes), ``gamma^m = mu * clip(rho^m - 1, 0,
1)`` weighting the prototypical entropy ``E^m = mean_i H(p^m(x_i))`` of a
modality ahead of the others (maximised during the first ``entropy_epochs``
epochs, so the dominant modality does not converge prematurely; Sec. 3.3),
and both coefficients held constant in the gradient. For two modalities
``gamma`` of the dominant modality equals ``mu / alpha`` times ``beta`` of the
weak one, the paper's pairing of the two terms. Prototypes are recomputed
from the whole training split, in evaluation mode, before every epoch.

Fidelity. The paper's text (arXiv 2211.07089) could not be read from this
machine; the equations above follow the paper as BalanceBenchmark's port
(GeWu-Lab/BalanceBenchmark, ``PMR_trainer.py``) implements it, and were
checked against the authors' code (fanyunfeng-bit/Modal-Imbalance-PMR,
``main_Prototype_grad.py``), which differs:

* coefficients: the authors' code gives the weak modality ``beta = alpha``
  and the other 0 (``coefficient="binary"``: ``alpha`` for every modality
  with ``rho^m < 1``); the clipped ratio is the default.
* entropy term: absent from the authors' code (``mu=0`` reproduces it).
  BalanceBenchmark sums it over the batch and picks the dominant modality by
  its unimodal cross-entropy; here it is a batch mean and dominance is
  ``rho^m > 1``.
* prototypes: the authors' code averages the first tenth of the shuffled
  training batches (the validation split for AVE and CG-MNIST) and mixes the
  result with the previous prototypes, ``c = 0.8 c_new + 0.2 c_old``
  (``prototype_fraction=0.1``, ``prototype_momentum=0.2``).
* rebalancing window: the authors' code applies the prototype terms only up
  to epoch ``modulation_ends`` (100 of 150 by default; ``rebalance_epochs``).
* three or more modalities: the paper and the authors' code have two;
  BalanceBenchmark switches to an OGM-like scaling against the least
  confident modality. Here the ratio is against the mean of the others,
  which is the paper's ratio for two.

References:
  Fan et al., `PMR: Prototypical Modal Rebalance for Multimodal Learning
  <https://arxiv.org/abs/2211.07089>`_, CVPR 2023.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mie_jax import _validate
from mie_jax.data.columns import take_rows
from mie_jax.models import ConcatClassifier, Head
from mie_jax.models.encoders import build_encoders
from mie_jax.train import batches, feed, loop, options, registry, steps
from mie_jax.train.methods.single_model import SingleModelMethod, step_inputs

# The random stream (of batches.phase_rng) that draws prototype_fraction's subsets, apart from the batch order's.
_PROTOTYPE_STREAM = 1


def _check_features(features, prototypes, labels=None):
    if features.ndim != 2:
        raise ValueError(f"features must be [batch, dim], got shape {tuple(features.shape)}.")
    if prototypes.ndim != 2 or prototypes.shape[1] != features.shape[1]:
        raise ValueError(f"prototypes must be [classes, {features.shape[1]}], got shape {tuple(prototypes.shape)}.")
    if labels is not None and labels.shape != features.shape[:1]:
        raise ValueError(f"labels must be [{features.shape[0]}], got shape {tuple(labels.shape)}.")


def prototype_logits(features, prototypes):
    """The prototype classifier's logits: minus the Euclidean distance to every class prototype.

    Args:
      features: ``[batch, dim]`` encoder features ``z``.
      prototypes: ``[classes, dim]`` class prototypes ``c_k``.

    Returns:
      ``[batch, classes]`` logits ``-||z_i - c_k||_2``; their softmax is PMR's ``p_k``.

    Raises:
      ValueError: the shapes do not match.

    References:
      Fan et al., PMR, CVPR 2023, Sec. 3.2.
    """
    _check_features(features, prototypes)
    squared = jnp.sum(jnp.square(features[:, None, :] - prototypes[None, :, :]), axis=-1)
    # sqrt's gradient is infinite at 0 (a feature on its prototype); the double where keeps it finite.
    positive = squared > 0
    return -jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def prototype_cross_entropy(features, prototypes, labels):
    """PMR's prototypical cross-entropy ``L_PCE = -mean_i log p_{y_i}(x_i)``.

    Args:
      features: ``[batch, dim]`` encoder features.
      prototypes: ``[classes, dim]`` class prototypes.
      labels: ``[batch]`` integer classes.

    Returns:
      The scalar loss.

    Raises:
      ValueError: the shapes do not match.

    References:
      Fan et al., PMR, CVPR 2023, Sec. 3.2.
    """
    _check_features(features, prototypes, labels)
    log_p = jax.nn.log_softmax(prototype_logits(features, prototypes))
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))


def prototype_confidence(features, prototypes, labels):
    """A modality's confidence ``s = sum_i p_{y_i}(x_i)``: the batch's summed true-class prototype probability.

    Args:
      features: ``[batch, dim]`` encoder features.
      prototypes: ``[classes, dim]`` class prototypes.
      labels: ``[batch]`` integer classes.

    Returns:
      The scalar confidence in ``(0, batch)``.

    Raises:
      ValueError: the shapes do not match.

    References:
      Fan et al., PMR, CVPR 2023, Sec. 3.3.
    """
    _check_features(features, prototypes, labels)
    p = jax.nn.softmax(prototype_logits(features, prototypes))
    return jnp.sum(jnp.take_along_axis(p, labels[:, None], axis=1))


def prototype_entropy(features, prototypes):
    """The prototypical entropy ``E = mean_i -sum_k p_k(x_i) log p_k(x_i)``.

    Args:
      features: ``[batch, dim]`` encoder features.
      prototypes: ``[classes, dim]`` class prototypes.

    Returns:
      The scalar mean entropy, in ``[0, log classes]``.

    Raises:
      ValueError: the shapes do not match.

    References:
      Fan et al., PMR, CVPR 2023, Sec. 3.3 (entropy regularisation).
    """
    _check_features(features, prototypes)
    log_p = jax.nn.log_softmax(prototype_logits(features, prototypes))
    return -jnp.mean(jnp.sum(jnp.exp(log_p) * log_p, axis=-1))


def imbalance_ratios(confidences):
    """PMR's imbalance ratio of every modality: ``rho^m = s^m / mean_{k != m} s^k``.

    Args:
      confidences: ``[m]`` confidences ``s^m`` (:func:`prototype_confidence`), ``m >= 2``.

    Returns:
      ``[m]`` ratios; above 1 for a modality ahead of the others. For two
      modalities they are the paper's ``rho`` and ``1 / rho``.

    Raises:
      ValueError: ``confidences`` is not a vector of at least two.

    References:
      Fan et al., PMR, CVPR 2023, Sec. 3.3.
    """
    if confidences.ndim != 1 or confidences.shape[0] < 2:
        raise ValueError(f"confidences must be [modalities] with at least 2, got shape {tuple(confidences.shape)}.")
    m = confidences.shape[0]
    others_mean = (jnp.sum(confidences) - confidences) / (m - 1)
    return confidences / others_mean


def rebalance_coefficients(ratios, alpha, *, binary: bool = False):
    """The weights ``beta^m`` of the prototypical losses: ``alpha * clip(1 / rho^m - 1, 0, 1)``.

    Args:
      ratios: ``[m]`` imbalance ratios (:func:`imbalance_ratios`).
      alpha: the rebalancing strength, ``>= 0``.
      binary: the authors' code instead: ``alpha`` where ``rho^m < 1``, else 0.

    Returns:
      ``[m]`` coefficients in ``[0, alpha]``; zero for modalities not behind.

    Raises:
      ValueError: ``alpha`` is negative.

    References:
      Fan et al., PMR, CVPR 2023, Sec. 3.3.
    """
    _validate.non_negative("alpha", alpha)
    if binary:
        return jnp.where(ratios < 1.0, alpha, 0.0).astype(ratios.dtype)
    return alpha * jnp.clip(1.0 / ratios - 1.0, 0.0, 1.0)


def entropy_coefficients(ratios, mu):
    """The weights ``gamma^m`` of the entropy regulariser: ``mu * clip(rho^m - 1, 0, 1)``.

    Args:
      ratios: ``[m]`` imbalance ratios (:func:`imbalance_ratios`).
      mu: the regulariser's strength, ``>= 0``.

    Returns:
      ``[m]`` coefficients in ``[0, mu]``; zero for modalities not ahead.

    Raises:
      ValueError: ``mu`` is negative.

    References:
      Fan et al., PMR, CVPR 2023, Sec. 3.3.
    """
    _validate.non_negative("mu", mu)
    return mu * jnp.clip(ratios - 1.0, 0.0, 1.0)


def class_sums(features, labels, num_classes: int, weights=None):
    """Per-class sums of features and per-class counts: one batch's share of the class means.

    Args:
      features: ``[batch, dim]`` encoder features.
      labels: ``[batch]`` integer classes in ``[0, num_classes)``.
      num_classes: the number of classes.
      weights: optional ``[batch]`` 0/1 row weights (0 for a padded row).

    Returns:
      ``(sums [num_classes, dim], counts [num_classes])``.

    Raises:
      ValueError: the shapes do not match.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"features must be [batch, dim] with labels [batch], got {tuple(features.shape)} and {tuple(labels.shape)}."
        )
    if weights is None:
        weights = jnp.ones(labels.shape, features.dtype)
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype) * weights[:, None]
    return one_hot.T @ features, jnp.sum(one_hot, axis=0)


def updated_prototypes(previous, sums, counts, momentum: float = 0.0):
    """New prototypes from a pass's class sums: ``(1 - momentum) * sums / counts + momentum * previous``.

    A class the pass did not see keeps its previous prototype.

    Args:
      previous: ``[classes, dim]`` prototypes before the pass (zeros before the first).
      sums: ``[classes, dim]`` summed features per class (:func:`class_sums`).
      counts: ``[classes]`` examples per class.
      momentum: the weight of the previous prototypes, in ``[0, 1)`` (the
        paper: 0; the authors' code: 0.2 from the second pass on).

    Returns:
      ``[classes, dim]`` prototypes.

    Raises:
      ValueError: ``momentum`` is outside ``[0, 1)`` or the shapes differ.
    """
    if previous.shape != sums.shape or counts.shape != sums.shape[:1]:
        raise ValueError(
            f"previous and sums must be [classes, dim] with counts [classes], got {tuple(previous.shape)}, "
            f"{tuple(sums.shape)} and {tuple(counts.shape)}."
        )
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
    seen = counts > 0
    means = sums / jnp.where(seen, counts, 1.0)[:, None]
    return jnp.where(seen[:, None], (1.0 - momentum) * means + momentum * previous, previous)


@dataclasses.dataclass(frozen=True)
class PMROptions:
    """PMR's options (``--set pmr.<key>=value``).

    Attributes:
      alpha: the strength of the prototypical losses, ``beta^m = alpha *
        clip(1 / rho^m - 1, 0, 1)`` (the authors' code's default 1.0).
      mu: the strength of the entropy regulariser, ``gamma^m = mu *
        clip(rho^m - 1, 0, 1)`` (0: off, as in the authors' code; the paper's
        value could not be recovered here, 0.01 is this library's choice).
      entropy_epochs: the regulariser acts during the first this many epochs
        (the paper's "early training stage", whose length could not be
        recovered here; 0: never).
      coefficient: ``clip`` (the clipped ratio above) or ``binary``
        (the authors' code: ``alpha`` for every modality behind, 0 otherwise).
      rebalance_epochs: the prototypical losses act during the first this many
        epochs (0: every epoch; the authors' code: 101 of 150).
      prototype_momentum: the weight of the previous prototypes when they are
        recomputed (the paper: 0, plain class means; the authors' code: 0.2).
      prototype_fraction: the share of the training split, a fresh random
        subset every epoch, whose features make the prototypes (the paper: 1;
        the authors' code: 0.1).
    """

    alpha: float = options.number(1.0, ("[", 0.0))
    mu: float = options.number(0.01, ("[", 0.0), note="0: no entropy regulariser")
    entropy_epochs: int = options.whole(5, 0, "0: no entropy regulariser")
    coefficient: str = options.choice("clip", ("clip", "binary"))
    rebalance_epochs: int = options.whole(0, 0, "0: every epoch")
    prototype_momentum: float = options.number(0.0, ("[", 0.0), (")", 1.0))
    prototype_fraction: float = options.number(1.0, ("(", 0.0), ("]", 1.0))

    def __post_init__(self):
        options.validate("pmr.", self)


class PMRMethod(SingleModelMethod):
    """``pmr``: concat joint training plus PMR's prototypical losses and entropy regulariser.

    One epoch per phase. The state adds ``prototypes`` (modality -> ``[classes,
    dim]``), made before the first epoch and remade after every epoch from the
    encoders' evaluation-mode features; a phase's constants are the prototypes
    and the 0/1 switches of the prototypical and entropy terms for that epoch.
    """

    per_modality = False

    def __init__(self, config, train_split, num_classes: int, mesh=None):
        super().__init__(config, train_split, mesh)
        self.names = tuple(sorted(self.modalities))  # ConcatClassifier's order of the features.
        self.options = config.pmr
        self.num_classes = num_classes
        rngs = nnx.Rngs(config.seed)
        encoders = build_encoders(config, {m: self.inputs[m].shape[1:] for m in self.names}, rngs)
        model = ConcatClassifier(encoders, Head(config.model.dim * len(self.names), num_classes, rngs=rngs))
        self._finish(model, steps.make_optimizer(config.optimizer, steps_per_epoch=self.steps_per_epoch))

        @jax.jit
        def features(params, model_state, batch):
            (_, by_modality), _ = steps.apply_model(self.graphdef, params, model_state, batch, train=False)
            return jnp.stack([by_modality[n] for n in self.names], axis=1)

        self._features = features

    def _prototypes(self, state, phase: int, previous=None) -> dict:
        """The prototypes for epoch ``phase + 1``: class means of the encoders' features over the training split."""
        rows = np.arange(len(self.labels))
        if self.options.prototype_fraction < 1.0:
            rng = batches.phase_rng(self.config.seed, phase, _PROTOTYPE_STREAM)
            rows = np.sort(rng.permutation(rows)[: max(1, round(self.options.prototype_fraction * len(rows)))])
        columns = {m: take_rows(self.inputs[m], rows) for m in self.names}
        evaluate = lambda batch: self._features(state["params"], state["model_state"], batch)  # noqa: E731
        stacked = feed.map_batches(evaluate, columns, self.config.train.eval_batch_size, self.mesh)
        labels = jnp.asarray(self.labels[rows])
        # The first prototypes have nothing to mix with (the authors' code mixes from the second on).
        momentum = 0.0 if previous is None else self.options.prototype_momentum
        prototypes = {}
        for i, n in enumerate(self.names):
            sums, counts = class_sums(jnp.asarray(stacked[:, i]), labels, self.num_classes)
            before = jnp.zeros_like(sums) if previous is None else previous[n]
            prototypes[n] = updated_prototypes(before, sums, counts, momentum)
        return prototypes

    def init(self) -> dict:
        state = super().init()
        return {**state, "prototypes": self._prototypes(state, 0)}

    def _make_step(self):
        graphdef, tx, mesh, names, o = self.graphdef, self.tx, self.mesh, self.names, self.options
        binary = o.coefficient == "binary"

        def step(constants, carry, batch):
            params, model_state, opt_state = carry
            prototypes = constants["prototypes"]
            xs, y = step_inputs(batch, mesh)

            def loss_fn(p):
                (logits, features), new_state = steps.apply_model(graphdef, p, model_state, xs, train=True)
                loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
                # The coefficients weigh the terms; no gradient flows through them.
                held = {n: jax.lax.stop_gradient(features[n]) for n in names}
                confidences = jnp.stack([prototype_confidence(held[n], prototypes[n], y) for n in names])
                ratios = imbalance_ratios(confidences)
                beta = constants["rebalance"] * rebalance_coefficients(ratios, o.alpha, binary=binary)
                gamma = constants["entropy"] * entropy_coefficients(ratios, o.mu)
                for i, n in enumerate(names):
                    loss += beta[i] * prototype_cross_entropy(features[n], prototypes[n], y)
                    loss -= gamma[i] * prototype_entropy(features[n], prototypes[n])
                return loss, new_state

            params, opt_state, loss, model_state = steps.optimizer_step(loss_fn, tx, params, opt_state)
            return (params, model_state, opt_state), loss

        return step

    def phase_plan(self, state, phase: int, best_variables=None, *, inside: bool = False) -> loop.PhasePlan:
        plan = super().phase_plan(state, phase, best_variables, inside=inside)
        rebalance = self.options.rebalance_epochs == 0 or phase < self.options.rebalance_epochs
        constants = {
            "prototypes": state["prototypes"],
            "rebalance": jnp.asarray(float(rebalance), jnp.float32),
            "entropy": jnp.asarray(float(phase < self.options.entropy_epochs), jnp.float32),
        }
        return plan._replace(constants=constants)

    def state_inside(self, state, phase: int, carry) -> dict:
        return {**super().state_inside(state, phase, carry), "prototypes": state["prototypes"]}

    def finish_phase(self, state, phase: int, carry) -> dict:
        state = self.state_inside(state, phase, carry)
        if phase + 1 == self.num_phases:  # No epoch left to use new prototypes.
            return state
        return {**state, "prototypes": self._prototypes(state, phase + 1, state["prototypes"])}


registry.register(
    registry.MethodSpec(
        "pmr",
        PMRMethod,
        "concat joint training plus PMR's prototype cross-entropy for the modalities behind and prototype "
        "entropy for the ones ahead",
        {"pmr": PMROptions},
        (registry.ReportRow("PMR"),),
        "Fan et al., CVPR 2023",
    )
)
