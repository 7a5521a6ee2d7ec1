"""Data-parallel MIE on 1, 2, 4 and 8 simulated CPU devices: equal results, time per training sample.

  python -m benchmarks.scaling            # about 75 s on an idle 2-core CPU
  python -m benchmarks.scaling --quick    # 1 and 2 devices, 1 epoch per phase: about a minute
  python -m benchmarks.scaling --out DIR  # default: benchmarks/results

One process with 8 simulated CPU devices (``XLA_FLAGS`` is set below, before
jax is imported here or by :mod:`benchmarks.step_time`); the library's trainer
builds its data-parallel mesh over the first ``train.num_devices`` of them
(:func:`mie_jax.train.parallel.data_mesh`), so nothing but the mesh size changes
between rows. A subprocess per device count would only repeat the same
8-device setup and pass the parameters back through files.

For every device count, MIE trains on mfeat (fac + mor, the model and
hyperparameters of ``experiments/configs/mfeat.py``) for one outer iteration:
two phases, one per modality. It runs twice, identically:

* the results run, with a workdir, compiles every program (into a compilation
  cache in a temporary directory) and checkpoints after each phase; its last
  checkpoint gives the final parameters, and it gives the test accuracy;
* the timed run, without a workdir (here a checkpoint write takes longer
  than a 1-device phase), is the trainer's whole ``train`` call. Its programs come
  from the cache, and the seconds JAX still spends tracing, lowering and
  loading them (its own ``jax.monitoring`` durations, ``COMPILE_EVENTS``) are
  taken off, so what is left is the work that grows with the samples: the
  training steps, per phase the covariance pass, the T matrices and the
  validation, and the final test evaluation.

Time per sample is that time over the training samples the phases stepped
through. The simulated devices share the machine's cores: past the number of
cores, more devices cannot be faster, and the numbers measure what sharding
costs (split batches, the gradient all-reduce, and every replicated
computation run once per device), not the speed-up of real devices.

Results must not depend on the device count beyond the order of float32 sums
(:mod:`mie_jax.train.parallel`): each row gives the largest absolute
difference of its final parameters from those on one device.
"""

import os

DEVICE_COUNTS = (1, 2, 4, 8)
# Appended, so any other XLA flags of the caller are kept; it must precede jax's import.
os.environ["XLA_FLAGS"] = " ".join(
    filter(None, (os.environ.get("XLA_FLAGS"), f"--xla_force_host_platform_device_count={max(DEVICE_COUNTS)}"))
)

import argparse  # noqa: E402  (imports after XLA_FLAGS)
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import List, Optional, Sequence  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

from benchmarks import results_files as results  # noqa: E402
from experiments import configs  # noqa: E402
from mie_jax.data.registry import load_dataset  # noqa: E402
from mie_jax.train import checkpoint, make_config, registry, train  # noqa: E402
from mie_jax.train.config import COMMON_SECTIONS, TOP_LEVEL, to_dict  # noqa: E402

# Device counts and epochs per phase; mfeat's config trains 3 epochs per phase.
MODES = {"full": (DEVICE_COUNTS, 3), "quick": ((1, 2), 1)}
OUTER_ITERATIONS = 1
# The largest parameter difference from one device that still counts as float32 summation order.
PARAMS_TOLERANCE = 1e-4
# The durations JAX records while it turns a function into a program it can run (a cache load included).
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
CACHE_MISS_EVENT = "/jax/compilation_cache/cache_misses"


class CompileClock:
    """Adds up the seconds of ``COMPILE_EVENTS`` that JAX reports, and counts the programs not found in the cache."""

    def __init__(self):
        self.seconds = 0.0
        self.cache_misses = 0
        jax.monitoring.register_event_duration_secs_listener(self._add_duration)
        jax.monitoring.register_event_listener(self._count)

    def _add_duration(self, event: str, duration_secs: float, **kwargs) -> None:
        del kwargs  # Per-event details (e.g. the function's name): only the total is kept.
        if event in COMPILE_EVENTS:
            self.seconds += duration_secs

    def _count(self, event: str, **kwargs) -> None:
        del kwargs
        self.cache_misses += event == CACHE_MISS_EVENT

    def close(self) -> None:
        jax.monitoring.unregister_event_duration_listener(self._add_duration)
        jax.monitoring.unregister_event_listener(self._count)


