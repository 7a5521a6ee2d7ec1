"""Device memory of the paper datasets' training, evaluation and covariance functions, and host memory of a run.

  python -m benchmarks.memory                # every paper dataset at n and 10n, then host memory at n and 4n
  python -m benchmarks.memory --quick        # n only, one dataset's functions once each: a smoke run
  python -m benchmarks.memory --datasets cremad,sarcasm --no-host
  python -m benchmarks.memory --out DIR      # default: benchmarks/results

**Device memory, compiled and not run.** For every paper dataset's config
(``experiments/configs/<name>.py`` through ``make_config``, method ``mie``
unless ``--method``), a synthetic dataset of the published split sizes whose
columns only know their shape and dtype (:class:`ZeroColumn`) builds the
trainer's method (:func:`mie_jax.train.trainer.build_method`). For each
modality, three functions the trainer runs are lowered with abstract inputs
(``jax.ShapeDtypeStruct``) and compiled, and XLA's memory plan
(``Compiled.memory_analysis()``: arguments + outputs + temporaries) is read:

- ``train``: the phase's chunk, ``plan.run_chunk(constants, carry, batches)``
  with the trainer's chunk of ``K`` steps (:func:`mie_jax.train.feed.chunk_steps`);
- ``eval``: ``method.predicts[m]`` on one batch of ``train.eval_batch_size``;
- ``covariance``: the covariance pass's jitted group function on ``group``
  batches of ``mie.covariance_batch_size`` (as ``finish_phase`` calls it).

It does so at the published training-split size ``n`` and at ``10n``: the
plans must be equal (nothing on the device grows with the split).

**Host memory, run.** A CREMA-D in the published layout of ``n`` and ``4n``
synthetic clips (tone wavs, random jpg frames) is prepared by the TFDS builder
and trained for one chunk by :func:`mie_jax.train.trainer.train` (small
images and encoders), each size in a fresh subprocess whose peak resident set
(``VmHWM``, the process image's high-water mark) is read after preparing and after training.
"""

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from benchmarks import results_files as results
from mie_jax.data import columns

PAPER_DATASETS = ("cremad", "kinetics_sounds", "twitter2015", "sarcasm", "nvgesture")
GIB = 2**30
BUDGET_BYTES = 24 * 10**9  # The paper's GPU: a 24 GB RTX 3090.
F32, U8, I32 = "float32", "uint8", "int32"
# The published splits and example shapes (the builders' features; spectrograms get a channel axis,
# text becomes 64 WordPiece ids). held_out: no published validation split, 10% of training is held out.
PUBLISHED = {
    "cremad": {
        "splits": {"train": 6698, "test": 744},
        "held_out": True,
        "classes": 6,
        "inputs": {"audio": ((257, 188, 1), F32), "visual": ((1, 224, 224, 3), U8)},
    },
    "kinetics_sounds": {
        "splits": {"train": 14799, "test": 2597},
        "held_out": True,
        "classes": 31,
        "inputs": {"audio": ((257, 454, 1), F32), "visual": ((3, 224, 224, 3), U8)},
    },
    "twitter2015": {
        "splits": {"train": 3179, "validation": 1122, "test": 1037},
        "held_out": False,
        "classes": 3,
        "inputs": {"image": ((224, 224, 3), U8), "text": ((64,), I32)},
    },
    "sarcasm": {
        "splits": {"train": 19816, "validation": 2410, "test": 2409},
        "held_out": False,
        "classes": 2,
        "inputs": {"image": ((224, 224, 3), U8), "text": ((64,), I32)},
    },
    "nvgesture": {
        "splits": {"train": 1050, "test": 482},
        "held_out": True,
        "classes": 25,
        "inputs": {"depth": ((8, 112, 112, 1), U8), "rgb": ((8, 112, 112, 3), U8), "flow": ((8, 112, 112, 2), U8)},
    },
}
FUNCTIONS = ("train", "eval", "covariance")
# Host memory: CREMA-D clips of the small run, at n and HOST_SCALE * n.
HOST_N = 150
HOST_SCALE = 4
HOST_SETTINGS = (
    "data.image_size=32",
    "model.resnet_width=8",
    "model.dim=32",
    "train.batch_size=8",
    "train.chunk_steps=4",
    "train.eval_batch_size=32",
    "mie.covariance_batch_size=4",
)
CREMAD_LABELS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


