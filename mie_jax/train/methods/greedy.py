"""Balanced multi-modal learning (Wu et al., ICML 2022): the ``greedy`` method.

Model. The paper's network has one uni-modal branch ``phi_j`` per modality,
joined by intermediate fusion layers (MMTM, Joze et al. 2020); branch ``j``
predicts ``y_hat_j``, the model predicts their mean and trains on the sum of
the branches' cross-entropies. Here branch ``j`` is modality ``j``'s encoder
followed by its own head (:class:`~mie_jax.models.Head`), and one MMTM block
sits between the encoders and the heads (the encoders of this library give
feature vectors, so MMTM's squeeze, a spatial mean, is the identity): the
concatenated features of all modalities pass a shared layer ``W_s``, a ReLU,
and per-modality layers ``W_j`` with a sigmoid, giving gates ``g_j`` that
rescale ``z_j`` before head ``j``.

Defining quantities:

* Conditional utilisation rate (paper section 3): with ``A_j`` the accuracy of
  branch ``j`` and ``A'_j`` that of the derived uni-modal network, where the
  other modalities' inputs to the fusion are replaced by their training-set
  means, ``u(others | m_j) = (A_j - A'_j) / A_j``
  (:func:`conditional_utilization_rates`; for two modalities
  ``u(m1|m0), u(m0|m1)`` and ``d_util = u(m1|m0) - u(m0|m1)``).
* Conditional learning speed (section 4): for a group of parameters ``theta``
  at step ``t``, ``mu(theta; t) = ||grad_theta L||^2 / ||theta||^2``
  (:func:`learning_speed`); with ``psi_j`` the fusion parameters feeding branch
  ``j`` (``W_s``, shared by every branch, and ``W_j``) and ``phi_j`` the
  branch's own parameters (encoder and head),
  ``s(others | m_j; t) = log10(sum_{tau <= t} mu(psi_j) / sum_{tau <= t} mu(phi_j))``
  (:func:`conditional_learning_speeds`), summed over the normal steps.
* The step rule (Algorithm 1): after a normal step, if the speeds differ by
  more than ``alpha``, the next ``Q`` steps are re-balancing steps for the
  branch that learns most from the other modalities, i.e. the modality the
  model under-uses (:func:`rebalance_choice`, :func:`advance_schedule`). In a
  re-balancing step for ``k`` the cross-modal flow into branch ``k`` is cut:
  its gate is the running mean of its past gates, a constant, so ``y_hat_k``
  depends on ``m_k`` alone; the update is restricted to branch ``k``'s own
  parameters (``update="branch"``).

More than two modalities. The paper has two, with
``d_speed = s(m1|m0) - s(m0|m1)``: ``|d_speed| > alpha`` triggers re-balancing
of ``m0`` when ``d_speed > 0`` and of ``m1`` otherwise. Here ``d_speed`` is
``max_j s_j - min_j s_j`` and the re-balanced modality is ``argmax_j s_j``,
which for two modalities is exactly the paper's rule; MMTM extends to ``m``
inputs as its authors define it (one squeeze over all, one excitation each).

Fidelity. The numbers come from the authors' released code
(nyukat/greedy_multimodal_learning), which also fixes details the equations
leave open: ``alpha = 0.01``, ``Q = 5``, ``log10``, ``mu`` of a group as the
ratio of its summed squared gradient and parameter norms, the fusion layer
shared by both modalities counted in both ``psi_0`` and ``psi_1``, speeds
accumulated from the first step but re-balancing only from the second epoch
(``warmup_epochs = 1``), no speed accumulated during re-balancing steps,
speeds from the loss gradient alone (PyTorch's SGD adds weight decay inside
its step), one loss for every kind of step, and the running mean of the gates
as the cut-off branch's gate. Differences:

* The released code updates every parameter in a re-balancing step (with the
  branch's fusion input replaced); Algorithm 1 trains only the lagging
  modality's branch. ``update="branch"`` (default) follows the paper,
  ``update="all"`` the code. With ``"branch"`` the other parameters keep their
  values, and their gradients are zeroed so that momentum does not carry the
  step's gradient over to later steps (it still decays).
* The code's running mean of the gates also counts evaluation passes and, for
  the second modality, averages the first modality's gates (a slip: both
  running means are fed ``vis_out``); here each gate's mean is over its own
  values in the training steps.
* The code inserts MMTM after ResNet stages 2-4 of each branch; the encoders
  here are black boxes, so there is one MMTM block, at their outputs.
* BalanceBenchmark's port (GeWu-Lab/BalanceBenchmark) trains on the loss of a
  concatenation head instead of the branches' losses; not followed.

References:
  Wu, Jastrzebski, Cho, Geras, `Characterizing and Overcoming the Greedy
  Nature of Learning in Multi-modal Deep Neural Networks
  <https://arxiv.org/abs/2202.05306>`_, ICML 2022.
  Joze et al., `MMTM: Multimodal Transfer Module for CNN Fusion
  <https://arxiv.org/abs/1911.08670>`_, CVPR 2020.
"""

