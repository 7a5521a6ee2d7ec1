"""What a run leaves in its workdir and prints: per-phase logs, the results table, the plot."""

import csv
import json
import os
from typing import Mapping

METRICS = ("accuracy", "macro_f1", "map")


class PhaseLog:
    """Appends each phase to ``phases.jsonl``/``phases.csv`` and its step losses to ``steps.csv``.

    On resume, records of phases at or after the resumed one are dropped first,
    so the files match an uninterrupted run.
    """

    def __init__(self, workdir: str, first_phase: int = 0):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.jsonl = os.path.join(workdir, "phases.jsonl")
        kept = []
        if os.path.exists(self.jsonl):
            with open(self.jsonl) as f:
                kept = [r for r in map(json.loads, f) if r["phase"] < first_phase]
        self._rewrite(kept)

    def _rewrite(self, records):
        with open(self.jsonl, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        self._write_tables(records)

    def _write_tables(self, records):
        with open(os.path.join(self.workdir, "phases.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            names = sorted(records[0]["selection"]) if records else []
            writer.writerow(["phase", "name", "loss"] + [f"{n}_{m}" for n in names for m in METRICS])
            for r in records:
                writer.writerow([r["phase"], r["name"], r["loss"]]
                                + [r["selection"][n][m] for n in names for m in METRICS])
        with open(os.path.join(self.workdir, "steps.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["phase", "name", "step", "loss"])
            for r in records:
                writer.writerows([r["phase"], r["name"], i, loss] for i, loss in enumerate(r["step_losses"]))

    def append(self, record):
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")
        with open(self.jsonl) as f:
            self._write_tables([json.loads(line) for line in f])


def progress_line(record: Mapping, selection_split: str) -> str:
    scores, headline, num_phases = record["selection"], record["headline"], record["num_phases"]
    others = " ".join(f"{n} {v['accuracy']:.3f}" for n, v in sorted(scores.items()) if n != headline)
    return (f"phase {record['phase'] + 1:>3}/{num_phases} | {record['name']:<10} | loss {record['loss']:.4f} | "
            f"{selection_split} acc {headline} {scores[headline]['accuracy']:.3f}"
            + (f" ({others})" if others else ""))


def results_table(results: Mapping, title: str) -> str:
    """A markdown table of the selected model's test metrics, headline first."""
    test = results["test"]
    names = [results["headline"]] + sorted(n for n in test if n != results["headline"])
    lines = [f"### {title}", "",
             f"Selected after phase {results['selected_phase'] + 1} of {results['num_phases']} "
             f"on the **{results['selected_on']}** split"
             + (" (the released code's behaviour: these test numbers are optimistic)"
                if results["selected_on"] == "test" else "") + ".", "",
             "| prediction | accuracy | macro-F1 | MAP |", "|---|---|---|---|"]
    lines += [f"| {n} | {test[n]['accuracy']:.4f} | {test[n]['macro_f1']:.4f} | {test[n]['map']:.4f} |"
              for n in names]
    return "\n".join(lines) + "\n"


def write_results(workdir: str, results: Mapping, title: str) -> str:
    table = results_table(results, title)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(table)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({k: v for k, v in results.items() if k != "history"}, f, indent=2)
    return table


def plot_phase_accuracy(workdir: str, history, selection_split: str, title: str) -> str:
    """Per-phase accuracy of every prediction (the paper's Figure 3), as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = os.path.join(workdir, "phase_accuracy.png")
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