class ZeroColumn(columns.Column):
    """A column of ``length`` rows of zeros: a shape and a dtype, no data."""

    def __init__(self, length: int, example_shape, dtype):
        self.shape = (int(length), *example_shape)
        self.dtype = np.dtype(dtype)

    def __getitem__(self, indices) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        return np.zeros((*indices.shape, *self.shape[1:]), self.dtype)


def split_sizes(name: str, scale: int = 1) -> Dict[str, int]:
    """The split sizes the trainer sees (published training split less the held-out 10%), times ``scale``."""
    published = PUBLISHED[name]
    sizes = {split: count * scale for split, count in published["splits"].items()}
    if published["held_out"]:
        train = sizes.pop("train")
        sizes["validation"] = round(train * 0.1)
        sizes["train"] = train - sizes["validation"]
    return sizes


def synthetic_dataset(name: str, scale: int = 1):
    """A :class:`MultimodalDataset` of the published sizes (times ``scale``) whose columns hold no data."""
    from mie_jax.data.registry import MultimodalDataset, Split

    published = PUBLISHED[name]
    splits = {}
    for split, count in split_sizes(name, scale).items():
        inputs = {m: ZeroColumn(count, shape, dtype) for m, (shape, dtype) in published["inputs"].items()}
        labels = (np.arange(count) % published["classes"]).astype(np.int32)
        splits[split] = Split(inputs, labels)
    return MultimodalDataset(name, tuple(published["inputs"]), published["classes"], splits)


def abstract(tree):
    """Every array leaf of ``tree`` as a ``jax.ShapeDtypeStruct`` (PRNG key arrays included)."""
    import jax

    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def tree_bytes(tree) -> int:
    import jax

    return int(
        sum(
            np.prod(a.shape) * np.dtype(a.dtype).itemsize
            for a in jax.tree.leaves(tree)
            if hasattr(a, "shape") and np.issubdtype(np.dtype(a.dtype), np.number)
        )
    )


def memory_plan(lowered) -> dict:
    """Compiles ``lowered`` and returns XLA's memory plan in bytes, with the compile's seconds."""
    started = time.perf_counter()
    compiled = lowered.compile()
    seconds = time.perf_counter() - started
    analysis = compiled.memory_analysis()
    plan = {key: int(getattr(analysis, f"{key}_size_in_bytes")) for key in ("argument", "output", "temp", "alias")}
    plan["generated_code"] = int(getattr(analysis, "generated_code_size_in_bytes", 0))
    # Aliased outputs reuse argument buffers (none here: nothing is donated).
    plan["peak_bytes"] = plan["argument"] + plan["output"] + plan["temp"] - plan["alias"]
    plan["compile_seconds"] = round(seconds, 1)
    return plan


def alternating_phase(method, modality: str) -> int:
    """The first phase that trains ``modality`` (for methods trained one modality at a time)."""
    return next(p for p in range(method.num_phases) if method.phase_name(p) == modality)


def few_draws_plan(method, state, phase: int):
    """``method.phase_plan(state, phase)`` with the phase's host draws made over one batch of rows.

    The draws (batch order, mixup, crop boxes) are host data, not part of the
    compiled programs; only their per-step shapes are. Drawing a crop box is a
    Python call per image (``mie_jax.data.crops.crop_draws``): minutes for a
    phase of 10n examples. The step count and so the chunk ``K`` come from
    ``plan.steps_per_epoch``, the real split's.
    """
    labels = method.labels
    method.labels = labels[: method.config.train.batch_size]
    try:
        plan = method.phase_plan(state, phase)
    finally:
        method.labels = labels
    return plan._replace(steps_per_epoch=method.steps_per_epoch)


