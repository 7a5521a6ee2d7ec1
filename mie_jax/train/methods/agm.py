"""AGM: Adaptive Gradient Modulation (Li et al., ICCV 2023), on concat joint training.

AGM splits the fused model's logits into mono-modal responses with the
Shapley value over modalities: with ``V(S)`` the model's logits when the
modalities outside ``S`` are zero-padded and ``V({}) = 0``,

``phi^m(x) = sum_{S not containing m} |S|! (M - |S| - 1)! / M! * (V(S + {m}) - V(S))``,

so ``sum_m phi^m(x)`` is the fused output (the Shapley value's efficiency).
Each step scores every modality by the cross-entropy of its response,
``s^m = mean_i -log softmax(phi^m(x_i))_{y_i}``, turns the scores into
competition ratios ``r^m = exp(M / (M - 1) * (mean_k s^k - s^m))`` (for two
modalities ``exp(s^v - s^a)``: large when modality ``a`` is ahead), and
compares them with the same ratios of the scores' running averages,
``s_bar^m_t = s_bar^m_{t-1} (t - 1) / t + s^m_t / t`` over every step so far
(the reference a modality's learning should keep to):

``kappa^m = exp(alpha * (r_bar^m - r^m))``

with ``r_bar`` computed from ``s_bar`` before this step's update. The loss is
the fused cross-entropy, and in back-propagation the gradient reaching each
response ``phi^m`` is multiplied by ``kappa^m``: a modality ahead of its
running pace is slowed, one behind it is sped up.

Fidelity. The paper's text (arXiv 2308.07686) could not be read from this
machine; the equations above are the authors' code's (lihong2303/AGM_ICCV2023,
``model/CREMAD_net.py`` and ``model/URFunny_net.py`` for the responses,
``run/CREMAD_main.py`` and ``run/URFunny_main.py`` for the scores and
coefficients), where:

* padding: a missing modality's raw input is replaced by zeros and the padded
  models run in evaluation mode, gradients flowing through them; here too
  (``padding="input"``); ``padding="features"`` zeroes its encoder output instead.
* the coefficient's exponent is capped, ``min(r_bar - r, 10)`` (CREMA-D) or
  ``7`` (UR-Funny, MOSEI): ``max_exponent`` (default: uncapped).
* the whole gradient is clipped to norm 1 (CREMA-D; 5 for UR-Funny) when an
  entry of the fusion layer's kernel gradient exceeds it in magnitude:
  ``clip_norm`` (default: off), tested on the head's first kernel.
* a true-class probability below 1e-8 scores ``-log 1e-8``; here the
  cross-entropy is exact (log-softmax).
* modulation runs from epoch ``modulation_starts`` to ``modulation_ends``
  (defaults 0 and 20): ``modulation_epochs`` (default: every epoch). The
  running averages are updated in every epoch either way.

BalanceBenchmark's port (GeWu-Lab/BalanceBenchmark, ``AGM_trainer.py``)
differs from the authors' code in three places. Two are not reproduced: its
general Shapley sum leaves out the empty coalition (for two modalities
``phi^a = (V({a, v}) - V({v})) / 2``, without ``V({a}) / 2``), and its ratio
has the opposite sign (``exp(M / (M - 1) * (s^m - mean_k s^k))``). The third
is ``target="encoders"``: with the padded passes outside the gradient, it
multiplies modality ``m``'s encoder weight gradients (not biases) by ``kappa^m``.

References:
  Li et al., `Boosting Multi-modal Model Performance with Adaptive Gradient
  Modulation <https://arxiv.org/abs/2308.07686>`_, ICCV 2023.
"""

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mie_jax import _validate
from mie_jax.models import ConcatClassifier, Head
from mie_jax.models.encoders import build_encoders
from mie_jax.train import loop, options, registry, steps
from mie_jax.train.methods.single_model import SingleModelMethod, step_inputs


def shapley_weight_matrix(num_modalities: int) -> np.ndarray:
    """``W [M, 2**M]`` with ``phi = W @ V``: the Shapley value as a linear map of the coalitions' values.

    Coalition ``s`` (a row of ``V``) holds modality ``j`` when bit ``j`` of
    ``s`` is set. ``W[j, S + {j}] += w(|S|)`` and ``W[j, S] -= w(|S|)`` for
    every ``S`` without ``j``, ``w(k) = k! (M - k - 1)! / M!``.

    Args:
      num_modalities: ``M >= 2``.

    Returns:
      The float64 ``[M, 2**M]`` matrix.

    Raises:
      ValueError: ``num_modalities < 2``.

    References:
      Li et al., AGM, ICCV 2023, Sec. 3 (mono-modal responses).
    """
    if num_modalities < 2:
        raise ValueError(f"num_modalities must be >= 2, got {num_modalities}.")
    m = num_modalities
    weights = np.zeros((m, 2**m))
    for j in range(m):
        for s in range(2**m):
            if s >> j & 1:
                continue
            size = bin(s).count("1")
            w = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            weights[j, s | 1 << j] += w
            weights[j, s] -= w
    return weights


