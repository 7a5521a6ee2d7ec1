"""Dense and conv layers that can report their inputs: what gradient modification needs of any layer.

MIE's ``T`` for a layer comes from the covariance of that layer's inputs
(Eq. 5). The head returns its layers' inputs itself; for the layers inside an
encoder, :class:`Dense` and :class:`Conv` (drop-in ``nnx.Linear`` and
``nnx.Conv``) record their input while :func:`recording_inputs` is active and
do nothing otherwise. Inside ``jax.jit`` the recorded values are the traced
inputs, so a step that does not use them compiles them away.

Flax's own ``Module.sow`` would store an input as a variable of the module
whenever it is called outside ``nnx.capture`` (deprecated there), changing the
state of every direct call; a context variable keeps the layers stateless.
"""

import contextlib
import contextvars
from typing import Callable, Iterator, Mapping, Tuple

import jax.numpy as jnp
from flax import nnx

_RECORDED: contextvars.ContextVar = contextvars.ContextVar("mie_jax_layer_inputs", default=None)


def _record(layer, x) -> None:
    recorded = _RECORDED.get()
    if recorded is not None:
        recorded.setdefault(id(layer), []).append(x)


class Dense(nnx.Linear):
    """``nnx.Linear`` that reports its input ``[..., in]`` to :func:`recording_inputs`."""

    def __call__(self, x, *args, **kwargs):
        _record(self, x)
        return super().__call__(x, *args, **kwargs)


class Conv(nnx.Conv):
    """``nnx.Conv`` that reports its input ``[B, ..., c_in]`` to :func:`recording_inputs`."""

    def __call__(self, x, *args, **kwargs):
        _record(self, x)
        return super().__call__(x, *args, **kwargs)


def layer_name(path) -> str:
    """A layer's name: its path in the module tree joined by ``/`` (e.g. ``encoder/out``)."""
    return "/".join(str(part) for part in path)


def tapped_layers(model: nnx.Module) -> Mapping[str, tuple]:
    """``{layer name: path}`` of every :class:`Dense` and :class:`Conv` in ``model``."""
    return {layer_name(path): tuple(path) for path, node in nnx.iter_graph(model) if isinstance(node, (Dense, Conv))}


@contextlib.contextmanager
def _recording() -> Iterator[dict]:
    token = _RECORDED.set({})
    try:
        yield _RECORDED.get()
    finally:
        _RECORDED.reset(token)


def recording_inputs(model: nnx.Module, call: Callable[[], object]) -> Tuple[object, Mapping[str, jnp.ndarray]]:
    """Runs ``call()`` (which calls ``model``) and returns its output and the inputs of ``model``'s tapped layers.

    Returns:
      ``(output, {layer name: input})``. A layer called more than once (e.g.
      per frame) gives its inputs concatenated along the first axis; a layer
      not called is absent.
    """
    names = {id(node): layer_name(path) for path, node in nnx.iter_graph(model) if isinstance(node, (Dense, Conv))}
    with _recording() as recorded:
        output = call()
    inputs = {
        names[key]: values[0] if len(values) == 1 else jnp.concatenate(values, axis=0)
        for key, values in recorded.items()
        if key in names
    }
    return output, inputs