def lower_functions(method, functions=FUNCTIONS) -> Dict[str, Dict[str, Any]]:
    """modality -> function -> ``(lowered, notes)`` for ``method``'s training chunk, prediction and covariance group.

    Only for the alternating methods (one classifier per modality), the methods
    of the paper's configs.
    """
    import jax

    from mie_jax.train import feed

    config = method.config
    train, gm = config.train, config.mie
    state = method.init()
    lowered = {}
    for m in method.modalities:
        phase = alternating_phase(method, m)
        params, model_state = state["params"][m], state["model_state"][m]
        shape, dtype = method.inputs[m].shape[1:], method.inputs[m].dtype
        out = {}
        if "train" in functions:
            plan = few_draws_plan(method, state, phase)
            k = plan.chunk_steps(train.chunk_steps)
            one = jax.device_put(feed.host_chunk(plan.columns, plan.labels, plan.draws, 0, 1))
            batches = jax.tree.map(lambda a: jax.ShapeDtypeStruct((k, *a.shape[1:]), a.dtype), one)
            out["train"] = (
                plan.run_chunk.lower(abstract(plan.constants), abstract(plan.carry), batches),
                {
                    "chunk_steps": k,
                    "batch_size": train.batch_size,
                    "phase": phase,
                    "steps_per_epoch": plan.steps_per_epoch,
                    "chunk_input_bytes": tree_bytes(batches),
                },
            )
        if "eval" in functions:
            x = jax.ShapeDtypeStruct((train.eval_batch_size, *shape), dtype)
            out["eval"] = (
                method.predicts[m].lower(abstract(params), abstract(model_state), x),
                {"batch_size": train.eval_batch_size},
            )
        if "covariance" in functions:
            group = max(1, train.eval_batch_size // gm.covariance_batch_size)
            fn = method.covariance_passes[m].group_of_batches
            batches = jax.ShapeDtypeStruct((group, gm.covariance_batch_size, *shape), dtype)
            valid = jax.ShapeDtypeStruct((group,), np.bool_)
            out["covariance"] = (
                # The pass starts from zero sums shaped as the state's (one per layer T acts on).
                fn.lower(abstract(params), abstract(model_state), abstract(state["covariance"][m]), batches, valid),
                {"group": group, "batch_size": gm.covariance_batch_size},
            )
        lowered[m] = out
    return lowered


def dataset_config(name: str, method: str, overrides=()):
    from experiments import configs
    from mie_jax.train.config import make_config

    return make_config(configs.get_config(name), overrides, method=method)


def measure_dataset(
    name: str, method_name: str, scales, functions=FUNCTIONS, overrides=(), log=print, compile_every_scale: bool = True
) -> dict:
    """XLA's plans of ``name``'s functions at each training-split scale; equal across scales or flagged.

    ``compile_every_scale=False`` compiles a later scale only where its lowered
    program differs from the first scale's (a program identical in text has the same plan).
    """
    from mie_jax.models import bert
    from mie_jax.models.encoders import encoder_names
    from mie_jax.train.trainer import build_method

    config = dataset_config(name, method_name, overrides)
    if not config.reads("alternating"):
        raise ValueError(
            f"--method {method_name}: only the alternating methods (mie, mie_no_sam, mie_no_gm, unimodal) are measured."
        )
    encoders = encoder_names(config, config.modalities)
    record = {
        "dataset": name,
        "method": method_name,
        # As the flat config wrote it: one name, or modality=name,... for one per modality.
        "encoder": config.model.encoder
        if isinstance(config.model.encoder, str)
        else ",".join(f"{m}={e}" for m, e in config.model.encoder.items()),
        "batch_size": config.train.batch_size,
        "eval_batch_size": config.train.eval_batch_size,
        "covariance_batch_size": config.mie.covariance_batch_size,
        "dim": config.model.dim,
        "train_rows": {},
        "modalities": {},
    }
    if "bert" in encoders.values():
        record["bert_dir"] = config.model.bert_dir or f"{bert.default_minilm_dir()} (all-MiniLM-L6-v2, the default)"
    for scale in scales:
        dataset = synthetic_dataset(name, scale)
        started = time.perf_counter()
        method = build_method(config, dataset, None)
        state_bytes = tree_bytes(method.init())
        record["train_rows"][str(scale)] = len(dataset.splits["train"].labels)
        lowered = lower_functions(method, functions)
        log(f"{name} x{scale}: built and lowered in {time.perf_counter() - started:.0f} s")
        for m, by_function in lowered.items():
            entry = record["modalities"].setdefault(
                m, {"input": list(method.inputs[m].shape[1:]), "dtype": str(method.inputs[m].dtype)}
            )
            entry.setdefault("state_bytes", state_bytes)
            for function, (low, notes) in by_function.items():
                text = low.as_text()
                fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
                first = entry.get(function, {}).get("by_scale", {}).get(str(scales[0]))
                if first is not None and not compile_every_scale and first["program"] == fingerprint:
                    # The very same program as at the first scale: the same plan (not compiled again).
                    plan = {**first, "compiled": False, "compile_seconds": 0.0}
                    log(f"  {m} {function} x{scale}: the same program as x{scales[0]} (not compiled again)")
                    entry[function]["by_scale"][str(scale)] = plan
                    continue
                plan = {**memory_plan(low), "program": fingerprint, "compiled": True}
                log(
                    f"  {m} {function} x{scale}: peak {plan['peak_bytes'] / GIB:.2f} GiB "
                    f"(args {plan['argument'] / GIB:.2f}, out {plan['output'] / GIB:.2f}, "
                    f"temp {plan['temp'] / GIB:.2f}), compiled in {plan['compile_seconds']} s"
                )
                entry.setdefault(function, {"by_scale": {}, **notes})["by_scale"][str(scale)] = plan
        del method, lowered
    worst = 0
    for m, entry in record["modalities"].items():
        for function in functions:
            by_scale = entry[function]["by_scale"]
            peaks = {s: p["peak_bytes"] for s, p in by_scale.items()}
            entry[function]["peak_bytes"] = peaks[str(scales[0])]
            entry[function]["same_at_every_scale"] = len(set(peaks.values())) == 1
            worst = max(worst, *peaks.values())
        # While a phase trains, the device also holds every other modality's state and the prefetched chunk.
        train = entry.get("train")
        if train:
            own = train["by_scale"][str(scales[0])]["argument"] - train["chunk_input_bytes"]
            entry["train"]["device_estimate_bytes"] = (
                train["peak_bytes"] + train["chunk_input_bytes"] + max(0, entry["state_bytes"] - own)
            )
            worst = max(worst, entry["train"]["device_estimate_bytes"])
    record["peak_bytes"] = {
        f"{m}/{f}": entry[f]["peak_bytes"] for m, entry in record["modalities"].items() for f in functions
    }
    record["max_bytes"] = worst
    record["fits_24gb"] = worst <= BUDGET_BYTES
    record["same_at_every_scale"] = all(
        entry[f]["same_at_every_scale"] for entry in record["modalities"].values() for f in functions
    )
    return record


# --- host memory: preparing and training a CREMA-D of n and 4n clips ---


def write_wav(path: Path, seconds: float, rate: int, frequency: float) -> None:
    times = np.arange(int(seconds * rate)) / rate
    pcm = np.round(0.5 * 32767 * np.sin(2 * np.pi * frequency * times)).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def write_cremad(root: Path, counts: Dict[str, int], seed: int = 0) -> None:
    """A CREMA-D in the peers' layout: ``<split>.csv``, a 3 s tone wav and 3 jpg frames per clip."""
    from PIL import Image

    from mie_jax.data.builders import builder_class

    builder = builder_class("cremad")
    audio_dir, frames_dir = builder.AUDIO_DIR, builder.FRAMES_DIR
    rng = np.random.default_rng(seed)
    (root / audio_dir).mkdir(parents=True, exist_ok=True)
    clip = 0
    for split, count in counts.items():
        rows = []
        for _ in range(count):
            label = CREMAD_LABELS[clip % len(CREMAD_LABELS)]
            name = f"{1001 + clip}_DFA_{label}_XX"
            write_wav(root / audio_dir / f"{name}.wav", 3.0, 22050, 200.0 + 10 * (clip % 50))
            folder = root / frames_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(1, 4):
                Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"frame_{i:05d}.jpg")
            rows.append(f"{name},{label}\n")
            clip += 1
        (root / f"{split}.csv").write_text("".join(rows))