def shapley_responses(coalition_values):
    """The mono-modal responses ``phi^m``: the Shapley value of every modality.

    Args:
      coalition_values: ``[2**M, ...]`` the value ``V(S)`` of every coalition
        (row ``s`` holds modality ``j`` when bit ``j`` of ``s`` is set); AGM
        sets row 0, the empty coalition, to zero.

    Returns:
      ``[M, ...]`` responses; they sum to ``V(all) - V({})``.

    Raises:
      ValueError: the leading dimension is not ``2**M`` with ``M >= 2``.

    References:
      Li et al., AGM, ICCV 2023, Sec. 3 (mono-modal responses).
    """
    count = coalition_values.shape[0] if coalition_values.ndim else 0
    m = count.bit_length() - 1
    if m < 2 or count != 2**m:
        raise ValueError(
            f"coalition_values must be [2**M, ...] with M >= 2, got shape {tuple(coalition_values.shape)}."
        )
    weights = jnp.asarray(shapley_weight_matrix(m), coalition_values.dtype)
    return jnp.tensordot(weights, coalition_values, axes=1)


def mono_modal_scores(responses, labels):
    """Every modality's score ``s^m = mean_i -log softmax(phi^m(x_i))_{y_i}``.

    Args:
      responses: ``[M, batch, classes]`` mono-modal responses (logits).
      labels: ``[batch]`` integer classes.

    Returns:
      ``[M]`` cross-entropies; lower is stronger.

    Raises:
      ValueError: the shapes do not match.

    References:
      Li et al., AGM, ICCV 2023, Sec. 3 (adaptive gradient modulation).
    """
    if responses.ndim != 3 or labels.shape != responses.shape[1:2]:
        raise ValueError(
            f"responses must be [M, batch, classes] with labels [batch], got {tuple(responses.shape)} "
            f"and {tuple(labels.shape)}."
        )
    log_p = jax.nn.log_softmax(responses, axis=-1)
    return -jnp.mean(log_p[:, jnp.arange(labels.shape[0]), labels], axis=1)


def competition_ratios(scores):
    """AGM's ratio of every modality: ``r^m = exp(M / (M - 1) * (mean_k s^k - s^m))``.

    Args:
      scores: ``[M]`` scores (:func:`mono_modal_scores`) or their running averages, ``M >= 2``.

    Returns:
      ``[M]`` positive ratios, above 1 for a modality scoring better than the
      mean; for two modalities ``r^a = exp(s^v - s^a)``.

    Raises:
      ValueError: ``scores`` is not a vector of at least two.

    References:
      Li et al., AGM, ICCV 2023, Sec. 3 (adaptive gradient modulation).
    """
    if scores.ndim != 1 or scores.shape[0] < 2:
        raise ValueError(f"scores must be [modalities] with at least 2, got shape {tuple(scores.shape)}.")
    m = scores.shape[0]
    return jnp.exp(m / (m - 1) * (jnp.mean(scores) - scores))


def modulation_coefficients(scores, running_scores, alpha, max_exponent: Optional[float] = None):
    """AGM's gradient scale of every modality: ``kappa^m = exp(alpha * (r_bar^m - r^m))``.

    Args:
      scores: ``[M]`` this step's scores.
      running_scores: ``[M]`` the running averages before this step's update.
      alpha: the modulation strength, ``>= 0``.
      max_exponent: caps ``r_bar - r`` before the product (the authors' code: 10
        or 7); None leaves it uncapped.

    Returns:
      ``[M]`` positive coefficients; below 1 for a modality ahead of its running pace.

    Raises:
      ValueError: ``alpha`` is negative or the shapes differ.

    References:
      Li et al., AGM, ICCV 2023, Sec. 3 (adaptive gradient modulation).
    """
    _validate.non_negative("alpha", alpha)
    if running_scores.shape != scores.shape:
        raise ValueError(f"running_scores must have shape {tuple(scores.shape)}, got {tuple(running_scores.shape)}.")
    gap = competition_ratios(running_scores) - competition_ratios(scores)
    if max_exponent is not None:
        gap = jnp.minimum(gap, max_exponent)
    return jnp.exp(alpha * gap)


