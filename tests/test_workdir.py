"""A run's workdir is safe: marked, locked, never overwritten; storage and signal faults are one line."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from experiments import configs, outputs, run
from experiments import workdir as workdirs
from mie_jax.train import checkpoint, make_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = [
    "train.outer_iterations=1",
    "train.phase_epochs=1",
    "model.dim=16",
    "model.encoder_hidden=32",
    "train.batch_size=100",
]
FAST = [arg for value in OVERRIDES for arg in ("--set", value)]


def error_lines(capsys):
    """stderr's lines; an error must be exactly one ``error:`` line and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")], err


def mark(workdir, fusion="average", overrides=OVERRIDES):
    """Makes ``workdir`` hold a run (its run.json), as a first run does before training."""
    config = make_config(configs.get_config("mfeat"), overrides)
    marker = {"dataset": "mfeat", "fusion": fusion, "config": checkpoint.config_to_json(config)}
    workdirs.open_workdir(str(workdir), resume=False, marker=marker, say=lambda line: None).release()
    return marker


def snapshot(directory):
    """Every file and directory under ``directory``, with the files' bytes."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), directory)] = None
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), directory)] = f.read()
    return out


# --- the marker: a directory of someone else's files is never trained into ---------------------


def test_a_non_empty_directory_without_a_run_is_refused_and_left_untouched(tmp_path, capsys):
    (tmp_path / "results.json").write_text('{"mine": 1}')
    (tmp_path / "results.md").write_text("my notes")
    before = snapshot(tmp_path)
    assert run.main(["--workdir", str(tmp_path), *FAST]) == 2
    errors, _ = error_lines(capsys)
    assert errors == [
        f"error: --workdir {tmp_path} is not empty and holds no run of ours (results.json, "
        "results.md); nothing was touched: choose a new or empty --workdir."
    ]
    assert snapshot(tmp_path) == before


def test_a_fresh_run_writes_its_marker_first(tmp_path):
    marker = mark(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "run.json").read_text()) == marker
    assert (tmp_path / "run" / "run.lock").read_text() == ""  # Released: no holder named.


def test_a_directory_holding_a_run_needs_resume(tmp_path, capsys):
    mark(tmp_path)
    assert run.main(["--workdir", str(tmp_path), *FAST]) == 2
    assert error_lines(capsys)[0] == [
        f"error: --workdir {tmp_path} already holds a run; pass --resume or choose another."
    ]


@pytest.mark.parametrize("layout", ["missing", "empty", "foreign"])
def test_resume_where_there_is_no_run_is_an_error(tmp_path, capsys, layout):
    workdir = tmp_path / "typo"
    if layout != "missing":
        workdir.mkdir()
    if layout == "foreign":
        (workdir / "notes.txt").write_text("x")
    assert run.main(["--workdir", str(workdir), "--resume", *FAST]) == 2
    errors, _ = error_lines(capsys)
    expected = "does not exist" if layout == "missing" else "holds no run (no run.json)"
    assert len(errors) == 1 and expected in errors[0] and "drop --resume" in errors[0]
    assert os.path.exists(workdir) == (layout != "missing")
    if layout != "missing":
        assert sorted(os.listdir(workdir)) == ([] if layout == "empty" else ["notes.txt"])


@pytest.mark.parametrize(
    "key,argv,difference",
    [
        ("fusion", ["--fusion", "weighted"], "fusion: 'average' -> 'weighted'"),
        ("config", ["--set", "mie.tau=0.9"], "mie.tau: 0.4 -> 0.9"),
    ],
)
def test_resume_with_other_settings_is_refused(tmp_path, capsys, key, argv, difference):
    mark(tmp_path)
    before = snapshot(tmp_path)
    assert run.main(["--workdir", str(tmp_path), "--resume", *FAST, *argv]) == 2
    errors, _ = error_lines(capsys)
    assert (
        len(errors) == 1
        and errors[0].startswith(f"error: the run in {tmp_path} was started with other settings")
        and difference in errors[0]
    )
    assert snapshot(tmp_path) == before


# --- the lock: one run per workdir -------------------------------------------------------------


HOLD = (
    "import sys, time; from experiments.workdir import WorkdirLock; "
    "WorkdirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)"
)


def test_a_second_run_is_refused_at_once_naming_the_holder(tmp_path, capsys):
    mark(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(tmp_path)
        started = time.monotonic()
        assert run.main(["--workdir", str(tmp_path), "--resume", *FAST]) == 2
        assert time.monotonic() - started < 60
        errors, _ = error_lines(capsys)
        assert len(errors) == 1
        assert errors[0].startswith(
            f"error: --workdir {tmp_path} is in use by another run "
            f"(pid {holder.pid} on host {socket.gethostname()} since "
        )
        assert errors[0].endswith("wait for it to end or stop it, or choose another --workdir.")
        assert snapshot(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_recovered_with_a_message(tmp_path):
    mark(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": 0}))
    said = []
    marker = json.loads((tmp_path / "run.json").read_text())
    lock = workdirs.open_workdir(str(tmp_path), resume=True, marker=marker, say=said.append)
    try:
        assert said == [
            f"note: took over the lock of --workdir {tmp_path} left by pid {dead.pid} on host "
            f"{socket.gethostname()} since 1970-01-01 00:00:00 UTC, which is no longer running."
        ]
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    finally:
        lock.release()


# --- storage faults: one line naming the path and what to do, before any training --------------


def test_a_workdir_that_is_a_file_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text("{}")
    assert run.main(["--workdir", str(path), *FAST]) == 2
    assert error_lines(capsys)[0] == [f"error: --workdir {path} is a file, not a directory; choose another --workdir."]
    assert run.main(["--workdir", str(path / "run"), *FAST]) == 2
    errors, _ = error_lines(capsys)
    assert len(errors) == 1 and errors[0].startswith("error: not a directory:") and str(path) in errors[0]


def test_permission_denied_is_one_error_line(tmp_path, capsys, monkeypatch):
    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    assert run.main(["--workdir", str(tmp_path / "run"), *FAST]) == 2
    errors, _ = error_lines(capsys)
    assert errors == [
        f"error: permission denied: {tmp_path / 'run' / 'run.lock'}; make it writable for this "
        "user or choose another --workdir."
    ]


@pytest.fixture
def tmpfs(tmp_path):
    """A 512 kB tmpfs mounted at ``tmp_path/mnt`` (root only; :func:`remount` changes it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "mnt"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount):
    """Fills the file system at ``mount`` with a file named ``filler``."""
    with open(mount / "filler", "wb", buffering=0) as f:
        with pytest.raises(OSError) as error:
            while True:
                f.write(b"\0" * 4096)
        assert error.value.errno == errno.ENOSPC