def peak_rss_bytes() -> int:
    """This process's peak resident set so far.

    ``VmHWM`` of ``/proc/self/status`` where there is one: the high-water mark
    of this process image alone. ``getrusage``'s ``ru_maxrss`` survives
    ``exec`` on Linux, so a child started by a large parent would report the
    parent's size; it is the fallback elsewhere (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> Optional[int]:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def host_child(raw: str, prepared: str, settings) -> dict:
    """In a fresh process: prepare the raw CREMA-D, load it, train one chunk; peak RSS after each stage."""
    out = {"start_rss": current_rss_bytes()}
    import jax  # noqa: F401 (loaded before measuring, as every stage needs it)

    from experiments import configs
    from mie_jax.data import builders
    from mie_jax.data.registry import load_dataset
    from mie_jax.train import trainer
    from mie_jax.train.config import make_config

    config = make_config(configs.get_config("cremad"), [*settings, f"data.prepared_dir={prepared}"], method="mie")
    out["imports_peak_rss"] = peak_rss_bytes()
    started = time.perf_counter()
    builders.prepare(builders.builder_class("cremad"), raw, prepared, image_size=config.data.image_size)
    out["prepare_seconds"] = time.perf_counter() - started
    out["prepare_peak_rss"] = peak_rss_bytes()
    dataset = load_dataset("cremad", config.modalities, config.load_options(raw))
    out["train_rows"] = int(len(dataset.splits["train"].labels))
    out["train_bytes_on_disk_decoded"] = int(
        sum(int(np.prod(c.shape)) * np.dtype(c.dtype).itemsize for c in dataset.splits["train"].inputs.values())
    )
    started = time.perf_counter()
    trainer.train(config, dataset, quiet=True, stop_after_steps=config.train.chunk_steps)
    out["train_seconds"] = time.perf_counter() - started
    out["train_peak_rss"] = peak_rss_bytes()
    out["end_rss"] = current_rss_bytes()
    return out


def _compilation_cache_dir() -> Optional[str]:
    if "jax" not in sys.modules:
        return None
    import jax

    return jax.config.jax_compilation_cache_dir or None


def measure_host(n: int, scale: int, settings, log=print) -> List[dict]:
    """Peak RSS of preparing and training one chunk, at ``n`` and ``scale * n`` training clips, each in a subprocess."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="mie_memory_") as tmp:
        for size in (n, scale * n):
            root = Path(tmp) / f"n{size}"
            counts = {"train": size, "test": max(8, size // 8)}
            started = time.perf_counter()
            write_cremad(root / "raw", counts)
            log(f"host: wrote {size} + {counts['test']} clips in {time.perf_counter() - started:.0f} s")
            command = [
                sys.executable,
                "-m",
                "benchmarks.memory",
                "--host-child",
                str(root / "raw"),
                "--prepared",
                str(root / "prepared"),
                "--set",
                *settings,
            ]
            env = dict(os.environ)
            cache = _compilation_cache_dir()
            if cache:  # The caller's compilation cache (e.g. the test session's) serves the child's compiles too.
                env.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
            result = subprocess.run(
                command, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent
            )
            if result.returncode:
                raise RuntimeError(f"host child for n={size} failed:\n{result.stderr[-4000:]}")
            row = json.loads(result.stdout.strip().splitlines()[-1])
            row.update({"clips": counts, "published_train": size})
            log(
                f"host: n={size}: peak RSS {row['train_peak_rss'] / 2**20:.0f} MiB "
                f"(after preparing {row['prepare_peak_rss'] / 2**20:.0f} MiB), "
                f"prepare {row['prepare_seconds']:.0f} s, train {row['train_seconds']:.0f} s"
            )
            rows.append(row)
    return rows


# --- the report ---


def same_text(item: dict) -> str:
    """yes/NO, and whether the later scales were compiled or had the very same program."""
    later = list(item["by_scale"].values())[1:]
    if not later:
        return "-"
    how = "compiled" if all(p.get("compiled", True) for p in later) else "same program"
    return f"{'yes' if item['same_at_every_scale'] else 'NO'} ({how})"


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def to_markdown(machine, command, settings, records, host_rows) -> str:
    lines = [
        "# Memory",
        "",
        f"Machine: {machine['hostname']}, {machine['platform']}, {machine['cpu']} ({machine['cpu_count']} CPUs); "
        f"jax {machine['jax']}, backend {machine['backend']}; python {machine['python']}; {machine['date_utc']} UTC.",
        "",
        f"Command: `{command}`",
        "",
    ]
    if records:
        scales = settings["scales"]
        lines += [
            f"## Device: XLA's memory plan (CPU backend, compiled with abstract inputs, nothing run), "
            f"method `{settings['method']}`",
            "",
            "peak = arguments + outputs + temporaries (GiB). train: `plan.run_chunk` over a chunk of K steps; "
            "eval: `method.predicts[m]` on one `train.eval_batch_size` batch; covariance: the covariance pass's group "
            f"of batches. `same at {'/'.join(f'{s}n' for s in scales)}`: the plan at each training-split scale "
            "is identical. device est.: the train peak + the prefetched next chunk + the other modalities' "
            "state (what the device holds during a phase).",
            "",
            "| dataset | modality | function | batch | args | out | temp | **peak** | device est. | "
            f"same at {'/'.join(f'{s}n' for s in scales)} | compile s |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        for record in records:
            for m, entry in record["modalities"].items():
                for function in settings["functions"]:
                    item = entry[function]
                    plan = item["by_scale"][str(scales[0])]
                    batch = (
                        f"{item['chunk_steps']} x {item['batch_size']}"
                        if function == "train"
                        else f"{item['group']} x {item['batch_size']}"
                        if function == "covariance"
                        else str(item["batch_size"])
                    )
                    estimate = _gib(item["device_estimate_bytes"]) if "device_estimate_bytes" in item else ""
                    lines.append(
                        f"| {record['dataset']} | {m} | {function} | {batch} | {_gib(plan['argument'])} | "
                        f"{_gib(plan['output'])} | {_gib(plan['temp'])} | **{_gib(plan['peak_bytes'])}** | "
                        f"{estimate} | {same_text(item)} | "
                        f"{plan['compile_seconds']} |"
                    )
        lines += [
            "",
            "| dataset | encoder | training rows (per scale) | largest (GiB) | fits 24 GB | text encoder |",
            "|---|---|---|---:|---|---|",
        ]
        for record in records:
            rows = ", ".join(f"{v} ({k}n)" for k, v in record["train_rows"].items())
            lines.append(
                f"| {record['dataset']} | {record['encoder']} | {rows} | {_gib(record['max_bytes'])} | "
                f"{'yes' if record['fits_24gb'] else 'NO'} | {record.get('bert_dir', '-')} |"
            )
    if host_rows:
        first, last = host_rows[0], host_rows[-1]
        growth = last["train_peak_rss"] - first["train_peak_rss"]
        data_growth = last["train_bytes_on_disk_decoded"] - first["train_bytes_on_disk_decoded"]
        lines += [
            "",
            "## Host: peak resident set of preparing and training one chunk (CREMA-D layout, synthetic clips)",
            "",
            f"Settings: `{' '.join(settings['host_settings'])}`; each size in a fresh subprocess; "
            "peak RSS (`VmHWM`) after the TFDS builder prepared the split and after `trainer.train(..., "
            "stop_after_steps=train.chunk_steps)` (one chunk, then the test split's batched evaluation).",
            "",
            "| published train clips | training rows | decoded training split MiB | peak RSS after preparing MiB "
            "| peak RSS after one chunk MiB | prepare s | train s |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in host_rows:
            lines.append(
                f"| {row['published_train']} | {row['train_rows']} | "
                f"{row['train_bytes_on_disk_decoded'] / 2**20:.0f} | {row['prepare_peak_rss'] / 2**20:.0f} | "
                f"{row['train_peak_rss'] / 2**20:.0f} | {row['prepare_seconds']:.0f} | "
                f"{row['train_seconds']:.0f} |"
            )
        lines += [
            "",
            f"Peak RSS grew by {growth / 2**20:.0f} MiB while the decoded training split grew by "
            f"{data_growth / 2**20:.0f} MiB.",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(PAPER_DATASETS), help="comma-separated paper datasets")
    parser.add_argument("--method", default="mie", help="an alternating method (default mie)")
    parser.add_argument("--functions", default=",".join(FUNCTIONS), help=f"comma-separated of {FUNCTIONS}")
    parser.add_argument("--scales", default="1,10", help="training-split scales compiled (default 1,10)")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        dest="overrides",
        help="config overrides section.key=value for every dataset (e.g. model.resnet_width=8 in a test); "
        "mie.* only with a method that reads it",
    )
    parser.add_argument("--no-host", action="store_true", help="skip the host-memory runs")
    parser.add_argument(
        "--compile-first-scale-only",
        action="store_true",
        help="compile later scales only where the lowered program differs from the first's",
    )
    parser.add_argument("--no-device", action="store_true", help="skip the compiled plans")
    parser.add_argument("--host-n", type=int, default=HOST_N, help=f"training clips of the smaller host run ({HOST_N})")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: cremad at scale 1 only, small host run (n=24)"
    )
    parser.add_argument("--out", type=Path, default=results.DEFAULT_OUT)
    parser.add_argument("--name", default="memory", help="result file stem (default memory)")
    parser.add_argument("--host-child", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.functions = tuple(f for f in args.functions.split(",") if f)
    args.scales = [int(s) for s in args.scales.split(",") if s]
    if args.quick:
        args.scales = args.scales[:1]
        args.host_n = min(args.host_n, 24)
    unknown = sorted(set(args.datasets) - set(PAPER_DATASETS)) + sorted(set(args.functions) - set(FUNCTIONS))
    if unknown:
        parser.error(f"unknown datasets or functions {unknown}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.host_child:
        print(json.dumps(host_child(args.host_child, args.prepared, args.overrides)))
        return 0
    started = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    records, host_rows = [], []
    command = " ".join(["python -m benchmarks.memory", *(sys.argv[1:] if argv is None else argv)]).strip()
    settings = {
        "method": args.method,
        "scales": args.scales,
        "functions": list(args.functions),
        "overrides": args.overrides,
        "host_settings": list(HOST_SETTINGS),
        "host_n": args.host_n,
        "host_scale": HOST_SCALE,
        "budget_bytes": BUDGET_BYTES,
        "compile_every_scale": not args.compile_first_scale_only,
    }

    def write(final: bool) -> str:
        machine = results.machine_info()
        markdown = to_markdown(machine, command, settings, records, host_rows)
        host = None
        if host_rows:
            host = {
                "rows": host_rows,
                "peak_rss_growth_bytes": host_rows[-1]["train_peak_rss"] - host_rows[0]["train_peak_rss"],
                "decoded_train_growth_bytes": (
                    host_rows[-1]["train_bytes_on_disk_decoded"] - host_rows[0]["train_bytes_on_disk_decoded"]
                ),
            }
        report = {
            "machine": machine,
            "command": command,
            "settings": settings,
            "complete": final,
            "peak_bytes": {r["dataset"]: r["peak_bytes"] for r in records},
            "datasets": records,
            "host": host,
            "seconds": time.perf_counter() - started,
            "markdown": markdown,
        }
        results.write(args.out, args.name, report)
        return markdown

    if not args.no_device:
        for name in args.datasets:
            records.append(
                measure_dataset(
                    name,
                    args.method,
                    args.scales,
                    args.functions,
                    args.overrides,
                    log,
                    compile_every_scale=not args.compile_first_scale_only,
                )
            )
            write(final=False)  # A long run keeps what it measured so far.
    if not args.no_host:
        host_rows = measure_host(args.host_n, HOST_SCALE, HOST_SETTINGS, log)
    print(write(final=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
