"""The package as pip installs it: experiments.run and experiments.report work outside the source tree."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_an_installed_copy_runs_experiments_run_and_report(tmp_path):
    site = tmp_path / "site"
    # --no-deps: the dependencies are this interpreter's; what is checked is what the package itself ships.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), ROOT],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True)

    where = run("-c", "import experiments, mie_jax; print(experiments.__file__, mie_jax.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(path.startswith(str(site)) for path in where.stdout.split())
    trained = run(
        "-m",
        "experiments.run",
        "--workdir",
        str(tmp_path / "run"),
        "--quiet",
        *[
            arg
            for value in (
                "train.outer_iterations=1",
                "train.phase_epochs=1",
                "model.dim=8",
                "model.encoder_hidden=8",
            )
            for arg in ("--set", value)
        ],
    )
    assert trained.returncode == 0, trained.stderr
    assert "| average |" in trained.stdout
    report = run("-m", "experiments.report", "--help")
    assert report.returncode == 0, report.stderr