import dataclasses
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mie_jax.models import Head
from mie_jax.models.encoders import build_encoders
from mie_jax.train import feed, loop, options, registry, steps
from mie_jax.train.methods.single_model import SingleModelMethod, step_inputs


@dataclasses.dataclass(frozen=True)
class GreedyOptions:
    """The ``greedy`` section.

    Attributes:
      alpha: the imbalance tolerance: re-balancing starts when the conditional
        learning speeds differ by more than ``alpha`` (log10 units; the
        released configuration's 0.01).
      window: ``Q``, the number of re-balancing steps each time (the released
        configuration's 5).
      warmup_epochs: epochs of normal steps only, at the start; the speeds are
        accumulated from the first step (the released configuration starts
        re-balancing in its second epoch: 1).
      update: what a re-balancing step updates: ``branch``, only the lagging
        modality's encoder and head (Algorithm 1), or ``all`` (the released code).
      mmtm_ratio: MMTM's reduction ratio: the shared fusion layer has
        ``2 * sum(dims) // ratio`` units (the released code's 4).
    """

    alpha: float = options.number(0.01, ("[", 0.0))
    window: int = options.whole(5, 1)
    warmup_epochs: int = options.whole(1, 0)
    update: str = options.choice("branch", ("branch", "all"))
    mmtm_ratio: int = options.whole(4, 1)

    def __post_init__(self):
        options.validate("greedy.", self)


def _check_vector(name, value, length=None):
    shape = jnp.shape(value)
    if len(shape) != 1 or (length is not None and shape[0] != length):
        expected = f"[{length}]" if length is not None else "[m]"
        raise ValueError(f"{name} must be a vector {expected}, got shape {shape}.")


def conditional_utilization_rates(accuracy, accuracy_alone):
    """``u(others | m_j) = (A_j - A'_j) / A_j``: branch ``j``'s relative accuracy gain from the other modalities.

    Args:
      accuracy: ``[m]`` accuracy of each branch's prediction ``y_hat_j`` with
        every modality.
      accuracy_alone: ``[m]`` accuracy of the derived uni-modal networks: branch
        ``j`` with the other modalities' fusion inputs at their training means.

    Returns:
      ``[m]`` rates; for two modalities ``[u(m1|m0), u(m0|m1)]``.

    Raises:
      ValueError: if the inputs are not vectors of one length.

    References:
      Wu et al., ICML 2022, section 3 (conditional utilization rate).
    """
    _check_vector("accuracy", accuracy)
    _check_vector("accuracy_alone", accuracy_alone, jnp.shape(accuracy)[0])
    accuracy = jnp.asarray(accuracy)
    return (accuracy - jnp.asarray(accuracy_alone)) / accuracy


def learning_speed(grads, params):
    """``mu(theta) = ||grad||^2 / ||theta||^2`` over a group of parameters (all leaves of the trees together).

    Args:
      grads: the loss gradient of the group, a pytree.
      params: the group's parameters, a pytree of the same structure.

    Returns:
      A scalar: the squared gradient norm relative to the squared parameter norm.

    Raises:
      ValueError: if the trees differ in structure or are empty.

    References:
      Wu et al., ICML 2022, section 4 (conditional learning speed).
    """
    grad_leaves, grad_tree = jax.tree.flatten(grads)
    param_leaves, param_tree = jax.tree.flatten(params)
    if grad_tree != param_tree:
        raise ValueError(f"grads must have the structure of params, got {grad_tree} and {param_tree}.")
    if not param_leaves:
        raise ValueError("params must hold at least one array, got an empty tree.")
    squared = lambda leaves: sum(jnp.sum(jnp.square(leaf)) for leaf in leaves)  # noqa: E731
    return squared(grad_leaves) / squared(param_leaves)


