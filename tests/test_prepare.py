"""``python -m mie_jax.data.prepare`` prepares a dataset, reports it, and fails in one line on bad input."""

import subprocess
import sys
from pathlib import Path

import pytest

from mie_jax.data import builders, prepare
from mie_jax.data.builders import media
from tests import builder_checks
from tests.test_builder_audiovisual import write_cremad

ROOT = Path(__file__).resolve().parents[1]
# The tiny CREMA-D fixture's report: 3 + 2 clips, nothing dropped, and its resampler (16 kHz wavs, 22050 Hz input).
CREMAD_REPORT = ["train: 3 examples", "test: 2 examples", f"setting resampler: {media.DEFAULT_RESAMPLER}"]


def test_prepares_into_data_dir_prepared_and_reports_splits_and_settings(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_cremad(raw)
    size = str(builder_checks.IMAGE_SIZE)
    assert prepare.main(["--dataset", "cremad", "--data-dir", str(raw), "--image-size", size]) == 0
    assert capsys.readouterr().out.splitlines() == CREMAD_REPORT
    # Where training looks (registry's default), at the size asked for: preparing there again finds it done.
    builder = builder_checks.build("cremad", raw, prepare.default_prepared_dir(raw))
    assert builder.is_prepared() and prepare.report(builder) == CREMAD_REPORT
    assert prepare.default_prepared_dir(raw) == raw / "prepared"
    # A second run reads the prepared copy back, notes and settings included.
    assert prepare.main(["--dataset", "cremad", "--data-dir", str(raw), "--image-size", size]) == 0
    assert capsys.readouterr().out.splitlines() == CREMAD_REPORT


def test_prepared_dir_is_where_asked(tmp_path, capsys):
    raw, elsewhere = tmp_path / "raw", tmp_path / "elsewhere"
    write_cremad(raw)
    assert (
        prepare.main(
            [
                "--dataset",
                "cremad",
                "--data-dir",
                str(raw),
                "--prepared-dir",
                str(elsewhere),
                "--image-size",
                str(builder_checks.IMAGE_SIZE),
                "--num-frames",
                "1",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines() == CREMAD_REPORT
    assert builder_checks.build("cremad", raw, elsewhere, num_frames=1).is_prepared()
    assert not (raw / "prepared").exists()


def test_a_malformed_file_is_one_error_line_naming_it_and_leaves_nothing(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_cremad(raw)
    with open(raw / "test.csv", "a") as f:
        f.write("1006_DFA_CAL_XX,CAL\n")  # Line 3: an unknown label.
    assert prepare.main(["--dataset", "cremad", "--data-dir", str(raw), "--image-size", "16"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert f"{raw / 'test.csv'}:3" in line and "unknown label" in line
    assert captured.err.endswith(line + "\n") and "Traceback" not in captured.err
    builder_checks.assert_nothing_prepared(raw / "prepared")


@pytest.mark.parametrize(
    "argv,problem",
    [
        (["--dataset", "crema", "--data-dir", "x"], "invalid choice: 'crema'"),
        (["--dataset", "cremad"], "the following arguments are required: --data-dir"),
        (["--dataset", "cremad", "--data-dir", "x", "--image-size", "-1"], "must be >= 0, got -1"),
    ],
)
def test_bad_arguments_exit_2_with_usage(argv, problem, capsys):
    with pytest.raises(SystemExit) as info:
        prepare.main(argv)
    assert info.value.code == 2 and problem in capsys.readouterr().err


def test_the_module_runs_and_names_a_missing_data_dir(tmp_path):
    nowhere = tmp_path / "nowhere"
    result = subprocess.run(
        [sys.executable, "-m", "mie_jax.data.prepare", "--dataset", "cremad", "--data-dir", str(nowhere)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"error: {nowhere}: directory not found; expected layout: {builders.builder_class('cremad').LAYOUT}"
    )
    assert "Traceback" not in result.stderr and not (nowhere / "prepared").exists()


def test_help_lists_the_paper_datasets(capsys):
    with pytest.raises(SystemExit) as info:
        prepare.main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and all(name in out for name in builders.PAPER_DATASETS)
