"""The reproduction report: every method on the offline datasets, over seeds, in RESULTS.md.

  python -m experiments.report                 # full grid, 5 seeds (resumable)
  python -m experiments.report --quick         # 2 seeds, shorter training, in reports/quick: a CI-sized check
  python -m experiments.report --emoji-dir data/emoji --jobs 4   # adds the emoji (image + text) setting

Each run's results are stored as JSON under ``--out/runs``; a run whose file
exists is not repeated, so an interrupted report resumes where it stopped.
The table gives mean and standard deviation over seeds of the selected model's
test metrics (selected on validation), and says where the paper's ordering
holds.
"""

import argparse
import concurrent.futures
import json
import os
import re
import sys

import numpy as np

from experiments import configs
from experiments.machine import machine_info
from experiments.xla_cache import enable_compilation_cache
from mie_jax.data.registry import load_dataset
from mie_jax.train import make_config, registry, train
from mie_jax.metrics import METRIC_NAMES

# (label, dataset, config overrides): strong+weak pairs, three views, and image + text.
SETTINGS = (
    ("mfeat fac+mor", "mfeat", {"modalities": ("fac", "mor")}),
    ("mfeat pix+fou", "mfeat", {"modalities": ("pix", "fou")}),
    ("mfeat fac+mor+zer", "mfeat", {"modalities": ("fac", "mor", "zer")}),
    ("emoji image+text", "emoji", {}),
)
# Datasets that are not shipped: their settings run only when their directory is given.
DATA_DIR_FLAGS = {"emoji": "--emoji-dir"}
# (label, method, config values, fusion of the headline): every registered method's report rows.
METHODS = tuple((row.label, spec.name, row.values, row.fusion) for spec in registry.specs() for row in spec.report)
QUICK = {"train": {"outer_iterations": 2, "phase_epochs": 1}}
# The methods with a prediction per modality, drawn in the per-phase figure (the paper's Figure 3).
FIGURE_METHODS = ("unimodal", "MLA", "MIE w/o SAM", "MIE w/o GM", "MIE")


def slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def run_name(setting, method, seed):
    return slug(f"{setting} {method} seed{seed}")


def run_one(job):
    """Trains one (setting, method, seed) and writes its result JSON; returns the path."""
    path, dataset_name, data_dir, values, method, fusion_name, seed = job
    enable_compilation_cache()
    config = make_config(configs.merge(configs.get_config(dataset_name), values), method=method, seed=seed)
    dataset = load_dataset(dataset_name, config.modalities, config.load_options(data_dir))
    results = train(config, dataset, fusion_name=fusion_name)
    summary = {k: v for k, v in results.items() if k != "history"}
    summary["machine"] = machine_info()
    summary["phase_accuracy"] = [
        {name: m["accuracy"] for name, m in r["selection"].items()} for r in results["history"]
    ]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(summary, f)
    os.replace(tmp, path)  # A killed run leaves no half-written result behind.
    return path


def settings_to_run(data_dirs):
    """The settings whose data is at hand: shipped, or with a directory in ``data_dirs``."""
    return [s for s in SETTINGS if s[1] not in DATA_DIR_FLAGS or data_dirs.get(s[1])]


def plan(out, seeds, quick, data_dirs, train_settings=None):
    """Every (setting, method row, seed) run as a job; ``train_settings`` (labels) limits the settings."""
    jobs = []
    for setting, dataset_name, setting_values in settings_to_run(data_dirs):
        if train_settings is not None and setting not in train_settings:
            continue
        # Seed-major: parallel workers start on different methods, and each later seed of a
        # method finds its programs in the compilation cache.
        for seed in range(seeds):
            for label, method, method_values, fusion_name in METHODS:
                path = os.path.join(out, "runs", run_name(setting, label, seed) + ".json")
                values = configs.merge(setting_values, method_values, QUICK if quick else {})
                jobs.append((path, dataset_name, data_dirs.get(dataset_name), values, method, fusion_name, seed))
    return jobs


def mean_std(values):
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def load_runs(out, setting, label, seeds):
    """The stored results of the row's seeds; ``None`` unless every seed has run."""
    paths = [os.path.join(out, "runs", run_name(setting, label, s) + ".json") for s in range(seeds)]
    if not all(os.path.exists(path) for path in paths):
        return None
    return [json.load(open(path)) for path in paths]


