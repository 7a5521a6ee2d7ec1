"""What every benchmark writes: where the numbers come from, and the JSON and markdown files."""

import json
import re
import sys
from pathlib import Path

from experiments.machine import load_average, machine_info  # noqa: F401 (the benchmarks' own record too)

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def write(out: Path, name: str, report: dict) -> None:
    """Writes ``report`` as ``<out>/<name>_<hostname>.json`` and its ``"markdown"`` as ``.md``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{name}_" + (re.sub(r"[^A-Za-z0-9_.-]", "_", report["machine"]["hostname"]) or "cpu")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(report["markdown"])
    print(f"wrote {out / stem}.json and .md", file=sys.stderr)
