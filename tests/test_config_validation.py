"""Every config value is checked (finite, in range, named) before anything is trained or written."""

import pytest

from experiments import configs, run
from mie_jax.train import METHODS, make_config
from mie_jax.train.config import VARIANTS

BAD = [
    ("tau=0", "tau must be a finite number in (0, inf)"),
    ("tau=inf", "tau must be a finite number in (0, inf)"),
    ("tau=-0.4", "tau must be a finite number"),
    ("learning_rate=nan", "learning_rate must be a finite number in (0, inf)"),
    ("learning_rate=-1", "learning_rate must be a finite number in (0, inf)"),
    ("skip_nonfinite_steps=-1", "skip_nonfinite_steps must be >= 0"),
    ("mixup_alpha=-1", "mixup_alpha must be a finite number in [0, inf)"),
    ("phase_schedule=a", "phase_schedule must list whole numbers of epochs"),
    ("phase_schedule=3,0", "phase_schedule must list epochs >= 1"),
    ("seed=-1", "seed must be >= 0"),
    ("rho=nan", "rho must be a finite number"),
    ("momentum=1", "momentum must be a finite number in [0, 1)"),
    ("weight_decay=-1e-4", "weight_decay must be a finite number"),
    ("sam_mix=1.5", "sam_mix must be a finite number in [0, 1]"),
    ("lr_decay=0", "lr_decay must be a finite number in (0, 1]"),
    ("ogm_alpha=inf", "ogm_alpha must be a finite number"),
    ("checkpoint_every_minutes=nan", "checkpoint_every_minutes must be a finite number"),
    ("covariance_statistic=median", "covariance_statistic must be one of"),
    ("sam_normalize=layer", "sam_normalize must be one of"),
    ("resnet_width=0", "resnet_width must be >= 1"),
    ("num_devices=-2", "num_devices must be >= 0"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_a_bad_value_is_refused_naming_the_parameter(override, message):
    with pytest.raises(ValueError) as error:
        make_config(configs.get_config("mfeat"), [override])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "dataset", ["mfeat", "emoji", "cremad", "kinetics_sounds", "twitter2015", "sarcasm", "nvgesture"]
)
def test_every_shipped_config_is_valid_for_every_method_and_variant(dataset):
    for method in METHODS:
        for variant in VARIANTS:
            make_config(configs.get_config(dataset), [], method=method, variant=variant)


def test_edges_of_the_ranges_are_accepted():
    config = make_config(
        configs.get_config("mfeat"),
        ["rho=0", "mixup_alpha=0", "momentum=0", "sam_mix=1", "lr_decay=1", "skip_nonfinite_steps=0", "seed=0"],
    )
    assert config.rho == 0 and config.sam_mix == 1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--set", "tau=0"], "error: tau must be a finite number in (0, inf)"),
        (["--set", "learning_rate=nan"], "error: learning_rate must be a finite number"),
        (["--seed", "-1"], "error: seed must be >= 0 (--seed or --set seed=), got -1."),
        (["--set", "phase_schedule=a"], "error: phase_schedule must list whole numbers of epochs"),
        (["--set", "encoder=fac=mlp,mor=cnn"], "error: encoder must name encoders from"),
    ],
)
def test_the_cli_refuses_before_writing_anything(tmp_path, capsys, argv, message):
    workdir = tmp_path / "run"
    assert run.main(["--workdir", str(workdir), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith(message), err
    assert not workdir.exists()
