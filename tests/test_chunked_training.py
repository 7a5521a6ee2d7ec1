"""Phases run in chunks over host columns: results depend on neither the chunk, the evaluation batch nor a stop."""

import io

import jax
import numpy as np
import pytest

from mie_jax.data import columns
from mie_jax.data.registry import Split
from mie_jax.train import checkpoint, feed, loop, progress, registry, train
from mie_jax.train.trainer import build_method, evaluate
from tests.test_trainer import dataset, small_config

# mfeat's training split holds 1200 rows: 12 steps of 100 per epoch.
METHODS = ["mie", "ogm_ge", "mla"]


def assert_same_run(a, b):
    for record_a, record_b in zip(a["history"], b["history"], strict=True):
        np.testing.assert_allclose(record_a["step_losses"], record_b["step_losses"], rtol=1e-6)
    assert a["selected_phase"] == b["selected_phase"]
    for name in a["test"]:
        assert a["test"][name] == pytest.approx(b["test"][name], rel=1e-6), name


@pytest.mark.parametrize("method", METHODS)
def test_results_do_not_depend_on_the_chunk_size(method):
    # Mixup for the methods that read it (the alternating ones): its draws must not depend on the chunk either.
    mixup = ["alternating.mixup_alpha=0.5"] if "alternating" in registry.get(method).sections else []
    config = small_config(method, "train.outer_iterations=1", "train.phase_epochs=2", *mixup)
    whole_epochs = train(config, dataset())
    chunked = train(config.replace({"train.chunk_steps": 5}), dataset())
    assert_same_run(chunked, whole_epochs)


def test_batched_evaluation_equals_one_batch_of_everything():
    config = small_config("mie")
    method = build_method(config, dataset())
    variables = method.variables(method.init())
    split = dataset().splits["test"]
    one_call = evaluate(
        build_method(config.replace({"train.eval_batch_size": len(split.labels)}), dataset()), variables, split
    )
    batched = evaluate(build_method(config.replace({"train.eval_batch_size": 7}), dataset()), variables, split)
    for name in one_call:
        assert batched[name] == pytest.approx(one_call[name], rel=1e-5), name


def test_covariance_pass_does_not_depend_on_how_many_batches_go_in_one_call():
    method = build_method(small_config("mie"), dataset())
    state = method.init()
    params, model_state = state["params"]["mor"], state["model_state"]["mor"]
    column = dataset().splits["train"].inputs["mor"][:1000]  # 83 batches of 12 and one of 4.
    once = method.covariance_passes["mor"](params, model_state, column, 12, group=100)
    in_groups = method.covariance_passes["mor"](params, model_state, column, 12, group=4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), in_groups, once)


