"""Pieces every method builds on: the optimizer chain, one optimizer step, functional model calls, prediction."""

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import mie_jax
from mie_jax.models import taps
from mie_jax.models.head import HEAD_LAYERS


def make_optimizer(
    optimizer,
    *,
    steps_per_epoch: int,
    sam=None,
    projection: Optional[optax.GradientTransformation] = None,
) -> optax.GradientTransformationExtraArgs:
    """SAM (optional) -> gradient projection -> weight decay -> SGD or Adam -> plateau scaling.

    Weight decay comes after the projection, so ``T`` acts on the loss
    gradient only, as in the released code. ``steps_per_epoch`` converts the
    learning-rate schedule's epochs into steps; the plateau schedule reads the
    loss from ``update(..., value=loss)``, which :func:`optimizer_step`
    passes. With ``skip_nonfinite_steps`` the whole chain is skipped for a step
    whose gradient is not finite.

    Args:
      optimizer: the config's ``optimizer`` section
        (:class:`mie_jax.train.config.OptimizerConfig`).
      steps_per_epoch: optimizer updates per epoch.
      sam: the ``sam`` section (``rho``, ``normalize``, ``mix``, ``params``,
        ``per_device``), or None for no SAM. With ``per_device`` SAM expects
        its group axis ``SAM_GROUP_AXIS``.
      projection: the gradient projection (default
        :func:`mie_jax.flat_projection`, the identity without ``transforms=``).
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
    learning_rate = optimizer.learning_rate
    if optimizer.lr_schedule == "step":
        learning_rate = optax.exponential_decay(
            optimizer.learning_rate, optimizer.lr_step_epochs * steps_per_epoch, optimizer.lr_decay, staircase=True
        )
    parts = []
    if sam is not None:
        axis_name = SAM_GROUP_AXIS if sam.per_device else None
        mask = head_params_mask if sam.params == "head" else None
        parts.append(mie_jax.sam(sam.rho, normalize=sam.normalize, mix=sam.mix, axis_name=axis_name, mask=mask))
    parts.append(projection if projection is not None else mie_jax.flat_projection())
    if optimizer.weight_decay:
        parts.append(optax.add_decayed_weights(optimizer.weight_decay))
    if optimizer.name == "sgd":
        parts.append(optax.sgd(learning_rate, momentum=optimizer.momentum or None))
    else:
        parts.append(optax.adam(learning_rate))
    if optimizer.lr_schedule == "plateau":
        parts.append(
            optax.contrib.reduce_on_plateau(
                factor=optimizer.lr_decay, patience=optimizer.lr_patience, accumulation_size=steps_per_epoch
            )
        )
    if optimizer.skip_nonfinite_steps:
        return optax.apply_if_finite(optax.chain(*parts), optimizer.skip_nonfinite_steps)
    return optax.chain(*parts)


def head_params_mask(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """True at every parameter of a classifier's ``head``, False elsewhere (SAM's ``mask``)."""
    return {name: jax.tree.map(lambda _: name == "head", tree) for name, tree in params.items()}


def mixup_cross_entropy(logits, labels, partner_labels, lam):
    """``lam * CE(y) + (1 - lam) * CE(y_partner)``; ``lam = 1`` is plain cross-entropy."""
    ce = optax.softmax_cross_entropy_with_integer_labels
    return jnp.mean(lam * ce(logits, labels) + (1.0 - lam) * ce(logits, partner_labels))


def split_model(model: nnx.Module):
    """``(graphdef, params, model_state)``, the last two plain nested dicts of arrays.

    ``model_state`` holds every variable that is not a parameter (BatchNorm
    statistics); it is empty for models without any.
    """
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(model_state)


def apply_model(graphdef, params, model_state, *args, train: bool, record: bool = False, **kwargs):
    """Runs the module functionally: ``(outputs, updated model_state)``.

    With ``train=True`` BatchNorm normalises by the batch and updates its
    running statistics; with ``train=False`` it uses them. With ``record`` the
    result is ``(outputs, model_state, layer_inputs)``, the inputs of every
    tapped layer by name (:func:`mie_jax.models.taps.recording_inputs`).
    """
    model = nnx.merge(graphdef, params, model_state)
    if record:
        outputs, layer_inputs = taps.recording_inputs(model, lambda: model(*args, train=train, **kwargs))
    else:
        outputs = model(*args, train=train, **kwargs)
    new_state = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param)))
    return (outputs, new_state, layer_inputs) if record else (outputs, new_state)


def kernel_tree(params: Any, leaves: Mapping[str, Any]) -> Any:
    """A tree of ``params``' structure: ``leaves[layer]`` at each named layer's kernel, None elsewhere.

    ``layer`` is a layer's path joined by ``/`` (``head/fc1``, ``encoder/out``:
    :func:`mie_jax.models.taps.layer_name`). It is the shape of the extra
    argument ``transforms=`` (T matrices) of :func:`mie_jax.flat_projection`.
    """
    tree = jax.tree.map(lambda _: None, params)
    for layer, leaf in leaves.items():
        layer_params(tree, layer)["kernel"] = leaf
    return tree


def layer_params(params: Any, layer: str) -> Any:
    """The parameters of the layer named ``layer`` (``head/fc1``; list indices as digits: ``blocks/0/conv1``).

    Raises:
      KeyError: no such layer.
    """
    node = params
    for part in layer.split("/"):
        node = node[int(part) if part not in node and part.isdigit() else part]
    return node


def head_kernel_tree(params: Any, leaves: Mapping[str, Any]) -> Any:
    """:func:`kernel_tree` over the head's layers, ``leaves`` keyed ``fc1``, ``fc2``, ``fc3``.

    It is the shape of the extra argument ``features=`` (layer inputs) of
    :func:`mie_jax.orthogonal_projection` (MLA).
    """
    return kernel_tree(params, {f"head/{layer}": leaves[layer] for layer in HEAD_LAYERS})


def optimizer_step(
    loss_fn, tx, params, opt_state, *, modify_grads=None, extra_args_from_aux=None, axis_name=None, **extra_args
):
    """One update of ``params`` by ``tx`` from ``loss_fn(params) -> (loss, aux)``.

    ``tx`` receives ``grad_fn`` (for :func:`mie_jax.sam`), ``value`` (the
    loss, for ``optax.contrib.reduce_on_plateau``), ``extra_args``
    (e.g. ``transforms=`` for :func:`mie_jax.flat_projection`) and
    ``extra_args_from_aux(aux)`` (e.g. MLA's ``features=`` from this forward
    pass); ``modify_grads(grads, aux)`` may rewrite the gradient first (OGM-GE).

    Inside ``jax.vmap(..., axis_name=axis_name)`` over parts of a batch,
    ``loss`` is the mean over the parts (``tx`` must average the gradients over
    the axis, as ``mie_jax.sam(axis_name=...)`` does).

    Returns:
      ``(params, opt_state, loss, aux)`` with ``loss`` and ``aux`` at the old params.
    """
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    if axis_name is not None:
        loss = jax.lax.pmean(loss, axis_name)
    if modify_grads is not None:
        grads = modify_grads(grads, aux)
    if extra_args_from_aux is not None:
        extra_args = {**extra_args, **extra_args_from_aux(aux)}

    def grad_fn(perturbed, i):
        del i  # One batch per step.
        return jax.grad(lambda p: loss_fn(p)[0])(perturbed)

    updates, opt_state = tx.update(grads, opt_state, params, grad_fn=grad_fn, value=loss, **extra_args)
    return optax.apply_updates(params, updates), opt_state, loss, aux


SAM_GROUP_AXIS = "sam_group"


def make_predict(graphdef, **call_kwargs) -> Callable:
    """``fn(params, model_state, inputs) -> logits`` (evaluation mode) for a module returning ``(logits, aux)``.

    ``call_kwargs`` are static arguments of the module's call (e.g. ``modality=``).
    """

    @jax.jit
    def predict(params, model_state, inputs):
        return apply_model(graphdef, params, model_state, inputs, train=False, **call_kwargs)[0][0]

    return predict