def conditional_learning_speeds(fusion_speed_sums, branch_speed_sums):
    """``s(others | m_j) = log10(M_psi_j / M_phi_j)``: how fast branch ``j`` learns from the other modalities.

    Args:
      fusion_speed_sums: ``[m]`` sums over the normal steps so far of
        :func:`learning_speed` of the fusion parameters feeding branch ``j``.
      branch_speed_sums: ``[m]`` the same sums for branch ``j``'s own parameters.

    Returns:
      ``[m]`` speeds; for two modalities ``[s(m1|m0), s(m0|m1)]``.

    Raises:
      ValueError: if the inputs are not vectors of one length.

    References:
      Wu et al., ICML 2022, section 4 (conditional learning speed).
    """
    _check_vector("fusion_speed_sums", fusion_speed_sums)
    _check_vector("branch_speed_sums", branch_speed_sums, jnp.shape(fusion_speed_sums)[0])
    return jnp.log10(jnp.asarray(fusion_speed_sums) / jnp.asarray(branch_speed_sums))


def rebalance_choice(speeds, alpha):
    """Whether to re-balance, and which modality: ``(max s - min s > alpha, argmax s)``.

    The branch that learns fastest from the other modalities relative to its
    own is the one whose modality the model under-uses. For two modalities
    ``max - min = |d_speed|`` with ``d_speed = s(m1|m0) - s(m0|m1)``, and the
    target is ``m0`` exactly when ``d_speed > 0``: the paper's rule.

    Args:
      speeds: ``[m]`` conditional learning speeds (:func:`conditional_learning_speeds`).
      alpha: the imbalance tolerance, ``>= 0``.

    Returns:
      ``(rebalance, target)``: a boolean scalar and an int32 index into ``speeds``.

    Raises:
      ValueError: if ``speeds`` is not a vector of at least two entries.

    References:
      Wu et al., ICML 2022, section 5, Algorithm 1.
    """
    _check_vector("speeds", speeds)
    if jnp.shape(speeds)[0] < 2:
        raise ValueError(f"speeds must hold one entry per modality, at least 2, got {jnp.shape(speeds)[0]}.")
    speeds = jnp.asarray(speeds)
    return jnp.max(speeds) - jnp.min(speeds) > alpha, jnp.argmax(speeds).astype(jnp.int32)