def update_running_scores(running_scores, scores, step):
    """The running averages after step ``t``: ``s_bar_t = s_bar_{t-1} (t - 1) / t + s_t / t``.

    Args:
      running_scores: ``[M]`` averages over steps ``1 .. t - 1`` (anything at ``t = 1``).
      scores: ``[M]`` step ``t``'s scores.
      step: ``t >= 1``, counted over the whole run.

    Returns:
      ``[M]`` averages over steps ``1 .. t``.

    Raises:
      ValueError: ``step < 1`` or the shapes differ.

    References:
      Li et al., AGM, ICCV 2023, Sec. 3 (adaptive gradient modulation).
    """
    if running_scores.shape != scores.shape:
        raise ValueError(f"running_scores must have shape {tuple(scores.shape)}, got {tuple(running_scores.shape)}.")
    number = _validate._concrete_float(step)
    if number is not None and not number >= 1:
        raise ValueError(f"step must be >= 1, got {number}.")
    t = jnp.asarray(step, scores.dtype)
    return running_scores * (t - 1) / t + scores / t


@jax.custom_vjp
def scale_gradient(x, scale):
    """``x`` unchanged; in back-propagation its cotangent is multiplied by ``scale``.

    Args:
      x: any array (a mono-modal response).
      scale: a scalar (its ``kappa``); it receives no gradient.

    Returns:
      ``x``.
    """
    del scale
    return x


def _scale_gradient_fwd(x, scale):
    return x, scale


def _scale_gradient_bwd(scale, cotangent):
    return cotangent * scale, jnp.zeros_like(scale)


scale_gradient.defvjp(_scale_gradient_fwd, _scale_gradient_bwd)


@dataclasses.dataclass(frozen=True)
class AGMOptions:
    """AGM's options (``--set agm.<key>=value``).

    Attributes:
      alpha: the modulation strength in ``kappa = exp(alpha * (r_bar - r))``
        (the authors' code's default 1.0).
      padding: how a modality is left out of a coalition: ``input`` (its raw
        input replaced by zeros, the authors' code; here before the encoders'
        pixel scaling, there after their loaders' normalisation) or
        ``features`` (its encoder output replaced by zeros).
      target: where ``kappa^m`` acts: ``responses`` (the gradient reaching
        ``phi^m``, the authors' code) or ``encoders`` (modality ``m``'s encoder
        weight gradients, BalanceBenchmark's port).
      max_exponent: caps ``r_bar - r`` (the authors' code: 10 for CREMA-D, 7
        for UR-Funny and MOSEI); None: uncapped.
      clip_norm: when an entry of the head's first kernel gradient exceeds this
        in magnitude, the whole gradient is clipped to this global norm (the
        authors' code: 1 for CREMA-D); None: off.
      modulation_epochs: the coefficients act during the first this many epochs
        (0: every epoch; the authors' code: 20).
    """

    alpha: float = options.number(1.0, ("[", 0.0))
    padding: str = options.choice("input", ("input", "features"))
    target: str = options.choice("responses", ("responses", "encoders"))
    max_exponent: Optional[float] = options.number(None, ("(", 0.0), optional=True)
    clip_norm: Optional[float] = options.number(None, ("(", 0.0), optional=True)
    modulation_epochs: int = options.whole(0, 0, "0: every epoch")

    def __post_init__(self):
        options.validate("agm.", self)


def _clip_when_large(grads, head_kernel, clip_norm: float):
    """The authors' code's guard: ``grads`` clipped to global norm ``clip_norm`` when ``head_kernel`` exceeds it."""
    norm = optax.tree.norm(grads)
    large = jnp.max(jnp.abs(head_kernel)) > clip_norm
    # torch.nn.utils.clip_grad_norm_'s factor, applied only when the guard fires.
    factor = jnp.where(large, jnp.minimum(1.0, clip_norm / (norm + 1e-6)), 1.0)
    return jax.tree.map(lambda g: g * factor, grads)


