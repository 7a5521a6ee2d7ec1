"""The method registry: a new method is one module plus its registration, and every method is described."""

import dataclasses
import re

import optax
import pytest
from flax import nnx

from experiments import configs
from mie_jax.data.registry import load_dataset
from mie_jax.models import ConcatClassifier, Head
from mie_jax.models.encoders import build_encoders
from mie_jax.train import feed, make_config, options, registry, steps, train
from mie_jax.train.config import COMMON_SECTIONS
from mie_jax.train.methods.alternating import SamOptions
from mie_jax.train.methods.single_model import SingleModelMethod

SMALL = {
    "model": {"dim": 16, "encoder_hidden": 32},
    "train": {"outer_iterations": 2, "phase_epochs": 1, "batch_size": 100},
}


@dataclasses.dataclass(frozen=True)
class ToyOptions:
    scale: float = options.number(1.0, ("(", 0.0))

    def __post_init__(self):
        options.validate("toy.", self)


class ToyMethod(SingleModelMethod):
    """Concat joint training whose loss is multiplied by ``toy.scale``."""

    per_modality = False
    built_with = []  # The toy.scale of every build: proof that the override reached the method.

    def __init__(self, config, train_split, num_classes, mesh=None):
        super().__init__(config, train_split, mesh)
        ToyMethod.built_with.append(config.toy.scale)
        rngs = nnx.Rngs(config.seed)
        encoders = build_encoders(config, {m: self.inputs[m].shape[1:] for m in self.modalities}, rngs)
        model = ConcatClassifier(encoders, Head(config.model.dim * len(self.modalities), num_classes, rngs=rngs))
        self._finish(model, steps.make_optimizer(config.optimizer, steps_per_epoch=self.steps_per_epoch))
        self.predict = steps.make_predict(self.graphdef)

    def _make_step(self):
        graphdef, tx, scale = self.graphdef, self.tx, self.config.toy.scale

        def step(constants, carry, batch):
            params, model_state, opt_state = carry

            def loss_fn(p):
                (logits, _), new_state = steps.apply_model(graphdef, p, model_state, batch.inputs, train=True)
                return scale * optax.softmax_cross_entropy_with_integer_labels(logits, batch.labels).mean(), new_state

            params, opt_state, loss, model_state = steps.optimizer_step(loss_fn, tx, params, opt_state)
            return (params, model_state, opt_state), loss

        return step

    def logits(self, variables, inputs):
        predict = lambda batch: self.predict(variables["params"], variables["model_state"], batch)  # noqa: E731
        columns = {m: inputs[m] for m in self.modalities}
        return {"joint": feed.map_batches(predict, columns, self.config.train.eval_batch_size, self.mesh)}


@pytest.fixture
def toy():
    ToyMethod.built_with.clear()
    spec = registry.register(
        registry.MethodSpec("toy", ToyMethod, "a test's toy", {"toy": ToyOptions}, (registry.ReportRow("toy"),))
    )
    yield spec
    registry.unregister("toy")


def test_a_method_defined_outside_the_package_trains_end_to_end_with_its_own_section(toy):
    assert "toy" in registry.names() and registry.sections()["toy"] is ToyOptions
    config = make_config({**configs.get_config("mfeat"), **SMALL}, ["toy.scale=2"], method="toy")
    assert config.toy.scale == 2.0 and config.reads("toy") and not config.reads("sam")
    results = train(config, load_dataset("mfeat", config.modalities), quiet=True)
    assert ToyMethod.built_with == [2.0]
    assert results["finished"] and results["num_phases"] == 2 and set(results["test"]) == {"joint"}
    assert results["test"]["joint"]["accuracy"] > 0.6


def test_unregistering_removes_the_method_and_its_section(toy):
    registry.unregister("toy")
    try:
        assert "toy" not in registry.names() and "toy" not in registry.sections()
        with pytest.raises(ValueError, match="unknown config section or key 'toy'"):
            make_config({**configs.get_config("mfeat"), "toy": {"scale": 2.0}})
        with pytest.raises(ValueError, match=r"method must be one of \[.*\], got 'toy'"):
            make_config(configs.get_config("mfeat"), method="toy")
    finally:
        registry.register(toy)  # For the fixture's teardown.


def test_a_taken_name_is_refused(toy):
    with pytest.raises(ValueError) as error:
        registry.register(registry.MethodSpec("mie", ToyMethod, "another mie"))
    assert str(error.value) == "method 'mie' is already registered."
    with pytest.raises(ValueError, match="method 'toy' is already registered"):
        registry.register(toy)


def test_a_section_registered_with_another_dataclass_is_refused():
    @dataclasses.dataclass(frozen=True)
    class OtherSam:
        rho: float = 0.1

    with pytest.raises(ValueError) as error:
        registry.register(registry.MethodSpec("toy_sam", ToyMethod, "a toy", {"sam": OtherSam}))
    assert "section 'sam' of method 'toy_sam' is registered with another dataclass" in str(error.value)
    assert "\n" not in str(error.value)
    assert "toy_sam" not in registry.names() and registry.sections()["sam"] is SamOptions


def test_a_section_that_is_not_a_dataclass_is_refused():
    with pytest.raises(ValueError, match="section 'toy' of method 'toy_plain' must be a dataclass"):
        registry.register(registry.MethodSpec("toy_plain", ToyMethod, "a toy", {"toy": dict}))
    assert "toy_plain" not in registry.names()


def test_sharing_a_section_with_the_same_dataclass_is_allowed(toy):
    registry.register(registry.MethodSpec("toy_too", ToyMethod, "another toy", {"toy": ToyOptions}))
    try:
        registry.unregister("toy_too")
        assert registry.sections()["toy"] is ToyOptions  # Still read by toy.
    finally:
        if "toy_too" in registry.names():
            registry.unregister("toy_too")


def test_an_override_of_a_section_the_method_does_not_read_names_it(toy):
    with pytest.raises(ValueError) as error:
        make_config(configs.get_config("mfeat"), ["sam.rho=0.1"], method="toy")
    message = str(error.value)
    assert "--set sam.*: method 'toy' does not read section 'sam'" in message and "toy" in message
    with pytest.raises(ValueError, match=re.escape("--set toy.*: method 'mie' does not read section 'toy'")):
        make_config(configs.get_config("mfeat"), ["toy.scale=2"], method="mie")


@pytest.mark.parametrize("method", registry.names())
def test_every_registered_method_has_a_summary_and_a_report_row(method):
    spec = registry.get(method)
    assert spec.name == method
    assert isinstance(spec.summary, str) and spec.summary.strip() and "\n" not in spec.summary
    assert len(spec.report) >= 1
    for row in spec.report:
        assert isinstance(row, registry.ReportRow) and row.label
        assert set(row.values) <= set(spec.sections) | set(COMMON_SECTIONS), (method, row)
    for name, section in spec.sections.items():
        assert registry.sections()[name] is section
        section()  # Its defaults are valid.