class BalanceSchedule(NamedTuple):
    """Algorithm 1's bookkeeping between steps.

    Attributes:
      fusion_speed_sums: ``[m]`` summed fusion learning speeds of the normal steps.
      branch_speed_sums: ``[m]`` summed branch learning speeds of the normal steps.
      remaining: re-balancing steps still to take (0: the next step is normal).
      target: the modality those steps re-balance.
    """

    fusion_speed_sums: jnp.ndarray
    branch_speed_sums: jnp.ndarray
    remaining: jnp.ndarray
    target: jnp.ndarray

    @classmethod
    def start(cls, num_modalities: int) -> "BalanceSchedule":
        """Nothing accumulated, the first step normal."""
        zeros = jnp.zeros((num_modalities,), jnp.float32)
        return cls(zeros, zeros, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def advance_schedule(schedule, fusion_speeds, branch_speeds, *, alpha, window, unlocked):
    """The schedule after one step, from that step's learning speeds.

    A re-balancing step only counts down. A normal step adds its speeds to the
    sums; then, if ``unlocked`` and :func:`rebalance_choice` of the summed
    speeds says so, the next ``window`` steps re-balance its target.

    Args:
      schedule: the :class:`BalanceSchedule` before the step.
      fusion_speeds: ``[m]`` the step's :func:`learning_speed` of each branch's fusion parameters.
      branch_speeds: ``[m]`` the same for each branch's own parameters.
      alpha: the imbalance tolerance.
      window: ``Q``, re-balancing steps per trigger, ``>= 1``.
      unlocked: whether re-balancing may start (False in the warm-up epochs).

    Returns:
      The :class:`BalanceSchedule` for the next step.

    Raises:
      ValueError: if ``window < 1`` or the speeds do not match the schedule's modalities.

    References:
      Wu et al., ICML 2022, section 5, Algorithm 1.
    """
    if isinstance(window, int) and window < 1:
        raise ValueError(f"window must be >= 1, got {window}.")
    m = jnp.shape(schedule.fusion_speed_sums)[0]
    _check_vector("fusion_speeds", fusion_speeds, m)
    _check_vector("branch_speeds", branch_speeds, m)
    normal = schedule.remaining == 0
    fusion_sums = jnp.where(normal, schedule.fusion_speed_sums + fusion_speeds, schedule.fusion_speed_sums)
    branch_sums = jnp.where(normal, schedule.branch_speed_sums + branch_speeds, schedule.branch_speed_sums)
    rebalance, target = rebalance_choice(conditional_learning_speeds(fusion_sums, branch_sums), alpha)
    start = normal & unlocked & rebalance
    remaining = jnp.where(start, window, jnp.maximum(schedule.remaining - 1, 0)).astype(jnp.int32)
    return BalanceSchedule(fusion_sums, branch_sums, remaining, jnp.where(start, target, schedule.target))


class MultimodalTransfer(nnx.Module):
    """MMTM over feature vectors: one squeeze of every modality's features, one excitation gate per modality.

    ``gates(z)_j = sigmoid(W_j relu(W_s concat_k z_k))``; MMTM's squeeze (a
    spatial mean) is the identity on vectors.
    """

    def __init__(self, modalities: Sequence[str], dim: int, ratio: int, *, rngs: nnx.Rngs):
        total = dim * len(modalities)
        self.squeeze = nnx.Linear(total, max(1, 2 * total // ratio), rngs=rngs)
        self.excite = nnx.Dict({m: nnx.Linear(max(1, 2 * total // ratio), dim, rngs=rngs) for m in modalities})

    def __call__(self, features: Mapping[str, jnp.ndarray]) -> dict:
        names = sorted(features)
        excitation = jax.nn.relu(self.squeeze(jnp.concatenate([features[n] for n in names], axis=-1)))
        return {n: jax.nn.sigmoid(self.excite[n](excitation)) for n in names}


class BalancedFusionClassifier(nnx.Module):
    """The paper's two-branch network for ``m`` modalities: encoder -> MMTM gate -> head, per branch.

    Calling it with ``{modality: input}`` returns the mean of the branches'
    logits (the model's prediction) and ``{"branches": logits per modality,
    "gates": the MMTM gates, "features": the encoder outputs}``.

    ``cut`` (re-balancing) maps a modality to ``(flag, gate)``: where the
    scalar ``flag`` is true the branch's gate is the constant ``gate``, so the
    branch sees its own modality only. ``alone_means`` (the derived uni-modal
    networks of the conditional utilisation rate) maps every modality to its
    mean feature: branch ``j``'s gate is then computed with the other
    modalities' features replaced by their means.
    """

    def __init__(self, encoders: Mapping[str, nnx.Module], fusion: MultimodalTransfer, heads: Mapping[str, Head]):
        self.encoders = nnx.Dict(encoders)
        self.fusion = fusion
        self.heads = nnx.Dict(heads)

    def __call__(self, inputs, *, train: bool = False, cut=None, alone_means=None):
        names = sorted(inputs)
        features = {n: self.encoders[n](inputs[n], train=train) for n in names}
        gates = self.fusion(features)
        used = dict(gates)
        if alone_means is not None:
            for n in names:
                others_at_mean = {
                    k: features[k] if k == n else jnp.broadcast_to(alone_means[k], features[k].shape) for k in names
                }
                used[n] = self.fusion(others_at_mean)[n]
        if cut is not None:
            used = {n: jnp.where(cut[n][0], jax.lax.stop_gradient(cut[n][1]), used[n]) for n in names}
        branches = {n: self.heads[n](features[n] * used[n])[0] for n in names}
        joint = jnp.mean(jnp.stack([branches[n] for n in names]), axis=0)
        return joint, {"branches": branches, "gates": gates, "features": features}


def _group_speeds(grads, params, names):
    """Per modality, :func:`learning_speed` of its fusion parameters (``W_s`` and ``W_j``) and of its branch."""
    fusion, branch = [], []
    for n in names:
        fusion.append(
            learning_speed(
                (grads["fusion"]["squeeze"], grads["fusion"]["excite"][n]),
                (params["fusion"]["squeeze"], params["fusion"]["excite"][n]),
            )
        )
        branch.append(
            learning_speed((grads["encoders"][n], grads["heads"][n]), (params["encoders"][n], params["heads"][n]))
        )
    return jnp.stack(fusion), jnp.stack(branch)


def _trainable(params, names, rebalancing, target):
    """A tree of ``params``' structure: whether a re-balancing step for ``target`` may change each leaf."""
    branch = {n: ~rebalancing | (target == i) for i, n in enumerate(names)}
    return {
        "encoders": {n: jax.tree.map(lambda _, n=n: branch[n], params["encoders"][n]) for n in names},
        "heads": {n: jax.tree.map(lambda _, n=n: branch[n], params["heads"][n]) for n in names},
        "fusion": jax.tree.map(lambda _: ~rebalancing, params["fusion"]),
    }


class GreedyMethod(SingleModelMethod):
    """``greedy``: Algorithm 1's normal and re-balancing steps on a :class:`BalancedFusionClassifier`.

    One epoch per phase.

    The carry is ``(params, model_state, opt_state, balance)``; ``balance``
    holds the :class:`BalanceSchedule` (as a dict), the running mean of every
    branch's gate and, per modality, the number of re-balancing steps it has
    had (``rebalanced_steps``). The phase constant says whether re-balancing
    may start.
    """

    per_modality = False

    def __init__(self, config, train_split, num_classes: int, mesh=None):
        super().__init__(config, train_split, mesh)
        self.names = tuple(sorted(self.modalities))  # The model's and the schedule's order.
        self.options = config.greedy
        rngs = nnx.Rngs(config.seed)
        encoders = build_encoders(config, {m: self.inputs[m].shape[1:] for m in self.names}, rngs)
        fusion = MultimodalTransfer(self.names, config.model.dim, self.options.mmtm_ratio, rngs=rngs)
        heads = {m: Head(config.model.dim, num_classes, rngs=rngs) for m in self.names}
        model = BalancedFusionClassifier(encoders, fusion, heads)
        self._finish(model, steps.make_optimizer(config.optimizer, steps_per_epoch=self.steps_per_epoch))

        def evaluate(params, model_state, batch, alone_means):
            (_, aux), _ = steps.apply_model(
                self.graphdef, params, model_state, batch, train=False, alone_means=alone_means
            )
            return {key: jnp.stack([aux[key][n] for n in self.names], axis=1) for key in ("branches", "features")}

        self._evaluate = jax.jit(evaluate)

    def init(self) -> dict:
        balance = {
            "schedule": BalanceSchedule.start(len(self.names))._asdict(),
            "gate_means": {m: jnp.zeros((self.config.model.dim,), jnp.float32) for m in self.names},
            "gate_steps": jnp.zeros((), jnp.int32),
            "rebalanced_steps": jnp.zeros((len(self.names),), jnp.int32),
        }
        return {**super().init(), "balance": balance}

    def _make_step(self):
        graphdef, tx, mesh, names, o = self.graphdef, self.tx, self.mesh, self.names, self.options

        def step(unlocked, carry, batch):
            params, model_state, opt_state, balance = carry
            schedule = BalanceSchedule(**balance["schedule"])
            rebalancing = schedule.remaining > 0
            cut = {n: (rebalancing & (schedule.target == i), balance["gate_means"][n]) for i, n in enumerate(names)}
            xs, y = step_inputs(batch, mesh)

            def loss_fn(p):
                (_, aux), new_state = steps.apply_model(graphdef, p, model_state, xs, train=True, cut=cut)
                ce = optax.softmax_cross_entropy_with_integer_labels
                # The branches' losses summed, as the released code trains.
                loss = sum(ce(aux["branches"][n], y).mean() for n in names)
                return loss, (aux["gates"], new_state)

            (loss, (gates, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            fusion_speeds, branch_speeds = _group_speeds(grads, params, names)
            if o.update == "branch":
                # Only the re-balanced branch learns; zero gradients keep momentum from moving the rest later.
                trainable = _trainable(params, names, rebalancing, schedule.target)
                grads = jax.tree.map(lambda g, keep: jnp.where(keep, g, 0.0), grads, trainable)
            updates, opt_state = tx.update(grads, opt_state, params, value=loss)
            new_params = optax.apply_updates(params, updates)
            if o.update == "branch":
                new_params = jax.tree.map(
                    lambda new, old, keep: jnp.where(keep, new, old), new_params, params, trainable
                )
            schedule_before, schedule = (
                schedule,
                advance_schedule(
                    schedule, fusion_speeds, branch_speeds, alpha=o.alpha, window=o.window, unlocked=unlocked
                ),
            )
            count = balance["gate_steps"].astype(jnp.float32)
            gate_means = {
                n: (balance["gate_means"][n] * count + jnp.mean(jax.lax.stop_gradient(gates[n]), axis=0)) / (count + 1)
                for n in names
            }
            rebalanced = jnp.arange(len(names)) == jnp.where(rebalancing, schedule_before.target, -1)
            balance = {
                "schedule": schedule._asdict(),
                "gate_means": gate_means,
                "gate_steps": balance["gate_steps"] + 1,
                "rebalanced_steps": balance["rebalanced_steps"] + rebalanced.astype(jnp.int32),
            }
            return (new_params, model_state, opt_state, balance), loss

        return step

    def phase_plan(self, state, phase: int, best_variables=None, *, inside: bool = False):
        del best_variables, inside  # One model trained throughout: no stages to restart.
        carry = (state["params"], state["model_state"], state["opt_state"], state["balance"])
        unlocked = jnp.asarray(phase >= self.options.warmup_epochs)
        return loop.PhasePlan(
            self.run_chunk, unlocked, carry, self.draws(phase), self.inputs, self.labels, self.steps_per_epoch
        )

    def state_inside(self, state, phase: int, carry) -> dict:
        del state, phase
        params, model_state, opt_state, balance = carry
        return {"params": params, "model_state": model_state, "opt_state": opt_state, "balance": balance}

    def _branch_pass(self, variables, inputs, key: str, alone_means=None) -> dict:
        """``{modality: [n, ...]}``: every branch's ``branches`` (logits) or ``features`` over a split's columns."""
        columns = {m: inputs[m] for m in self.names}

        def evaluate(batch):
            return self._evaluate(variables["params"], variables["model_state"], batch, alone_means)[key]

        stacked = feed.map_batches(evaluate, columns, self.config.train.eval_batch_size, self.mesh)
        return {n: stacked[:, i] for i, n in enumerate(self.names)}

    def conditional_utilization(self, variables, inputs, labels) -> dict:
        """Section 3's ``u(others | m_j)`` per modality on a split: each branch against its derived uni-modal network.

        The derived network of branch ``j`` replaces the other modalities'
        features, as MMTM reads them, by their mean over the training split.
        """
        labels = np.asarray(labels)
        means = {n: f.mean(axis=0) for n, f in self._branch_pass(variables, self.inputs, "features").items()}
        accuracy = lambda logits: np.mean(np.argmax(logits, axis=-1) == labels)  # noqa: E731
        fused = self._branch_pass(variables, inputs, "branches")
        alone = self._branch_pass(variables, inputs, "branches", alone_means=means)
        rates = conditional_utilization_rates(
            np.array([accuracy(fused[n]) for n in self.names]), np.array([accuracy(alone[n]) for n in self.names])
        )
        return {n: float(rate) for n, rate in zip(self.names, rates)}


registry.register(
    registry.MethodSpec(
        "greedy",
        GreedyMethod,
        "balanced multi-modal learning: MMTM-fused branches, with re-balancing steps for the modality "
        "that the conditional learning speeds show under-used",
        {"greedy": GreedyOptions},
        (registry.ReportRow("Greedy"),),
        "Wu et al., ICML 2022",
    )
)
