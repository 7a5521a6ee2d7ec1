"""Samples per second of the grain input pipelines, per dataset shape and worker count.

  python -m benchmarks.pipeline_throughput            # under two minutes on a 2-core CPU
  python -m benchmarks.pipeline_throughput --out DIR  # default: benchmarks/results

Two datasets of ``EXAMPLES`` random examples are written as TFDS
array_record files with the features of the library's Sarcasm and CREMA-D
builders (same fields, shapes and encodings), and read back through
``builder.as_data_source("train")``, as training reads a prepared dataset:

* Sarcasm: a 224x224 RGB image and a tweet-length text;
* CREMA-D: a 257x188 float32 log-spectrogram and one 224x224 frame.

For each, it times the pipelines the trainer reads
(:func:`mie_jax.data.pipeline.modality_pipeline`): one per modality, as the
alternating phases read them (shuffled, augmented, full batches), each in
this process (0 workers) and in 2 worker processes; and the paired one of
evaluation (every modality, in order, no augmentation) in this process only,
as evaluation reads each example once. A pipeline's first batch pays for
starting workers and filling prefetch buffers, so it is reported on its own
("first batch"); the rate is taken over ``TIMED_BATCHES`` batches after
more than the pipeline can hold ahead (:func:`warmup_batches`), so none of
them was made before the clock started. Stopping 2 workers takes grain a few
seconds more, which no number here includes.

The sizes keep a run under two minutes on a shared 2-core CPU, where starting
workers and reading examples back from TFDS take most of the time.

The trainer's own step is not timed here: :mod:`benchmarks.step_time` times it.
"""

import argparse
import contextlib
import itertools
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from benchmarks import results_files as results
from mie_jax.data import pipeline
from mie_jax.data.builders import cremad, sarcasm
from mie_jax.data.builders.base import PaperBuilder, prepare
from mie_jax.models import bert

EXAMPLES = 128
BATCH_SIZE = 32
TIMED_BATCHES = 12
WORKER_COUNTS = (0, 2)
TEXT_LENGTH = 40
WORDS = (
    "great",
    "love",
    "monday",
    "mornings",
    "traffic",
    "again",
    "so",
    "happy",
    "rain",
    "best",
    "day",
    "ever",
    "<user>",
    "#not",
    "the",
    "weather",
    "is",
    "lovely",
    "today",
    "thanks",
)


class _Synthetic(PaperBuilder):
    """Random examples with a paper builder's features: one ``train`` split of ``EXAMPLES``.

    Listed before the paper builder among a subclass's bases, it replaces the
    reading of published files and keeps the features, so the records are the
    ones that builder writes.
    """

    LAYOUT = "any non-empty directory (the examples are random; TFDS requires one)"
    SPLITS = ("train",)

    def examples(self, raw_dir, split):
        del raw_dir  # Nothing is read.
        rng = np.random.default_rng(0)
        for index in range(EXAMPLES):
            yield str(index), {"id": str(index), **self.example(rng)}

    def example(self, rng: np.random.Generator) -> dict:
        """One random example's fields other than ``id``."""
        raise NotImplementedError


class SarcasmShaped(_Synthetic, sarcasm.Sarcasm):
    """Sarcasm's records: a tweet's RGB image and text, 2 classes."""

    def example(self, rng):
        size = self.builder_config.image_size
        return {
            "image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
            "text": " ".join(rng.choice(WORDS, rng.integers(8, 30))),
            "label": int(rng.integers(len(sarcasm.CLASSES))),
        }


class CremaDShaped(_Synthetic, cremad.CremaD):
    """CREMA-D's records: a 3 s log-spectrogram (257 x 188) and a clip's frames, 6 classes."""

    def example(self, rng):
        size, frames = self.builder_config.image_size, self.builder_config.num_frames
        return {
            "audio": rng.normal(size=self.SPECTROGRAM.shape).astype(np.float32),
            "visual": rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8),
            "label": int(rng.integers(len(cremad.CLASSES))),
        }


def pipelines(tokenizer) -> dict:
    """Dataset -> its builder and its pipelines: (name, fields, transforms, for training)."""
    augment = (pipeline.random_resized_crop_and_flip, pipeline.to_float)
    text = pipeline.tokenize(tokenizer, TEXT_LENGTH)
    return {
        "sarcasm": (
            SarcasmShaped,
            (
                ("image phase", ("image", "label"), {"image": augment}, True),
                ("text phase", ("text", "label"), {"text": text}, True),
                ("paired eval", ("image", "text", "label"), {"image": pipeline.to_float, "text": text}, False),
            ),
        ),
        "cremad": (
            CremaDShaped,
            (
                ("audio phase", ("audio", "label"), {"audio": pipeline.add_channel_axis}, True),
                ("visual phase", ("visual", "label"), {"visual": augment}, True),
                (
                    "paired eval",
                    ("audio", "visual", "label"),
                    {"audio": pipeline.add_channel_axis, "visual": pipeline.to_float},
                    False,
                ),
            ),
        ),
    }


def warmup_batches(num_workers: int) -> int:
    """Batches the pipeline can hold before it is read (each process's read-ahead and hand-over), and 2 more."""
    return max(num_workers, 1) * (pipeline.READ_OPTIONS.prefetch_buffer_size + 1) + 2


