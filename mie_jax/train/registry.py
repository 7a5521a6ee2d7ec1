"""The method contract and the registry of methods.

A method is a module under :mod:`mie_jax.train.methods` that builds a
:class:`Method` and registers it with :func:`register` at import;
``mie_jax/train/methods/__init__.py`` imports every such module. The trainer,
``experiments.run``, ``experiments.report``, the README's method table and the
tests all read this registry, so adding a method is one module plus its line in
``methods/__init__.py`` (docs/ARCHITECTURE.md has the recipe).

A method reads the common config sections (``data``, ``model``,
``optimizer``, ``train``: :mod:`mie_jax.train.config`) and the sections its
:class:`MethodSpec` names, e.g. ``sam`` and ``mie`` for MIE or ``ogm_ge`` for
OGM-GE; each is a frozen dataclass of options with defaults, reached as
``config.<section>`` and set with ``--set <section>.<key>=value``.
"""

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import numpy as np


class Method(Protocol):
    """What the trainer needs of a method (see :mod:`mie_jax.train.trainer`).

    A run is ``num_phases`` phases. Phase ``p`` is described by
    :meth:`phase_plan`: a :class:`~mie_jax.train.loop.PhasePlan` whose step,
    ``step(constants, carry, batch) -> (carry, loss)``, the phase loop scans
    over jitted chunks of batches. Between phases the trainer calls
    :meth:`finish_phase` (host work such as MIE's covariance pass), evaluates
    :meth:`logits` of :meth:`variables` on the selection split and keeps the
    best. The whole ``state`` is what a checkpoint holds.

    Attributes:
      modalities: the modalities the method trains, in order.
      per_modality: True when :meth:`logits` gives one prediction per modality
        (the trainer adds their fusions, ``average`` and ``weighted``); False
        for one fused prediction named ``joint``.
      num_phases: phases of the run.
    """

    modalities: Sequence[str]
    per_modality: bool
    num_phases: int

    def phase_name(self, phase: int) -> str:
        """A short name of the phase for progress lines (e.g. the modality it trains)."""

    def init(self) -> Any:
        """The state before the first phase: a pytree of arrays."""

    def variables(self, state) -> Any:
        """What prediction needs of ``state`` (parameters and model state)."""

    def phase_plan(self, state, phase: int, best_variables=None, *, inside: bool = False):
        """The phase's :class:`~mie_jax.train.loop.PhasePlan` from ``state``.

        ``best_variables`` are the best so far (``None`` before any); ``inside``
        says that ``state`` is a checkpoint written inside this phase by
        :meth:`state_inside`, to be continued rather than restarted.
        """

    def state_inside(self, state, phase: int, carry) -> Any:
        """``state`` with a phase's carry folded in: what a checkpoint inside the phase holds."""

    def finish_phase(self, state, phase: int, carry) -> Any:
        """The state after the phase's last step (host-side work between phases goes here)."""

    def logits(self, variables, inputs: Mapping[str, Any]) -> Mapping[str, np.ndarray]:
        """Prediction name -> ``[n, classes]`` logits over a split's columns, read in batches."""


class ReportRow(NamedTuple):
    """One row of ``experiments.report``'s table: a label, section values on top of the dataset's, a fusion."""

    label: str
    values: Mapping[str, Mapping[str, Any]] = {}
    fusion: str = "average"


class MethodSpec(NamedTuple):
    """A registered method.

    Attributes:
      name: the ``--method`` name.
      build: ``build(config, train_split, num_classes, mesh) -> Method``.
      summary: one sentence on what it trains (README's table, ``--help``).
      sections: the config sections it reads beyond the common ones, name ->
        frozen dataclass of their options with defaults. Two methods reading
        a section (e.g. ``sam``) give the same dataclass.
      report: its rows in ``experiments.report``'s table.
      reference: its paper or code, for the README table.
    """

    name: str
    build: Callable[..., Method]
    summary: str
    sections: Mapping[str, type] = {}
    report: Sequence[ReportRow] = ()
    reference: str = ""


_METHODS: dict = {}
_SECTIONS: dict = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Adds ``spec`` to the registry (a method module calls it at import) and returns it.

    Raises:
      ValueError: the name is taken, a section is not a dataclass, or a section
        name is already registered with another dataclass.
    """
    if spec.name in _METHODS:
        raise ValueError(f"method {spec.name!r} is already registered.")
    for name, options in spec.sections.items():
        if not dataclasses.is_dataclass(options):
            raise ValueError(f"section {name!r} of method {spec.name!r} must be a dataclass, got {options!r}.")
        if _SECTIONS.get(name, options) is not options:
            raise ValueError(f"section {name!r} of method {spec.name!r} is registered with another dataclass.")
    for name, options in spec.sections.items():
        _SECTIONS[name] = options
    _METHODS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Removes method ``name`` and the sections no other method reads (for tests that register toys)."""
    spec = _METHODS.pop(name)
    for section in spec.sections:
        if not any(section in other.sections for other in _METHODS.values()):
            del _SECTIONS[section]


def get(name: str) -> MethodSpec:
    """The method registered as ``name``.

    Raises:
      ValueError: no such method (the message lists the registered ones).
    """
    if name not in _METHODS:
        raise ValueError(f"method must be one of {names()}, got {name!r}.")
    return _METHODS[name]


def names() -> list:
    """The registered methods' names, in registration order."""
    return list(_METHODS)


def specs() -> list:
    """The registered :class:`MethodSpec`\\ s, in registration order."""
    return list(_METHODS.values())


def sections() -> Mapping[str, type]:
    """Every method section's name -> its options dataclass."""
    return dict(_SECTIONS)
