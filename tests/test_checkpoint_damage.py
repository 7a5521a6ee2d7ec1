"""Checkpoints are verified on restore; a damaged newest one falls back to the newest intact one."""

import glob
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import configs
from mie_jax.train import make_config
from mie_jax.train.checkpoint import CheckpointDamagedError, CheckpointMismatchError, RunCheckpointer, config_to_json

CONFIG = make_config(configs.get_config("mfeat"), [])


def tree(k, width=20000):
    return {
        "state": {
            "w": jnp.arange(width, dtype=jnp.float32) * k,
            "b": jnp.ones((3, 4)) * k,
            "count": jnp.asarray(k, jnp.int32),
        },
        "best": {"score": jnp.asarray(-np.inf), "phase": jnp.asarray(-1)},
    }


def meta(k, config=CONFIG):
    return {"config": config_to_json(config), "history": [k], "phase": k, "phase_step": 0}


@pytest.fixture
def saved(tmp_path):
    """Checkpoints at steps 3 and 7 (not phase numbers: any increasing step count)."""
    checkpointer = RunCheckpointer(str(tmp_path / "checkpoints"))
    for step in (3, 7):
        checkpointer.save(step, tree(step), meta(step))
    checkpointer.close()
    return tmp_path


def restore(workdir, target=None, config=CONFIG):
    warnings = []
    checkpointer = RunCheckpointer(str(workdir / "checkpoints"))
    try:
        return checkpointer.restore_latest(tree(0) if target is None else target, config, warnings.append), warnings
    finally:
        checkpointer.close()


def largest_data_file(step_dir):
    files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*"))
    return max(files, key=os.path.getsize)


def garbage_in_metadata(step_dir):
    with open(os.path.join(step_dir, "meta", "metadata"), "wb") as f:
        f.write(b"\xff\xfe\x00garbage")


def deleted_state(step_dir):
    shutil.rmtree(os.path.join(step_dir, "state"))


def truncated_data_file(step_dir):
    path = largest_data_file(step_dir)
    os.truncate(path, os.path.getsize(path) // 2)


def four_bytes_overwritten(step_dir):
    path = largest_data_file(step_dir)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        original = f.read(4)
        f.seek(-4, os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in original))


def history_changed_in_metadata(step_dir):
    path = os.path.join(step_dir, "meta", "metadata")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace('"history": [7]', '"history": [8]'))


def config_changed_in_metadata(step_dir):  # Damage, not another config: the metadata's checksum tells.
    path = os.path.join(step_dir, "meta", "metadata")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace('"mie.tau": 0.4', '"mie.tau": 0.5'))


def garbage_in_array_metadata(step_dir):
    with open(os.path.join(step_dir, "state", "_METADATA"), "wb") as f:
        f.write(b"\xff\xfe\x00garbage")


def test_an_intact_checkpoint_restores_its_arrays_and_meta(saved):
    (step, restored, stored), warnings = restore(saved)
    assert step == 7 and warnings == []
    np.testing.assert_array_equal(restored["state"]["w"], tree(7)["state"]["w"])
    assert stored == meta(7)  # Without the checksums.


def test_an_empty_directory_restores_nothing(tmp_path):
    assert restore(tmp_path) == (None, [])


@pytest.mark.parametrize(
    "damage",
    [
        garbage_in_metadata,
        deleted_state,
        truncated_data_file,
        four_bytes_overwritten,
        garbage_in_array_metadata,
        history_changed_in_metadata,
        config_changed_in_metadata,
    ],
)
def test_a_damaged_newest_checkpoint_is_reported_and_the_previous_one_restored(saved, damage):
    damage(str(saved / "checkpoints" / "7"))
    (step, restored, stored), warnings = restore(saved)
    assert step == 3 and stored["history"] == [3]
    np.testing.assert_array_equal(restored["state"]["w"], tree(3)["state"]["w"])
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert warnings[0].startswith(f"checkpoint {saved / 'checkpoints' / '7'} is damaged")
    assert "newest intact checkpoint" in warnings[1] and str(saved / "checkpoints" / "3") in warnings[1]
    # The damaged one is kept aside, out of the way of the steps saved next.
    assert sorted(os.listdir(saved / "checkpoints")) == ["3"]
    assert os.listdir(saved / "checkpoints-damaged") == ["7"]
    checkpointer = RunCheckpointer(str(saved / "checkpoints"))
    checkpointer.save(5, tree(5), meta(5))
    checkpointer.close()
    assert restore(saved)[0][0] == 5


def test_changed_bytes_are_never_restored_silently(saved):
    four_bytes_overwritten(str(saved / "checkpoints" / "7"))
    _, warnings = restore(saved)
    assert "differ from their checksum" in warnings[0] or "cannot be read" in warnings[0]


def test_every_checkpoint_damaged_is_one_clear_error(saved):
    for step in ("3", "7"):
        garbage_in_metadata(str(saved / "checkpoints" / step))
    with pytest.raises(CheckpointDamagedError, match=r"every checkpoint in .* is damaged \(steps 3, 7\)"):
        restore(saved)
    assert sorted(os.listdir(saved / "checkpoints")) == ["3", "7"]  # Nothing moved.


def test_another_config_is_a_mismatch_not_a_fallback(saved):
    other = make_config(configs.get_config("mfeat"), ["mie.tau=0.9"])
    with pytest.raises(CheckpointMismatchError, match="mie.tau: 0.4 -> 0.9"):
        restore(saved, config=other)


def test_another_model_is_a_mismatch_naming_the_array(saved):
    with pytest.raises(CheckpointMismatchError, match=r"does not fit this model.*\['state'\]\['w'\]"):
        restore(saved, target=tree(0, width=10))
    assert sorted(os.listdir(saved / "checkpoints")) == ["3", "7"]