class CountingColumn:
    """A numpy column that records how many rows each read asks for and refuses to be read whole."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

    def __len__(self):
        return len(self.array)

    def __getitem__(self, rows):
        self.reads.append(np.size(rows))
        return self.array[rows]

    def __array__(self, *args, **kwargs):
        raise AssertionError("a split was read whole")


def test_training_and_evaluation_read_the_split_in_chunks_never_whole():
    data = dataset(("fac", "mor"))
    counted = {
        split: Split({m: CountingColumn(np.asarray(c)) for m, c in s.inputs.items()}, s.labels)
        for split, s in data.splits.items()
    }
    config = small_config("mie", "train.chunk_steps=4", "train.eval_batch_size=50", modalities=("fac", "mor"))
    results = train(config, data._replace(splits=counted))
    assert results["finished"]
    largest = {split: max(r for c in s.inputs.values() for r in c.reads) for split, s in counted.items()}
    assert largest["train"] <= max(4 * config.train.batch_size, config.train.eval_batch_size)
    assert largest["validation"] <= config.train.eval_batch_size and largest["test"] <= config.train.eval_batch_size


@pytest.mark.parametrize(
    "method, overrides, variant",
    [
        ("mie", [], "reference"),  # Stages restart from the best weights with a fresh optimizer.
        ("mie", ["mie.covariance=online"], "paper"),  # The phase's own covariance sum is part of a checkpoint.
        ("ogm_ge", [], "paper"),
        ("mla", [], "paper"),
    ],
)
def test_stopping_inside_a_phase_and_resuming_gives_the_uninterrupted_run(tmp_path, method, overrides, variant):
    config = small_config(
        method, "train.outer_iterations=2", "train.phase_epochs=1", "train.chunk_steps=5", *overrides, variant=variant
    )
    whole = train(config, dataset())
    stopped = train(config, dataset(), workdir=str(tmp_path), stop_after_steps=17)  # Inside phase 2.
    assert not stopped["finished"] and len(stopped["history"]) == 1
    restored = []
    resumed = train(config, dataset(), workdir=str(tmp_path), resume=True, on_restore=restored.append)
    assert [len(h) for h in restored] == [1]
    assert resumed["finished"]
    assert [r["step_losses"] for r in resumed["history"]] == [r["step_losses"] for r in whole["history"]]
    assert resumed["test"] == whole["test"]


def test_checkpoints_inside_a_phase_every_n_steps(tmp_path):
    config = small_config(
        "unimodal", "train.chunk_steps=3", "train.checkpoint_every_steps=6", modalities=("fac", "mor")
    )
    train(config, dataset(("fac", "mor")), workdir=str(tmp_path))
    saved = checkpoint.RunCheckpointer(str(tmp_path / "checkpoints"), max_to_keep=100)
    steps = saved.all_steps()
    saved.close()
    # 12 steps a phase, 2 phases: inside-phase saves at 6 and 18 (12 and 24 end the phases); the last 3 kept.
    assert steps == [12, 18, 24]


def test_run_chunks_hands_back_after_every_chunk():
    method = build_method(small_config("unimodal", modalities=("fac", "mor")), dataset(("fac", "mor")))
    plan = method.phase_plan(method.init(), 0)
    stops = [done for _, done, _ in loop.run_chunks(plan, start=0, chunk=5)]
    assert stops == [5, 10, 12]


def test_default_chunk_is_one_epoch_capped_by_steps_and_bytes():
    assert feed.chunk_steps(0, steps_per_epoch=12, bytes_per_step=1000) == 12
    assert feed.chunk_steps(0, steps_per_epoch=10_000, bytes_per_step=1000) == feed.DEFAULT_CHUNK_STEPS
    assert feed.chunk_steps(0, steps_per_epoch=10_000, bytes_per_step=feed.CHUNK_BYTES // 3) == 3
    assert feed.chunk_steps(0, steps_per_epoch=10_000, bytes_per_step=2 * feed.CHUNK_BYTES) == 1
    assert feed.chunk_steps(7, steps_per_epoch=12, bytes_per_step=1000) == 7


def test_map_batches_pads_the_last_batch_and_drops_the_padding():
    column = np.arange(10, dtype=np.float32)[:, None]
    seen = []

    def double(batch):
        seen.append(batch["x"].shape)
        return batch["x"] * 2

    out = feed.map_batches(double, {"x": column}, 4)
    np.testing.assert_array_equal(out, column * 2)
    assert seen == [(4, 1)] * 3  # One compiled shape.


def test_row_subset_reads_through_to_its_column():
    base = CountingColumn(np.arange(20).reshape(10, 2))
    subset = columns.take_rows(base, np.array([7, 2, 5]))
    np.testing.assert_array_equal(subset[np.array([2, 0])], [[10, 11], [14, 15]])
    assert subset.shape == (3, 2) and len(subset) == 3
    np.testing.assert_array_equal(columns.take_rows(np.arange(5), np.array([4, 1])), [4, 1])


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere():
    terminal = FakeTerminal()
    assert progress.wants_bar(quiet=False, stream=terminal)
    assert not progress.wants_bar(quiet=True, stream=terminal)
    assert not progress.wants_bar(quiet=False, stream=io.StringIO())
    bar = progress.PhaseProgress("phase 1/2 (fac)", 10, 0, 64, bar=True, stream=terminal)
    bar.update(5, 0.5)
    bar.update(10, 0.25)
    bar.close()
    drawn = terminal.getvalue()
    assert "phase 1/2 (fac)" in drawn and "5/10" in drawn and "loss=0.2500" in drawn
    log = io.StringIO()
    lines = progress.PhaseProgress("phase 1/2 (fac)", 10, 0, 64, bar=False, stream=log)
    lines.update(5, 0.5)  # The first update prints; then at most every LINE_SECONDS, and at the end.
    lines.update(7, 0.4)
    lines.update(10, 0.25)
    printed = log.getvalue().splitlines()
    assert len(printed) == 2
    assert printed[0].startswith("phase 1/2 (fac): step 5/10 | loss 0.5000 |") and "samples/s" in printed[0]
    assert printed[1].startswith("phase 1/2 (fac): step 10/10 | loss 0.2500")


def test_training_draws_a_bar_per_phase_on_a_terminal(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    train(small_config("unimodal", "train.chunk_steps=4", modalities=("fac", "mor")), dataset(("fac", "mor")))
    drawn = terminal.getvalue()
    assert "phase 1/2 (fac)" in drawn and "phase 2/2 (mor)" in drawn and "12/12" in drawn
    assert "samples_per_s=" in drawn