def measure(source, fields, transforms, train: bool, num_workers: int) -> dict:
    """Seconds to the first batch, and the steady rate over ``TIMED_BATCHES`` after the warm-up."""
    warmup = warmup_batches(num_workers)
    per_epoch = len(source) // BATCH_SIZE if train else -(-len(source) // BATCH_SIZE)
    dataset = pipeline.modality_pipeline(
        source,
        fields,
        transforms,
        batch_size=BATCH_SIZE,
        seed=0,
        shuffle=train,
        drop_remainder=train,
        num_epochs=-(-(warmup + TIMED_BATCHES) // per_epoch),
        num_workers=num_workers,
    )
    started = time.perf_counter()
    with contextlib.closing(iter(dataset)) as iterator:
        first = next(iterator)
        first_batch_s = time.perf_counter() - started
        mb_per_batch = sum(np.asarray(value).nbytes for value in first.values()) / 1e6
        batch_shapes = {field: [list(value.shape), str(value.dtype)] for field, value in first.items()}
        del first  # With workers, a batch holds shared memory until it is dropped.
        for _ in range(warmup - 1):
            next(iterator)
        steady_started = time.perf_counter()
        # The timed batches only, not the end: grain's workers take seconds to report it.
        samples = sum(len(batch["label"]) for batch in itertools.islice(iterator, TIMED_BATCHES))
        steady_s = time.perf_counter() - steady_started
    return {
        "first_batch_s": first_batch_s,
        "warmup_batches": warmup,
        "samples_per_s": samples / steady_s,
        "ms_per_batch": 1e3 * steady_s / TIMED_BATCHES,
        "mb_per_batch": mb_per_batch,
        "batch_shapes": batch_shapes,
    }


def to_markdown(machine: dict, command: str, rows: List[dict], build_s: dict) -> str:
    """The report: machine, command, settings and one table."""
    lines = [
        "# Input pipeline throughput",
        "",
        f"Machine: {machine['hostname']}, {machine['platform']}, {machine['cpu']} ({machine['cpu_count']} CPUs); "
        f"python {machine['python']}; {machine['date_utc']} UTC; 1-min load average "
        f"{machine['load_average_1min']['before']} before, {machine['load_average_1min']['after']} after.",
        "",
        f"Command: `{command}`",
        "",
        f"{EXAMPLES} synthetic examples per dataset, written as TFDS array_record and read through "
        f"`as_data_source` (writing took " + ", ".join(f"{name} {s:.1f} s" for name, s in build_s.items()) + "). "
        f"Batches of {BATCH_SIZE}; text as {TEXT_LENGTH} all-MiniLM-L6-v2 "
        f"WordPiece ids. Phases: shuffled, full batches, images and frames through "
        f"`random_resized_crop_and_flip` and `to_float`. Paired eval: in order, every example, `to_float` only, "
        f"in this process only. "
        f"Samples/s and ms/batch are over {TIMED_BATCHES} batches after the first {warmup_batches(0)} "
        f"(0 workers) or {warmup_batches(2)} (2 workers), more than the pipeline holds ahead; first batch: "
        f"seconds from creating the iterator, starting the workers included.",
        "",
        "| dataset | pipeline | fields | workers | samples/s | ms/batch | MB/batch | first batch s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['pipeline']} | {', '.join(row['fields'])} | {row['num_workers']} | "
            f"{row['samples_per_s']:.0f} | {row['ms_per_batch']:.1f} | {row['mb_per_batch']:.1f} | "
            f"{row['first_batch_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[List[str]]):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline_throughput", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=results.DEFAULT_OUT, help=f"results directory (default: {results.DEFAULT_OUT})"
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = results.load_average()

    def progress(message):
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr)

    tokenizer = bert.load_tokenizer(bert.default_minilm_dir())
    rows, build_s = [], {}
    with tempfile.TemporaryDirectory(prefix="pipeline_throughput_") as scratch:
        raw_dir = Path(scratch) / "raw"
        raw_dir.mkdir()
        (raw_dir / "README").write_text("Nothing to read: the benchmark's examples are random.\n")
        for dataset, (builder_cls, dataset_pipelines) in pipelines(tokenizer).items():
            progress(f"writing {EXAMPLES} {dataset}-shaped examples ...")
            build_started = time.perf_counter()
            builder = prepare(builder_cls, raw_dir, Path(scratch) / "prepared", image_size=224, num_frames=1)
            build_s[dataset] = time.perf_counter() - build_started
            source = builder.as_data_source("train")
            for name, fields, transforms, train in dataset_pipelines:
                for num_workers in WORKER_COUNTS if train else (0,):
                    progress(f"{dataset} {name}, {num_workers} workers ...")
                    row = {"dataset": dataset, "pipeline": name, "fields": list(fields), "num_workers": num_workers}
                    rows.append({**row, **measure(source, fields, transforms, train, num_workers)})
    progress("done")

    machine = results.machine_info()
    machine["load_average_1min"] = {"before": load_before, "after": results.load_average()}
    command = " ".join(["python -m benchmarks.pipeline_throughput", *(sys.argv[1:] if argv is None else argv)])
    markdown = to_markdown(machine, command.strip(), rows, build_s)
    print(markdown)

    settings = {
        "examples": EXAMPLES,
        "batch_size": BATCH_SIZE,
        "timed_batches": TIMED_BATCHES,
        "text_length": TEXT_LENGTH,
        "read_options": repr(pipeline.READ_OPTIONS),
    }
    report = {
        "machine": machine,
        "command": command.strip(),
        "settings": settings,
        "build_s": build_s,
        "pipelines": rows,
        "seconds": time.perf_counter() - started,
        "markdown": markdown,
    }
    results.write(args.out, "pipeline", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
