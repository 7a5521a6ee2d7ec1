"""Train MIE (or a peer) on a dataset and report the paper's metrics.

  python -m experiments.run                      # MIE on the embedded mfeat dataset
  python -m experiments.run --method mla --set modalities=fac,mor,zer
  python -m experiments.run --workdir runs/a --resume   # continue a killed run

Writes to the workdir: Orbax checkpoints, phases.jsonl/phases.csv (per-phase
validation metrics), steps.csv (per-step losses), results.md/results.json (the
selected model's test metrics) and phase_accuracy.png.
"""

import argparse
import os
import sys

import jax

from experiments import configs, outputs
from mie_jax.data.registry import DATASETS, load_dataset
from mie_jax.train import METHODS, make_config, train
from mie_jax.train.config import VARIANTS
from mie_jax.train.trainer import FUSIONS


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mfeat", choices=DATASETS)
    parser.add_argument("--method", default="mie", choices=METHODS)
    parser.add_argument("--variant", default="paper", choices=VARIANTS)
    parser.add_argument("--fusion", default="average", choices=FUSIONS,
                        help="fusion that selects the model and heads the table")
    parser.add_argument("--data-dir", default=None, help="directory with the dataset's files")
    parser.add_argument("--workdir", default=None, help="default: workdir/<dataset>-<method>-<variant>-seed<N>")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable); an unknown key lists the valid ones")
    parser.add_argument("--resume", action="store_true", help="continue from the workdir's latest checkpoint")
    parser.add_argument("--distributed", action="store_true",
                        help="multi-host: call jax.distributed.initialize() with the --coordinator, "
                             "--num-processes and --process-id given, or from the cluster's environment")
    parser.add_argument("--coordinator", default=None, help="host:port of process 0 (with --distributed)")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.distributed:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    try:
        config = make_config(configs.get_config(args.dataset), args.overrides,
                             method=args.method, variant=args.variant, seed=args.seed)
        workdir = args.workdir or os.path.join(
            "workdir", f"{args.dataset}-{config.method}-{config.variant}-seed{config.seed}")
        if not args.resume and os.path.exists(os.path.join(workdir, "checkpoints")):
            raise ValueError(f"--workdir {workdir} already holds a run; pass --resume or choose another.")
        dataset = load_dataset(args.dataset, config.modalities, config.load_options(args.data_dir))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    title = f"{args.dataset} ({', '.join(config.modalities)}): {config.method}, {config.variant} variant, seed {config.seed}"
    selection_split = "test" if config.select_on == "test" else "validation"
    print(title, file=sys.stderr)
    log = None

    writer = jax.process_index() == 0  # One host writes the logs; Orbax coordinates checkpoints itself.

    def on_phase(record):
        nonlocal log
        if not writer:
            return
        if log is None:
            log = outputs.PhaseLog(workdir, first_phase=record["phase"])
        log.append(record)
        print(outputs.progress_line(record, selection_split), file=sys.stderr, flush=True)

    try:
        results = train(config, dataset, fusion_name=args.fusion, workdir=workdir,
                        resume=args.resume, on_phase=on_phase)
    except (ValueError, FloatingPointError) as error:  # Mismatched checkpoint, bad batch size, NaN.
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not writer:
        return 0
    table = outputs.write_results(workdir, results, title)
    outputs.plot_phase_accuracy(workdir, results["history"], selection_split, title)
    print(table)
    print(f"results, logs and phase_accuracy.png are in {workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
