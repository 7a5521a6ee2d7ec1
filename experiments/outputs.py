"""What a run leaves in its workdir and prints: per-phase logs, the results table, the plot.

Every file is written atomically (:func:`experiments.workdir.atomic_write`).
"""

import csv
import io
import json
import os
from typing import Mapping

from experiments.workdir import atomic_write
from mie_jax.metrics import METRIC_NAMES


class PhaseLog:
    """Writes ``phases.jsonl``/``phases.csv`` (one row per phase) and ``steps.csv`` (its step losses).

    The logs are derived from the records given, never read back: a resumed
    run passes the history its checkpoint holds (so after any kill the logs
    match an uninterrupted run's, and a damaged log is simply rewritten), then
    appends each new phase. Every file is rewritten atomically (a temporary
    file and a rename), so a crash or a full disk leaves the previous version.
    """

    def __init__(self, workdir: str, history=()):
        self.workdir = workdir
        self.jsonl = os.path.join(workdir, "phases.jsonl")
        self.records = list(history)
        self._rewrite()

    def _rewrite(self):
        atomic_write(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.records))
        self._write_tables(self.records)

    def _write_tables(self, records):
        phases = io.StringIO()
        writer = csv.writer(phases)
        names = sorted(records[0]["selection"]) if records else []
        writer.writerow(["phase", "name", "loss"] + [f"{n}_{m}" for n in names for m in METRIC_NAMES])
        for r in records:
            writer.writerow(
                [r["phase"], r["name"], r["loss"]] + [r["selection"][n][m] for n in names for m in METRIC_NAMES]
            )
        atomic_write(os.path.join(self.workdir, "phases.csv"), phases.getvalue())
        steps = io.StringIO()
        writer = csv.writer(steps)
        writer.writerow(["phase", "name", "step", "loss"])
        for r in records:
            writer.writerows([r["phase"], r["name"], i, loss] for i, loss in enumerate(r["step_losses"]))
        atomic_write(os.path.join(self.workdir, "steps.csv"), steps.getvalue())

    def append(self, record):
        self.records.append(record)
        self._rewrite()


def progress_line(record: Mapping, selection_split: str) -> str:
    scores, headline, num_phases = record["selection"], record["headline"], record["num_phases"]
    others = " ".join(f"{n} {v['accuracy']:.3f}" for n, v in sorted(scores.items()) if n != headline)
    return (
        f"phase {record['phase'] + 1:>3}/{num_phases} | {record['name']:<10} | loss {record['loss']:.4f} | "
        f"{selection_split} acc {headline} {scores[headline]['accuracy']:.3f}" + (f" ({others})" if others else "")
    )


def results_table(results: Mapping, title: str) -> str:
    """A markdown table of the selected model's test metrics, headline first."""
    test = results["test"]
    names = [results["headline"]] + sorted(n for n in test if n != results["headline"])
    lines = [
        f"### {title}",
        "",
        f"Selected after phase {results['selected_phase'] + 1} of {results['num_phases']} "
        f"on the **{results['selected_on']}** split"
        + (
            " (the released code's behaviour: these test numbers are optimistic)"
            if results["selected_on"] == "test"
            else ""
        )
        + ".",
        "",
        "| prediction | accuracy | macro-F1 | MAP |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n} | {test[n]['accuracy']:.4f} | {test[n]['macro_f1']:.4f} | {test[n]['map']:.4f} |" for n in names]
    return "\n".join(lines) + "\n"


def write_results(workdir: str, results: Mapping, title: str) -> str:
    table = results_table(results, title)
    atomic_write(
        os.path.join(workdir, "results.json"),
        json.dumps({k: v for k, v in results.items() if k != "history"}, indent=2),
    )
    atomic_write(os.path.join(workdir, "results.md"), table)
    return table


def plot_phase_accuracy(workdir: str, history, selection_split: str, title: str) -> str:
    """Per-phase accuracy of every prediction (the paper's Figure 3), as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = os.path.join(workdir, "phase_accuracy.png")
    if not history:
        return path
    phases = [r["phase"] + 1 for r in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in sorted(history[0]["selection"]):
        ax.plot(phases, [r["selection"][name]["accuracy"] for r in history], marker="o", label=name)
    ax.set_xlabel("phase")
    ax.set_ylabel(f"{selection_split} accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = os.path.join(workdir, ".phase_accuracy.png.tmp")
    try:
        fig.savefig(tmp, dpi=120, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        plt.close(fig)
    return path
