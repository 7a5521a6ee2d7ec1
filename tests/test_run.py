"""``python -m experiments.run``: outputs, flags, errors, resume."""

import json
import os
import subprocess
import sys

import pytest

from experiments import configs, run
from mie_jax.data.registry import load_dataset
from mie_jax.train import make_config, train

FAST = [
    "--set",
    "train.outer_iterations=1",
    "--set",
    "train.phase_epochs=1",
    "--set",
    "model.dim=16",
    "--set",
    "model.encoder_hidden=32",
    "--set",
    "train.batch_size=100",
]


def test_module_runs_and_writes_table_logs_and_plot(tmp_path):
    workdir = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "experiments.run", "--workdir", str(workdir), *FAST],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert "| average |" in completed.stdout and "| fac |" in completed.stdout
    assert "phase   2/2 | mor" in completed.stderr
    for name in ("results.md", "results.json", "phases.jsonl", "phases.csv", "steps.csv", "phase_accuracy.png"):
        assert (workdir / name).stat().st_size > 0, name
    results = json.loads((workdir / "results.json").read_text())
    assert results["selected_on"] == "validation"
    assert 0.6 < results["test"]["average"]["accuracy"] <= 1.0
    assert len((workdir / "phases.jsonl").read_text().splitlines()) == 2


def test_unknown_config_key_fails_listing_the_valid_ones(capsys):
    assert run.main(["--set", "optimizer.learning_rat=0.1"]) == 2
    error = capsys.readouterr().err
    assert "unknown config key optimizer.learning_rat in --set; valid keys:" in error
    assert "optimizer.learning_rate" in error
    # A key without its section, or an unknown section, lists the sections.
    assert run.main(["--set", "learning_rate=0.1"]) == 2
    error = capsys.readouterr().err
    assert "unknown config key 'learning_rate': --set takes section.key=value (sections: data, model," in error
    assert run.main(["--set", "optimiser.learning_rate=0.1"]) == 2
    error = capsys.readouterr().err
    assert "unknown config section or key 'optimiser' in --set" in error and "sections: data, model," in error


def test_badly_typed_value_is_named(capsys):
    assert run.main(["--set", "train.batch_size=many"]) == 2
    assert "--set train.batch_size=... expects a int, got 'many'" in capsys.readouterr().err


def test_existing_workdir_needs_resume_and_is_left_alone(tmp_path, capsys):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "marker").write_text("keep me")
    assert run.main(["--workdir", str(tmp_path), *FAST]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (checkpoints / "marker").read_text() == "keep me"


def test_resume_finishes_a_killed_run_with_the_same_logs(tmp_path, capsys):
    overrides = [FAST[i + 1] for i in range(0, len(FAST), 2)]
    config = make_config(configs.get_config("mfeat"), overrides, method="mie", variant="paper")
    dataset = load_dataset("mfeat", config.modalities)
    uninterrupted = train(config, dataset)
    train(config, dataset, workdir=str(tmp_path), stop_after_phase=1)  # "killed" after phase 1
    (tmp_path / "phases.jsonl").write_text('{"phase": 0, "trunc')  # and its log damaged
    assert run.main(["--workdir", str(tmp_path), "--resume", *FAST]) == 0
    capsys.readouterr()
    lines = [json.loads(line) for line in (tmp_path / "phases.jsonl").read_text().splitlines()]
    # Rebuilt from the checkpoint's history, then appended: the uninterrupted run's log.
    assert lines == json.loads(json.dumps(uninterrupted["history"]))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test"] == uninterrupted["test"]
    assert json.loads((tmp_path / "run.json").read_text())["fusion"] == "average"  # Marked once restored.


def test_reference_variant_applies_the_released_code_defaults():
    config = make_config(configs.get_config("mfeat"), [], variant="reference")
    assert (config.sam.normalize, config.sam.mix, config.alternating.mixup_alpha) == ("per_tensor", 0.3, 1.0)
    assert config.sam.params == "head"
    assert config.alternating.reload_best_per_phase and config.alternating.fresh_optimizer_per_phase
    overridden = make_config(configs.get_config("mfeat"), ["alternating.mixup_alpha=0"], variant="reference")
    assert overridden.alternating.mixup_alpha == 0.0


def test_unknown_dataset_is_refused():
    with pytest.raises(SystemExit):
        run.parse_args(["--dataset", "imagenet"])


def test_resume_into_another_config_fails_with_one_line_and_keeps_the_checkpoint(tmp_path, capsys):
    overrides = [FAST[i + 1] for i in range(0, len(FAST), 2)]
    config = make_config(configs.get_config("mfeat"), overrides, method="mie", variant="paper")
    train(config, load_dataset("mfeat", config.modalities), workdir=str(tmp_path), stop_after_phase=1)
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    assert run.main(["--workdir", str(tmp_path), "--resume", *FAST, "--set", "mie.tau=0.9"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: checkpoint in") and "mie.tau: 0.4 -> 0.9" in error
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before
    assert not (tmp_path / "run.json").exists()  # Not marked with the refused config.


def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path, capsys):
    from tests.test_checkpoint_damage import four_bytes_overwritten

    overrides = [FAST[i + 1] for i in range(0, len(FAST), 2)]
    config = make_config(configs.get_config("mfeat"), overrides, method="mie", variant="paper")
    dataset = load_dataset("mfeat", config.modalities)
    uninterrupted = train(config, dataset)
    train(config, dataset, workdir=str(tmp_path))
    steps = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
    newest = tmp_path / "checkpoints" / str(steps[-1])
    four_bytes_overwritten(str(newest))  # Restored silently before checksums.
    assert run.main(["--workdir", str(tmp_path), "--resume", *FAST]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {newest} is damaged" in err and "Traceback" not in err
    assert f"resuming from the newest intact checkpoint {tmp_path / 'checkpoints' / str(steps[-2])}" in err
    assert (tmp_path / "checkpoints-damaged" / str(steps[-1])).is_dir()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test"] == uninterrupted["test"]
    lines = [json.loads(line) for line in (tmp_path / "phases.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(uninterrupted["history"]))
