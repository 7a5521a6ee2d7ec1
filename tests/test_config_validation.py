"""Every config value is checked (finite, in range, named) before anything is trained or written."""

import pytest

from experiments import configs, run
from mie_jax.train import make_config, registry
from mie_jax.train.config import VARIANTS

BAD = [
    ("mie.tau=0", "mie.tau must be a finite number in (0, inf)"),
    ("mie.tau=inf", "mie.tau must be a finite number in (0, inf)"),
    ("mie.tau=-0.4", "mie.tau must be a finite number"),
    ("optimizer.learning_rate=nan", "optimizer.learning_rate must be a finite number in (0, inf)"),
    ("optimizer.learning_rate=-1", "optimizer.learning_rate must be a finite number in (0, inf)"),
    ("optimizer.skip_nonfinite_steps=-1", "optimizer.skip_nonfinite_steps must be >= 0"),
    ("alternating.mixup_alpha=-1", "alternating.mixup_alpha must be a finite number in [0, inf)"),
    ("train.phase_schedule=a", "train.phase_schedule must list whole numbers of epochs"),
    ("train.phase_schedule=3,0", "train.phase_schedule must list epochs >= 1"),
    ("seed=-1", "seed must be >= 0"),
    ("sam.rho=nan", "sam.rho must be a finite number"),
    ("optimizer.momentum=1", "optimizer.momentum must be a finite number in [0, 1)"),
    ("optimizer.weight_decay=-1e-4", "optimizer.weight_decay must be a finite number"),
    ("sam.mix=1.5", "sam.mix must be a finite number in [0, 1]"),
    ("optimizer.lr_decay=0", "optimizer.lr_decay must be a finite number in (0, 1]"),
    ("ogm_ge.alpha=inf", "ogm_ge.alpha must be a finite number", "ogm_ge"),
    ("train.checkpoint_every_minutes=nan", "train.checkpoint_every_minutes must be a finite number"),
    ("mie.covariance_statistic=median", "mie.covariance_statistic must be one of"),
    ("sam.normalize=layer", "sam.normalize must be one of"),
    ("model.resnet_width=0", "model.resnet_width must be >= 1"),
    ("train.num_devices=-2", "train.num_devices must be >= 0"),
]


@pytest.mark.parametrize("override,message,method", [case if len(case) == 3 else (*case, "mie") for case in BAD])
def test_a_bad_value_is_refused_naming_the_parameter(override, message, method):
    with pytest.raises(ValueError) as error:
        make_config(configs.get_config("mfeat"), [override], method=method)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "dataset", ["mfeat", "emoji", "cremad", "kinetics_sounds", "twitter2015", "sarcasm", "nvgesture"]
)
def test_every_shipped_config_is_valid_for_every_method_and_variant(dataset):
    for method in registry.names():
        for variant in VARIANTS:
            make_config(configs.get_config(dataset), [], method=method, variant=variant)


def test_edges_of_the_ranges_are_accepted():
    config = make_config(
        configs.get_config("mfeat"),
        [
            "sam.rho=0",
            "alternating.mixup_alpha=0",
            "optimizer.momentum=0",
            "sam.mix=1",
            "optimizer.lr_decay=1",
            "optimizer.skip_nonfinite_steps=0",
            "seed=0",
        ],
    )
    assert config.sam.rho == 0 and config.sam.mix == 1


@pytest.mark.parametrize(
    "method,override,section",
    [
        ("unimodal", "sam.rho=0.1", "sam"),
        ("mie_no_sam", "sam.mix=0.3", "sam"),
        ("mie_no_gm", "mie.tau=0.5", "mie"),
        ("joint", "ogm_ge.alpha=0.1", "ogm_ge"),
        ("mie", "joint.fusion=average", "joint"),
        ("mla", "alternating.mixup_alpha=1", "alternating"),
    ],
)
def test_an_override_of_a_section_the_method_does_not_read_is_refused(method, override, section):
    with pytest.raises(ValueError) as error:
        make_config(configs.get_config("mfeat"), [override], method=method)
    message = str(error.value)
    assert f"--set {section}.*: method {method!r} does not read section {section!r}" in message, message
    assert "\n" not in message


def test_the_reference_preset_does_not_count_as_an_override_of_an_unread_section():
    # REFERENCE_PRESET sets sam and alternating values; a method reading neither still builds.
    config = make_config(configs.get_config("mfeat"), [], method="joint", variant="reference")
    assert not config.reads("sam") and config.sam.mix == 0.3


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--set", "mie.tau=0"], "error: mie.tau must be a finite number in (0, inf)"),
        (["--set", "optimizer.learning_rate=nan"], "error: optimizer.learning_rate must be a finite number"),
        (["--seed", "-1"], "error: seed must be >= 0 (--seed or --set seed=), got -1."),
        (["--set", "train.phase_schedule=a"], "error: train.phase_schedule must list whole numbers of epochs"),
        (["--set", "model.encoder=fac=mlp,mor=cnn"], "error: model.encoder must name encoders from"),
        (
            ["--method", "unimodal", "--set", "sam.rho=0.1"],
            "error: --set sam.*: method 'unimodal' does not read section 'sam'",
        ),
    ],
)
def test_the_cli_refuses_before_writing_anything(tmp_path, capsys, argv, message):
    workdir = tmp_path / "run"
    assert run.main(["--workdir", str(workdir), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith(message), err
    assert not workdir.exists()
