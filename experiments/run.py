"""Train MIE (or a peer) on a dataset and report the paper's metrics.

  python -m experiments.run                      # MIE on the embedded mfeat dataset
  python -m experiments.run --method mla --set modalities=fac,mor,zer
  python -m experiments.run --workdir runs/a --resume   # continue a killed run

Writes to the workdir: run.json (the run's settings, written first; a fresh
run goes only into a new or empty directory), run.lock (one run at a time),
Orbax checkpoints, phases.jsonl/phases.csv (per-phase validation metrics),
steps.csv (per-step losses), results.md/results.json (the selected model's test
metrics), phase_accuracy.png and run.log (the libraries' warnings). Every error
is one ``error:`` line and exit status 2; SIGINT/SIGTERM stop with 130/143.
"""

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from typing import Optional

import jax

from experiments import configs, outputs
from experiments import workdir as workdirs
from experiments.configs import paper as paper_configs
from mie_jax.data.registry import DATASETS, check_dataset, load_dataset
from mie_jax.models.encoders import encoder_names
from mie_jax.train import checkpoint, make_config, parallel, registry, train
from mie_jax.train import config as config_lib
from mie_jax.train.config import VARIANTS
from mie_jax.train.trainer import FUSIONS


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mfeat", choices=DATASETS)
    parser.add_argument(
        "--method",
        default="mie",
        choices=registry.names(),
        help="; ".join(f"{spec.name}: {spec.summary}" for spec in registry.specs()),
    )
    parser.add_argument("--variant", default="paper", choices=VARIANTS)
    parser.add_argument(
        "--fusion", default="average", choices=FUSIONS, help="fusion that selects the model and heads the table"
    )
    parser.add_argument("--data-dir", default=None, help="directory with the dataset's files")
    parser.add_argument("--workdir", default=None, help="default: workdir/<dataset>-<method>-<variant>-seed<N>")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. mie.tau=0.5 or train.batch_size=32 (repeatable); "
        "an unknown key lists the valid ones",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --workdir from its newest intact checkpoint"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar (one line per phase)")
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host: call jax.distributed.initialize() with the --coordinator, "
        "--num-processes and --process-id given, or from the cluster's environment",
    )
    parser.add_argument("--coordinator", default=None, help="host:port of process 0 (with --distributed)")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    return parser.parse_args(argv)


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: stop where the run is (every point is crash-safe)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, frame):
    signal.signal(signum, signal.SIG_DFL)  # A second signal stops the process at once.
    raise Stopped(signum)


# Orbax logs through absl; TensorStore's failed writes also surface as asyncio's "never retrieved" errors.
_LIBRARY_LOGGERS = ("absl", "asyncio")
_LIBRARY_LOG = logging.getLogger("absl")


class _Drop(logging.NullHandler):
    pass


class _QuietFileHandler(logging.FileHandler):
    """The libraries' log (Orbax's tracebacks among it) goes to a file; failing to write it is ignored."""

    def handleError(self, record):
        pass

    def close(self):
        try:  # Closing flushes what is buffered: on a full disk that fails too, and must not replace the error.
            super().close()
        except OSError:
            pass


def _route_library_logs(path: Optional[str], restore: bool = False) -> None:
    """Orbax logs each failure with tracebacks through absl: keep them off the terminal, in ``run.log``.

    ``path=None`` drops them (before the workdir is open); ``restore`` undoes it.
    """
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, (_QuietFileHandler, _Drop)):
                logger.removeHandler(handler)
                handler.close()
        logger.propagate = restore
    if restore:
        return
    if path is None:
        handler = _Drop()
    else:
        handler = _QuietFileHandler(path, delay=True)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).addHandler(handler)