def final_params(workdir: str) -> dict:
    """The parameters of the latest checkpoint in ``workdir``, as numpy arrays."""
    checkpointer = checkpoint.RunCheckpointer(f"{workdir}/checkpoints")
    # Without a target, Orbax restores the tree as it was saved: the trainer's {"state", "best"}.
    saved = checkpointer.manager.restore(
        checkpointer.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore())
    )["state"]
    checkpointer.close()
    return jax.tree.map(np.asarray, saved["state"]["params"])


def max_abs_difference(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def measure(base: dict, dataset, num_devices: int, phase_epochs: int, clock: CompileClock) -> tuple:
    """The results run and the timed run on ``num_devices``: ``(row, final parameters)``."""
    train_values = {"num_devices": num_devices, "outer_iterations": OUTER_ITERATIONS, "phase_epochs": phase_epochs}
    config = make_config(configs.merge(base, {"train": train_values}), method="mie")
    with tempfile.TemporaryDirectory(prefix="scaling_") as workdir:
        results = train(config, dataset, workdir=workdir)
        params = final_params(workdir)
    compile_before, misses_before = clock.seconds, clock.cache_misses
    started = time.perf_counter()
    timed = train(config, dataset)
    wall_s = time.perf_counter() - started
    compile_s = clock.seconds - compile_before
    samples = config.train.batch_size * sum(len(record["step_losses"]) for record in timed["history"])
    headline = results["headline"]
    row = {
        "num_devices": num_devices,
        "batch_per_device": config.train.batch_size // num_devices,
        "phases": len(timed["history"]),
        "samples": samples,
        "wall_s": wall_s,
        "compile_s": compile_s,
        "timed_programs_compiled": clock.cache_misses - misses_before,
        "us_per_sample": 1e6 * (wall_s - compile_s) / samples,
        "headline": headline,
        "test_accuracy": results["test"][headline]["accuracy"],
        # The same run twice on the same devices: any difference would make the timing another computation's.
        "timed_run_equals_results_run": [r["step_losses"] for r in timed["history"]]
        == [r["step_losses"] for r in results["history"]],
    }
    return row, params


def read_sections(config) -> dict:
    """``config`` as nested values (:func:`mie_jax.train.config.to_dict`) less the method sections it does not read."""
    read = (*TOP_LEVEL, *COMMON_SECTIONS, *registry.get(config.method).sections)
    return {key: value for key, value in to_dict(config).items() if key in read}


def to_markdown(machine: dict, command: str, rows: List[dict], config, phase_epochs: int) -> str:
    """The report: machine, command, what was run (``config``: MIE's on mfeat), and one table."""
    lines = [
        "# Data-parallel scaling on simulated CPU devices",
        "",
        f"Machine: {machine['hostname']}, {machine['platform']}, {machine['cpu']} ({machine['cpu_count']} CPUs); "
        f"jax {machine['jax']}, {machine['device_count']} simulated {machine['backend']} devices; "
        f"{machine['date_utc']} UTC; 1-min load average "
        f"{machine['load_average_1min']['before']} before, {machine['load_average_1min']['after']} after.",
        "",
        f"Command: `{command}`",
        "",
        f"**The {machine['device_count']} devices are simulated on the same {machine['cpu_count']} CPU cores: past "
        f"{machine['cpu_count']} devices more cannot be faster, and time per sample measures what sharding costs "
        "(split batches, the gradient all-reduce, replicated work done once per device), not the speed-up of real "
        "devices.**",
        "",
        f"MIE on mfeat ({' + '.join(config.modalities)}, dim {config.model.dim}, encoder hidden "
        f"{config.model.encoder_hidden}, batch {config.train.batch_size} split over the devices), "
        f"{OUTER_ITERATIONS} outer iteration (one phase per modality) of {phase_epochs} "
        f"epoch{'s' if phase_epochs > 1 else ''} per phase, "
        "by the library's trainer. Time: a second, identical `train` call after the first compiled everything "
        'into a cache; its wall time less the tracing, lowering and cache loading JAX reports ("compile s"), '
        "over the training samples of its phases. It includes, per phase, the covariance pass, the T matrices and "
        "the validation, and the final test evaluation. Δ params: the largest absolute difference of the final "
        f"parameters (the first run's last checkpoint) from those on 1 device; equal: within {PARAMS_TOLERANCE:g}.",
        "",
        "| devices | batch/device | samples | wall s | compile s | µs/sample | vs 1 device | test accuracy | "
        "max abs Δ params vs 1 | equal |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    baseline = rows[0]["us_per_sample"]
    for row in rows:
        lines.append(
            f"| {row['num_devices']} | {row['batch_per_device']} | {row['samples']} | {row['wall_s']:.2f} | "
            f"{row['compile_s']:.2f} | {row['us_per_sample']:.0f} | {row['us_per_sample'] / baseline:.2f}x | "
            f"{row['test_accuracy']:.4f} | {row['max_abs_param_diff']:.2e} | "
            f"{'yes' if row['params_equal'] else '**no**'} |"
        )
    recompiled = [str(row["num_devices"]) for row in rows if row["timed_programs_compiled"]]
    unequal = [str(row["num_devices"]) for row in rows if not row["timed_run_equals_results_run"]]
    if recompiled:
        lines += [
            "",
            f"The timed run compiled programs anew (not from the cache) on {', '.join(recompiled)} "
            "device(s); their compile seconds are still taken off.",
        ]
    if unequal:
        lines += ["", f"**The timed run's losses differ from the results run's on {', '.join(unequal)} device(s).**"]
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n")[0])
    quick_counts, quick_epochs = MODES["quick"]
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"only {' and '.join(map(str, quick_counts))} devices, {quick_epochs} epoch per phase (a smoke run)",
    )
    parser.add_argument(
        "--out", type=Path, default=results.DEFAULT_OUT, help=f"results directory (default: {results.DEFAULT_OUT})"
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device_counts, phase_epochs = MODES["quick" if args.quick else "full"]
    if jax.device_count() < max(device_counts):
        # jax was initialised before this module set XLA_FLAGS (e.g. imported from another program).
        raise SystemExit(f"{jax.device_count()} devices; run `python -m benchmarks.scaling` in its own process.")
    started = time.perf_counter()
    load_before = results.load_average()

    def progress(message):
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr)

    base = configs.get_config("mfeat")
    dataset = load_dataset("mfeat", base["modalities"])
    clock = CompileClock()
    rows, params_of_one = [], None
    with tempfile.TemporaryDirectory(prefix="scaling_xla_cache_") as cache_dir:
        # A fresh cache: the results run compiles cold, the timed run loads what it compiled.
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        for num_devices in device_counts:
            progress(f"{num_devices} device(s): results run, then timed run ...")
            row, params = measure(base, dataset, num_devices, phase_epochs, clock)
            params_of_one = params if params_of_one is None else params_of_one
            row["max_abs_param_diff"] = max_abs_difference(params, params_of_one)
            row["params_equal"] = row["max_abs_param_diff"] <= PARAMS_TOLERANCE
            progress(
                f"{num_devices} device(s): {row['us_per_sample']:.0f} us/sample, max abs param diff "
                f"{row['max_abs_param_diff']:.2e}"
            )
            rows.append(row)
    clock.close()
    progress("done")

    machine = results.machine_info()
    machine["load_average_1min"] = {"before": load_before, "after": results.load_average()}
    command = " ".join(["python -m benchmarks.scaling", *(sys.argv[1:] if argv is None else argv)]).strip()
    config = make_config(base, method="mie")
    markdown = to_markdown(machine, command, rows, config, phase_epochs)
    print(markdown)

    settings = {
        "device_counts": list(device_counts),
        "method": "mie",
        "dataset": "mfeat",
        # mfeat's MIE config (the device count, outer iterations and epochs per phase are those below).
        "config": read_sections(config),
        "outer_iterations": OUTER_ITERATIONS,
        "phase_epochs": phase_epochs,
        "params_tolerance": PARAMS_TOLERANCE,
        "compile_events": list(COMPILE_EVENTS),
    }
    report = {
        "machine": machine,
        "command": command,
        "settings": settings,
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "markdown": markdown,
    }
    results.write(args.out, "scaling", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
