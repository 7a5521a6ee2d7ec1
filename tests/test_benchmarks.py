"""The benchmarks' mains run against the library as it is (tiny settings), so that they cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from benchmarks import memory, step_time
from mie_jax.data.registry import check_dataset

ROOT = Path(__file__).resolve().parent.parent


def read_report(out: Path, name: str) -> dict:
    (path,) = out.glob(f"{name}_*.json")
    assert path.with_suffix(".md").is_file()
    return json.loads(path.read_text())


def test_step_time_main_times_the_methods_chunks_and_the_streamed_loop(tmp_path, capsys):
    assert step_time.main(["--variants", "plain,mie", "--repeats", "1", "--no-eigh", "--out", str(tmp_path)]) == 0
    report = read_report(tmp_path, "step_time")
    rows = {row["variant"]: row for row in report["steps"]}
    assert set(rows) == {"plain", "mie"}
    assert rows["mie"]["baseline"] == "plain" and rows["plain"]["per_call_ratio"] == 1.0
    assert all(row["per_call_ms"] > 0 and row["scanned_ms"] > 0 for row in rows.values())
    # MIE's step does SAM's second gradient and the T products: about twice plain SGD's arithmetic.
    assert 1.5 < rows["mie"]["flop_ratio"] < 3.0
    streaming = {row["variant"]: row for row in report["streaming"]}
    assert set(streaming) == {"plain", "mie"}
    for row in streaming.values():
        # The streamed loop and the resident scan run the same steps on the same batches.
        assert row["max_abs_loss_diff"] < 1e-5
        assert row["streamed_ms"] > 0 and row["resident_ms"] > 0 and row["chunks"] >= 1
    assert report["covariance"]["ms"]["covariance_pass"] > 0
    assert "Streamed loop vs device-resident data" in capsys.readouterr().out


def test_step_time_cyclic_draws_wrap_around_the_phase():
    draws = step_time.feed.StepDraws(np.arange(6).reshape(3, 2), np.ones(3), np.zeros((3, 2), int), {})
    longer = step_time.cyclic_draws(draws, 5)
    assert longer.num_steps == 5 and longer.order[3].tolist() == [0, 1] and longer.keys is None


def test_memory_synthetic_dataset_has_the_published_sizes_and_no_data():
    dataset = memory.synthetic_dataset("cremad")
    check_dataset(dataset)
    sizes = {split: len(s.labels) for split, s in dataset.splits.items()}
    assert sizes == {"train": 6028, "validation": 670, "test": 744}
    audio = dataset.splits["train"].inputs["audio"]
    assert audio.shape == (6028, 257, 188, 1) and audio.dtype == np.float32
    assert audio[np.array([[0, 5]])].shape == (1, 2, 257, 188, 1)
    assert memory.split_sizes("sarcasm", 10)["train"] == 198160


TINY = [
    "model.resnet_width=4",
    "model.dim=16",
    "train.batch_size=8",
    "train.eval_batch_size=16",
    "mie.covariance_batch_size=4",
]


def test_memory_main_compiles_every_function_at_two_scales(tmp_path, capsys):
    argv = ["--datasets", "cremad", "--scales", "1,2", "--no-host", "--set", *TINY, "--out", str(tmp_path)]
    assert memory.main(argv) == 0
    report = read_report(tmp_path, "memory")
    assert report["complete"] and report["host"] is None
    peaks = report["peak_bytes"]["cremad"]
    assert set(peaks) == {f"{m}/{f}" for m in ("audio", "visual") for f in memory.FUNCTIONS}
    assert all(value > 0 for value in peaks.values())
    (record,) = report["datasets"]
    assert record["same_at_every_scale"] and record["fits_24gb"]
    assert record["train_rows"] == {"1": 6028, "2": 12056}
    train = record["modalities"]["audio"]["train"]
    plan = train["by_scale"]["1"]
    assert plan["peak_bytes"] == plan["argument"] + plan["output"] + plan["temp"] - plan["alias"]
    # The chunk's batches (K steps of 8 spectrograms, and their labels and draws) are among its arguments.
    assert plan["argument"] >= train["chunk_input_bytes"] >= train["chunk_steps"] * 8 * 257 * 188 * 4
    assert "| cremad | audio | train |" in capsys.readouterr().out


def test_memory_main_measures_host_memory_at_two_sizes(tmp_path):
    # 60 clips: 10 of each class, the fewest that leave the 10% validation hold-out an example of each.
    assert memory.main(["--no-device", "--host-n", "60", "--out", str(tmp_path)]) == 0
    host = read_report(tmp_path, "memory")["host"]
    assert [row["published_train"] for row in host["rows"]] == [60, 60 * memory.HOST_SCALE]
    assert all(row["train_peak_rss"] >= row["prepare_peak_rss"] > 0 for row in host["rows"])
    assert host["decoded_train_growth_bytes"] > 0


@pytest.mark.parametrize(
    "module, argv",
    [
        ("benchmarks.scaling", ["--quick"]),
        ("benchmarks.pipeline_throughput", []),
    ],
)
def test_other_benchmarks_run(module, argv, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", module, *argv, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.glob("*.json"))


def test_torch_step_main_runs_or_says_torch_is_missing(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.torch_step", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    try:
        import torch  # noqa: F401
    except ImportError:
        assert result.returncode != 0 and "torch" in result.stderr and "Traceback" not in result.stderr
        return
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_encoder_model_cases_build_and_step_on_a_tiny_resnet(monkeypatch):
    """step_time --models: plain, sam, gm, mie, and gm/mie with T on every tapped layer (mie.layers=all)."""
    from benchmarks import step_time
    from experiments import configs
    from mie_jax.train import make_config

    monkeypatch.setitem(step_time.ENCODER_MODELS, "resnet18_audio", ("tiny", "resnet18", (8, 8, 1)))
    config = make_config(configs.merge(configs.get_config("mfeat"), {"model": {"dim": 4, "resnet_width": 1}}))
    # Two of the six variants (plain, sam, gm, mie, gm_all, mie_all): compiling a ResNet step is the slow part.
    plain, gm_all = step_time.encoder_model_cases("resnet18_audio", config, batch_size=2, variants=("plain", "gm_all"))
    assert (plain.name, gm_all.name, gm_all.baseline) == ("resnet18_audio/plain", "resnet18_audio/gm_all", plain.name)
    # 17 convs (the stem, 16 in blocks), 3 projection shortcuts, the projection and the head's 3 layers.
    assert "24 tapped layers" in gm_all.description
    for case in (plain, gm_all):
        params = case.per_call(case.init)[0]
        assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(params))
    assert gm_all.mflops > plain.mflops  # T on every layer costs FLOPs.