def plot_phase_accuracy(out, setting, seeds, path):
    """Validation accuracy of each modality after every phase, mean and spread over seeds, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {label: load_runs(out, setting, label, seeds) for label in FIGURE_METHODS}
    runs = {label: results for label, results in runs.items() if results is not None}
    modalities = sorted(runs["MIE"][0]["phase_accuracy"][0])
    fig, axes = plt.subplots(1, len(modalities), figsize=(4 * len(modalities), 3.6), squeeze=False)
    for ax, modality in zip(axes[0], modalities):
        for label, results in runs.items():
            if modality not in results[0]["phase_accuracy"][0]:
                continue
            curves = np.array([[phase[modality] for phase in r["phase_accuracy"]] for r in results])
            phases = np.arange(1, curves.shape[1] + 1)
            mean, std = curves.mean(0), curves.std(0)
            ax.plot(phases, mean, marker="o", markersize=3, label=label)
            ax.fill_between(phases, mean - std, mean + std, alpha=0.15)
        ax.set_title(f"{setting}: {modality}")
        ax.set_xlabel("phase")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation accuracy")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_path(out, setting):
    return os.path.join(out, "figures", f"phase_accuracy_{slug(setting)}.png")


def command(quick, data_dirs) -> str:
    """The command line that makes this report (data directories as DIR: they differ by machine)."""
    flags = [" --quick"] if quick else []
    flags += [f" {flag} DIR" for name, flag in DATA_DIR_FLAGS.items() if data_dirs.get(name)]
    return "python -m experiments.report" + "".join(flags)


def summarise(out, seeds, quick, data_dirs, figures=None) -> str:
    """The markdown report; ``figures`` maps a setting to its per-phase figure's link."""
    figures = figures or {}
    lines = [
        "# Results on real offline data",
        "",
        f"Made by `{command(quick, data_dirs)}`: test metrics of the model "
        f"selected on the validation split, mean ± standard deviation over {seeds} seeds "
        "(on mfeat each seed also draws the data split; emoji's split is fixed). Headline prediction: "
        "the average of the per-modality softmax outputs (MLA and the weighted row: entropy-weighted "
        "fusion; joint methods: their own output). Each section ends with how the differences compare "
        "with the spread over seeds, and shows the validation accuracy of each modality after every "
        "phase (the paper's Figure 3).",
        "",
    ]
    skipped = [
        f"{setting} (needs {DATA_DIR_FLAGS[name]})"
        for setting, name, _ in SETTINGS
        if (setting, name, _) not in settings_to_run(data_dirs)
    ]
    if skipped:
        lines += ["Not run here: " + ", ".join(skipped) + ".", ""]
    overview = [
        "## Where the paper's ordering holds",
        "",
        "Differences in mean test accuracy, with the larger of the two standard deviations over seeds "
        "in brackets: MIE against the best method that is not MIE, and against MIE with one part "
        "removed (positive: MIE is ahead, as the paper reports).",
        "",
        "| setting | MIE | best peer | MIE - best peer | MIE - (w/o SAM) | MIE - (w/o GM) |",
        "|---|---|---|---|---|---|",
    ]
    sections, verdicts = [], {}
    for setting, _, _ in settings_to_run(data_dirs):
        rows, headline_acc, headline_std, machines, not_run = [], {}, {}, set(), []
        for label, method, _, fusion_name in METHODS:
            results = load_runs(out, setting, label, seeds)
            if results is None:
                not_run.append(label)
                continue
            machines.update(machine_name(r["machine"]) for r in results)
            headline = results[0]["headline"]
            acc = [r["test"][headline]["accuracy"] for r in results]
            headline_acc[label], headline_std[label] = np.mean(acc), np.std(acc)
            modalities = sorted(n for n in results[0]["test"] if n not in ("average", "weighted", "joint"))
            per_modality = ", ".join(
                f"{m} {np.mean([r['test'][m]['accuracy'] for r in results]):.3f}" for m in modalities
            )
            rows.append(
                f"| {label} | "
                + " | ".join(mean_std([r["test"][headline][k] for r in results]) for k in METRIC_NAMES)
                + f" | {per_modality or '—'} |"
            )
        overview.append(overview_row(setting, headline_acc, headline_std))
        verdicts.setdefault(lead_verdict(headline_acc, headline_std), []).append(setting)
        sections += [
            f"## {setting}",
            "",
            f"Ran on {' and '.join(sorted(machines))}.",
            "",
            "| method | accuracy | macro-F1 | MAP | per-modality accuracy |",
            "|---|---|---|---|---|",
            *rows,
            "",
            *([f"Not run yet ({seeds} seeds each): {', '.join(not_run)}.", ""] if not_run else []),
            ordering_sentence(headline_acc, headline_std),
            "",
        ]
        if setting in figures:
            sections += [f"![{setting}: validation accuracy per phase]({figures[setting]})", ""]
    overview += [
        "",
        "In short: " + "; ".join(f"{verdict} on {', '.join(names)}" for verdict, names in verdicts.items()) + ".",
        "",
    ]
    return "\n".join(lines + overview + sections)


def machine_name(machine) -> str:
    """A run's machine in a few words: the accelerator, or the CPU when there is none."""
    processor = (
        f"{machine['cpu']} ({machine['cpu_count']} cores)" if machine["backend"] == "cpu" else machine["device_kind"]
    )
    return f"{processor}, jax {machine['jax']}"