def remount(mount, options):
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def test_a_read_only_workdir_is_one_error_line_before_any_training(tmpfs, capsys):
    mark(tmpfs / "resumed")
    remount(tmpfs, "ro")
    assert run.main(["--workdir", str(tmpfs / "new"), *FAST]) == 2
    errors, _ = error_lines(capsys)
    assert errors == [f"error: read-only file system: {tmpfs / 'new'}; choose a --workdir on a writable file system."]
    started = time.monotonic()
    assert run.main(["--workdir", str(tmpfs / "resumed"), "--resume", *FAST]) == 2
    errors, err = error_lines(capsys)
    assert errors == [
        f"error: read-only file system: {tmpfs / 'resumed' / 'run.lock'}; choose a --workdir on a writable file system."
    ]
    assert "phase" not in err and time.monotonic() - started < 60  # Refused before training: no hang.


def test_no_space_left_is_one_error_line_and_leaves_no_empty_results(tmpfs):
    workdir = tmpfs / "run"
    # A checkpoint (~1 MB) does not fit in 512 kB. A process of its own: what reaches the terminal,
    # TensorStore's unraisable callback errors included (pytest would collect those in-process).
    completed = subprocess.run(
        [sys.executable, "-m", "experiments.run", "--workdir", str(workdir), "--quiet", *FAST],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2
    err = completed.stderr
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(err.splitlines()) <= 4, err  # Title, progress, the error.
    assert len(errors) == 1 and errors[0].startswith("error: no space left on device: ") and str(workdir) in errors[0]
    assert errors[0].endswith("free space there, then continue with --resume.")
    assert not (workdir / "results.md").exists()


def test_atomic_writes_keep_the_old_file_on_a_full_disk(tmpfs):
    results = tmpfs / "results.md"
    results.write_text("the previous table\n")
    fill(tmpfs)
    with pytest.raises(OSError):
        workdirs.atomic_write(str(results), "a new table\n" * 100000)
    assert results.read_text() == "the previous table\n"
    assert sorted(os.listdir(tmpfs)) == ["filler", "results.md"]  # No temporary file left behind.


def test_the_library_log_on_a_full_disk_closes_without_an_error(tmpfs):
    # The CI failure this guards against: a buffered run.log failed again on close, and that error
    # replaced the run's one-line storage message with a traceback.
    fill(tmpfs)
    run._route_library_logs(str(tmpfs / "run.log"))
    try:
        run._LIBRARY_LOG.error("a save failed")  # Short: it stays in the buffer.
    finally:
        run._route_library_logs(None, restore=True)  # Must not raise.


def test_storage_faults_inside_orbax_errors_are_recognised():
    error = ValueError(
        'RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/2.orbax-checkpoint-tmp/x": '
        "Failed to write 8191 bytes to file 5: No space left on device [OS error: 28]"
    )
    assert workdirs.storage_fault(error) == (
        "no space left on device: /w/checkpoints/2; free space there, then continue with --resume."
    )
    assert workdirs.storage_fault(ValueError("probs must be finite")) is None


# --- logs: derived from the records given, written atomically ----------------------------------


def record(phase):
    return {
        "phase": phase,
        "num_phases": 2,
        "name": ["fac", "mor"][phase],
        "headline": "average",
        "loss": 1.5 - phase,
        "nonfinite_steps": 0,
        "step_losses": [2.0, 1.0],
        "selection": {n: {"accuracy": 0.5, "macro_f1": 0.4, "map": 0.6} for n in ("average", "fac", "mor")},
    }


def test_logs_are_rebuilt_from_the_history_never_parsed(tmp_path):
    expected = tmp_path / "expected"
    expected.mkdir()
    log = outputs.PhaseLog(str(expected))
    log.append(record(0))
    log.append(record(1))
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "phases.jsonl").write_text('{"phase": 0, "na\n\xff garbage\n{"phase": 7}\n')
    (damaged / "steps.csv").write_text("")
    outputs.PhaseLog(str(damaged), [record(0)]).append(record(1))  # What --resume does from a checkpoint.
    assert snapshot(damaged) == snapshot(expected)
    assert [json.loads(line)["phase"] for line in (damaged / "phases.jsonl").read_text().splitlines()] == [0, 1]


# --- signals: one line and --resume's hint -----------------------------------------------------


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_with_one_line(tmp_path, signum, code):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.run",
            "--workdir",
            str(tmp_path / "run"),
            "--quiet",
            *FAST,
            "--set",
            "train.outer_iterations=3",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        title = process.stderr.readline()  # Printed once the workdir is open, before training.
        assert title.startswith("mfeat (fac, mor)"), title + process.stderr.read()
        time.sleep(1.0)
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "stopped; continue with --resume", err