class AGMMethod(SingleModelMethod):
    """``agm``: concat joint training whose mono-modal responses' gradients are modulated by ``kappa``.

    One epoch per phase. The carry is ``(params, model_state, opt_state,
    agm)``; ``agm`` holds the running scores ``s_bar`` and the number of steps
    so far ``t``. A phase's constant says whether the coefficients act in that epoch.
    """

    per_modality = False

    def __init__(self, config, train_split, num_classes: int, mesh=None):
        super().__init__(config, train_split, mesh)
        self.names = tuple(sorted(self.modalities))  # ConcatClassifier's order; bit j of a coalition is names[j].
        self.options = config.agm
        rngs = nnx.Rngs(config.seed)
        encoders = build_encoders(config, {m: self.inputs[m].shape[1:] for m in self.names}, rngs)
        model = ConcatClassifier(encoders, Head(config.model.dim * len(self.names), num_classes, rngs=rngs))
        self._finish(model, steps.make_optimizer(config.optimizer, steps_per_epoch=self.steps_per_epoch))

    def init(self) -> dict:
        agm = {"running_scores": jnp.zeros((len(self.names),), jnp.float32), "step": jnp.zeros((), jnp.int32)}
        return {**super().init(), "agm": agm}

    def coalition_logits(self, params, model_state, xs):
        """``([2**M, B, classes] V(S), the full model's logits, its new model_state)``; ``V({}) = 0``.

        The full coalition runs in training mode (its BatchNorm statistics are
        kept); the padded ones in evaluation mode, as in the authors' code.
        """
        graphdef, names = self.graphdef, self.names
        (logits, features), new_state = steps.apply_model(graphdef, params, model_state, xs, train=True)
        head = nnx.merge(graphdef, params, model_state).head
        full = 2 ** len(names) - 1
        values = [jnp.zeros_like(logits)]
        for s in range(1, full + 1):
            present = [s >> j & 1 for j in range(len(names))]
            if s == full:
                values.append(logits)
            elif self.options.padding == "input":
                padded = {n: xs[n] if keep else jnp.zeros_like(xs[n]) for n, keep in zip(names, present)}
                (padded_logits, _), _ = steps.apply_model(graphdef, params, model_state, padded, train=False)
                values.append(padded_logits)
            else:
                fused = [features[n] if keep else jnp.zeros_like(features[n]) for n, keep in zip(names, present)]
                values.append(head(jnp.concatenate(fused, axis=-1))[0])
        return jnp.stack(values), logits, new_state

    def _make_step(self):
        tx, mesh, names, o = self.tx, self.mesh, self.names, self.options

        def step(modulate, carry, batch):
            params, model_state, opt_state, agm = carry
            xs, y = step_inputs(batch, mesh)
            t = agm["step"] + 1

            def loss_fn(p):
                values, logits, new_state = self.coalition_logits(p, model_state, xs)
                responses = shapley_responses(values)
                scores = mono_modal_scores(jax.lax.stop_gradient(responses), y)
                kappa = modulation_coefficients(scores, agm["running_scores"], o.alpha, o.max_exponent)
                kappa = jnp.where(modulate, kappa, 1.0)
                if o.target == "responses":
                    # sum_m phi^m is the fused output; each term's gradient is scaled by its kappa.
                    logits = sum(scale_gradient(responses[j], kappa[j]) for j in range(len(names)))
                loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
                return loss, (scores, kappa, new_state)

            def modify_grads(grads, aux):
                _, kappa, _ = aux
                if o.target == "encoders":
                    # BalanceBenchmark's port: modality m's encoder weight gradients (not biases) times kappa^m.
                    encoders = {
                        n: jax.tree.map(lambda g, k=kappa[j]: g * k if g.ndim > 1 else g, grads["encoders"][n])
                        for j, n in enumerate(names)
                    }
                    grads = {**grads, "encoders": encoders}
                if o.clip_norm is not None:
                    grads = _clip_when_large(grads, grads["head"]["fc1"]["kernel"], o.clip_norm)
                return grads

            params, opt_state, loss, (scores, _, model_state) = steps.optimizer_step(
                loss_fn, tx, params, opt_state, modify_grads=modify_grads
            )
            agm = {"running_scores": update_running_scores(agm["running_scores"], scores, t), "step": t}
            return (params, model_state, opt_state, agm), loss

        return step

    def phase_plan(self, state, phase: int, best_variables=None, *, inside: bool = False) -> loop.PhasePlan:
        del best_variables, inside  # One model trained throughout: no stages to restart.
        carry = (state["params"], state["model_state"], state["opt_state"], state["agm"])
        epochs = self.options.modulation_epochs
        modulate = jnp.asarray(epochs == 0 or phase < epochs)
        return loop.PhasePlan(
            self.run_chunk, modulate, carry, self.draws(phase), self.inputs, self.labels, self.steps_per_epoch
        )

    def state_inside(self, state, phase: int, carry) -> dict:
        del state, phase
        params, model_state, opt_state, agm = carry
        return {"params": params, "model_state": model_state, "opt_state": opt_state, "agm": agm}

    def finish_phase(self, state, phase: int, carry) -> dict:
        return self.state_inside(state, phase, carry)


registry.register(
    registry.MethodSpec(
        "agm",
        AGMMethod,
        "concat joint training with AGM's adaptive modulation of the gradients of Shapley mono-modal responses",
        {"agm": AGMOptions},
        (registry.ReportRow("AGM"),),
        "Li et al., ICCV 2023",
    )
)