def strongest_peer(acc) -> str:
    return max((k for k in acc if not k.startswith("MIE")), key=acc.get)


def lead_verdict(acc, std) -> str:
    """Whether MIE's lead over its best peer stands out from the spread over seeds."""
    peer = strongest_peer(acc)
    gap, spread = acc["MIE"] - acc[peer], max(std["MIE"], std[peer])
    if gap > spread:
        return "MIE is ahead by more than one standard deviation"
    return "MIE is ahead, within one standard deviation" if gap > 0 else "MIE is behind its best peer"


def overview_row(setting, acc, std) -> str:
    """One setting's line of the overview: MIE's lead over its best peer and over each ablation."""

    def lead(other):
        return f"{acc['MIE'] - acc[other]:+.4f} ({max(std['MIE'], std[other]):.4f})"

    peer = strongest_peer(acc)
    return (
        f"| {setting} | {acc['MIE']:.4f} | {peer} ({acc[peer]:.4f}) | {lead(peer)} | "
        f"{lead('MIE w/o SAM')} | {lead('MIE w/o GM')} |"
    )


def ordering_sentence(acc, std) -> str:
    """Where the paper's claims hold (MIE above every peer, each component helping), and how firmly."""
    ranked = sorted(acc, key=acc.get, reverse=True)
    best_peer = strongest_peer(acc)
    claims = [
        f"MIE ({acc['MIE']:.4f}) {'beats' if acc['MIE'] > acc[best_peer] else 'does not beat'} the best peer "
        f"({best_peer}, {acc[best_peer]:.4f})",
        f"removing SAM {'lowers' if acc['MIE w/o SAM'] < acc['MIE'] else 'does not lower'} accuracy",
        f"removing gradient modification {'lowers' if acc['MIE w/o GM'] < acc['MIE'] else 'does not lower'} it",
        f"both together {'beat' if acc['MIE'] > acc['unimodal'] else 'do not beat'} neither (unimodal)",
    ]
    gap, spread = acc["MIE"] - acc[best_peer], max(std["MIE"], std[best_peer])
    firmness = (
        f"The gap between MIE and the best peer ({gap:+.4f}) is "
        + ("larger" if abs(gap) > spread else "smaller")
        + f" than one standard deviation over seeds ({spread:.4f})."
    )
    return "Ranking by mean accuracy: " + " > ".join(ranked) + ". " + "; ".join(claims) + ". " + firmness


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="runs and figures (default: reports; reports/quick with --quick)")
    parser.add_argument("--seeds", type=int, default=None, help="default: 5 (2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="2 seeds and shorter training")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument(
        "--train-settings",
        default=None,
        help="train only these settings (comma-separated labels, e.g. 'mfeat fac+mor'); the report still "
        "covers every setting at hand, listing the rows not run yet",
    )
    parser.add_argument(
        "--results",
        default=None,
        help="where to write the markdown report (default: RESULTS.md; <out>/RESULTS.md with --quick)",
    )
    parser.add_argument(
        "--emoji-dir",
        default=None,
        help="the directory of emoji.npz (python -m mie_jax.data.emoji DIR); without it, no emoji runs",
    )
    args = parser.parse_args(argv)
    # A quick report trains differently under the same run names: it never reads or overwrites
    # the committed full runs and RESULTS.md.
    if args.out is None:
        args.out = os.path.join("reports", "quick") if args.quick else "reports"
    if args.results is None:
        args.results = os.path.join(args.out, "RESULTS.md") if args.quick else "RESULTS.md"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    data_dirs = {"emoji": args.emoji_dir}
    os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
    train_settings = None if args.train_settings is None else set(args.train_settings.split(","))
    unknown = sorted((train_settings or set()) - {setting for setting, _, _ in SETTINGS})
    if unknown:
        print(
            f"error: --train-settings names {unknown}; expected labels of {[s[0] for s in SETTINGS]}.", file=sys.stderr
        )
        return 2
    todo = [job for job in plan(args.out, seeds, args.quick, data_dirs, train_settings) if not os.path.exists(job[0])]
    print(f"{len(todo)} runs to do", file=sys.stderr)
    if args.jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
            for done, path in enumerate(pool.map(run_one, todo), 1):
                print(f"[{done}/{len(todo)}] {os.path.basename(path)}", file=sys.stderr, flush=True)
    else:
        for done, job in enumerate(todo, 1):
            run_one(job)
            print(f"[{done}/{len(todo)}] {os.path.basename(job[0])}", file=sys.stderr, flush=True)
    figures = {}
    for setting, _, _ in settings_to_run(data_dirs):
        path = figure_path(args.out, setting)
        plot_phase_accuracy(args.out, setting, seeds, path)
        figures[setting] = os.path.relpath(path, os.path.dirname(os.path.abspath(args.results)))
    report = summarise(args.out, seeds, args.quick, data_dirs, figures)
    with open(args.results, "w") as f:
        f.write(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