def _check_before_writing(config, dataset) -> None:
    """What ``train`` would reject only after the workdir is marked: checked first."""
    encoder_names(config, config.modalities)
    missing = [m for m in config.modalities if m not in dataset.splits["train"].inputs]
    if missing:
        raise ValueError(
            f"modalities {missing} are not in dataset {dataset.name!r} "
            f"(it has {sorted(dataset.splits['train'].inputs)})."
        )
    check_dataset(dataset)
    parallel.check_batch_size(config.train.batch_size, parallel.data_mesh(config.train.num_devices))


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.distributed:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    writer = jax.process_index() == 0  # One host writes the logs; Orbax coordinates checkpoints itself.
    handlers = (
        {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        if threading.current_thread() is threading.main_thread()
        else {}
    )
    hooks = sys.unraisablehook, threading.excepthook
    # TensorStore reports the errors of its callbacks after a failed write (dozens of "Event loop is
    # closed") as unraisable, and a library thread may die with one: both go to run.log.
    sys.unraisablehook = lambda u: _LIBRARY_LOG.error(
        "unraisable in %r", u.object, exc_info=(u.exc_type, u.exc_value, u.exc_traceback)
    )
    threading.excepthook = lambda args: _LIBRARY_LOG.error(
        "thread %s died",
        getattr(args.thread, "name", "?"),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
    _route_library_logs(None)
    lock, workdir = None, args.workdir
    try:
        try:
            config = make_config(
                configs.get_config(args.dataset),
                args.overrides,
                method=args.method,
                variant=args.variant,
                seed=args.seed,
            )
            workdir = args.workdir or os.path.join(
                "workdir", f"{args.dataset}-{config.method}-{config.variant}-seed{config.seed}"
            )
            if writer and (warning := paper_configs.missing_pretrained_warning(args.dataset, config)):
                print(warning, file=sys.stderr, flush=True)
            if writer:
                workdirs.check_workdir(workdir, resume=args.resume)  # Refusals come before the data loads.
            dataset = load_dataset(args.dataset, config.modalities, config.load_options(args.data_dir))
            _check_before_writing(config, dataset)
            if writer:
                marker = {"dataset": args.dataset, "fusion": args.fusion, "config": checkpoint.config_to_json(config)}
                lock = workdirs.open_workdir(
                    workdir,
                    resume=args.resume,
                    marker=marker,
                    layout_keys=config_lib.LAYOUT_KEYS,
                    say=lambda line: print(line, file=sys.stderr, flush=True),
                )
                _route_library_logs(os.path.join(workdir, "run.log"))
        except (ValueError, FileNotFoundError, workdirs.WorkdirError, OSError) as error:
            print(f"error: {workdirs.storage_fault(error, workdir) or _one_line(error)}", file=sys.stderr)
            return 2
        mark = (lambda: workdirs.write_marker(workdir, marker)) if lock is not None and lock.marker_missing else None
        return _train_and_report(args, config, dataset, workdir, writer, mark)
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        print("stopped; continue with --resume", file=sys.stderr, flush=True)
        return 128 + signum
    finally:
        if lock is not None:
            lock.release()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        gc.collect()  # Abandoned futures of a failed save log their errors now, into run.log.
        sys.unraisablehook, threading.excepthook = hooks
        _route_library_logs(None, restore=True)


def _train_and_report(args, config, dataset, workdir, writer, mark=None) -> int:
    views = ", ".join(config.modalities)
    title = f"{args.dataset} ({views}): {config.method}, {config.variant} variant, seed {config.seed}"
    selection_split = "test" if config.train.select_on == "test" else "validation"
    print(title, file=sys.stderr)
    log = None

    def mark_once():
        nonlocal mark
        if mark is not None:  # A workdir from before run.json: marked once its checkpoint fits this config.
            mark()
            mark = None

    def on_restore(history):
        nonlocal log
        if writer:  # The logs are rebuilt from what the checkpoint holds, never read back.
            mark_once()
            log = outputs.PhaseLog(workdir, history)
            print(f"resumed after {len(history)} phase(s) from {workdir}", file=sys.stderr, flush=True)

    def on_phase(record):
        nonlocal log
        if not writer:
            return
        if log is None:  # A fresh run, or a resume that found no checkpoint: logs start empty.
            mark_once()
            log = outputs.PhaseLog(workdir)
        log.append(record)
        print(outputs.progress_line(record, selection_split), file=sys.stderr, flush=True)

    try:
        results = train(
            config,
            dataset,
            fusion_name=args.fusion,
            workdir=workdir,
            resume=args.resume,
            on_phase=on_phase,
            on_restore=on_restore,
            quiet=args.quiet,
        )
        if not writer:
            return 0
        if log is None:  # Resumed a finished run: nothing trained, the logs still match the history.
            outputs.PhaseLog(workdir, results["history"])
        table = outputs.write_results(workdir, results, title)
        outputs.plot_phase_accuracy(workdir, results["history"], selection_split, title)
    except (ValueError, FloatingPointError, OSError) as error:  # Mismatch, damage, NaN, storage.
        print(f"error: {workdirs.storage_fault(error, workdir) or _one_line(error)}", file=sys.stderr)
        return 2
    print(table)
    print(f"results, logs and phase_accuracy.png are in {workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    code = main()
    if code:
        # Stopped or failed: exit now, without waiting for a save's background threads or letting
        # their abandoned futures log tracebacks as the interpreter shuts down.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
