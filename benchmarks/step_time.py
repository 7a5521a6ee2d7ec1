"""Time per training step of MIE's pieces and its peers, as ratios to a plain SGD step.

  python -m benchmarks.step_time            # about a minute on an idle 2-core CPU
  python -m benchmarks.step_time --quick    # fewer repeats
  python -m benchmarks.step_time --out DIR  # default: benchmarks/results

Every variant runs the library's own step (:func:`steps.optimizer_step` with
the optimizer of :func:`steps.make_optimizer`) on the same mfeat 'fac'
classifier and batch, in one process, jitted twice: one step per call
("per-call", Python dispatch included) and a ``lax.scan`` of ``SCAN_STEPS``
steps per call ("scanned", the trainer's regime). The variants are interleaved
within every repeat, and a ratio is the median over repeats of the ratio to
the baseline timed in the same repeat, so slow drifts of the machine cancel.

OGM-GE needs a model over two modalities, so it runs ``JointMethod``'s own
phase function on the fac+mor concat model and is compared with plain joint
SGD on that model (the same phase function with ``method="joint"``).

Also timed: the covariance pass and the T matrices (Eq. 5 and 7) against one
epoch of the MIE phase, and ``eigh`` alone for a few sizes.
"""

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import mie_jax
from benchmarks import results_files as results
from experiments import configs
from mie_jax.data.registry import LoadOptions, load_dataset
from mie_jax.models import bert
from mie_jax.models.classifier import UnimodalClassifier
from mie_jax.models.encoders import TextEncoder, build_encoder
from mie_jax.models.head import HEAD_LAYERS, Head
from mie_jax.train import batches, steps
from mie_jax.train.alternating import AlternatingMethod
from mie_jax.train.config import TrainConfig, make_config
from mie_jax.train.joint import JointMethod

SCAN_STEPS = 50
CALLS_PER_UNIT = 10  # Per-call steps timed together, so the timer's own cost vanishes.
EIGH_SIZES = (64, 256, 1024, 2048)
# Repeats: (steps, covariance, eigh); eigh(2048) alone takes about a second on a small CPU.
REPEATS = {"full": (20, 10, 5), "quick": (5, 3, 2)}
GOALS = {"sam": "about 2.0 (floor)", "gm": "<= 1.05", "mie": "<= 2.1"}
# The paper's encoders on one modality each: (what, encoder, one example's shape).
ENCODER_MODELS = {
    "resnet18_audio": ("ResNet18, CREMA-D log-spectrogram 257x188x1", "resnet18", (257, 188, 1)),
    "resnet18_frames": ("ResNet18 per frame, 3 frames 224x224x3, pooled", "frames_resnet18", (3, 224, 224, 3)),
    "bert_small": ("BERT-small (all-MiniLM-L6-v2's shape, random weights), 64 tokens", "bert", (64,)),
}
BERT_SMALL = bert.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)


@dataclasses.dataclass
class Case:
    """One variant: a step per call and ``SCAN_STEPS`` per call, each ``carry -> carry``.

    The carry is ``(params, model_state, opt_state)``, as the trainer's phases carry it.
    """

    name: str
    description: str
    baseline: str  # The variant its ratios are to; "" for the baseline itself.
    per_call: Callable[[Any], Any]
    scanned: Optional[Callable[[Any], Any]]  # None: timed per call only (large models).
    init: Any
    mflops: Optional[float]  # XLA's count for one step.
    memory_mib: Optional[float]  # XLA's buffers for one step: arguments, outputs and temporaries.


def xla_mflops(lowered) -> Optional[float]:
    """XLA's FLOP count of a lowered function, in millions; None where the backend gives none."""
    flops = (lowered.cost_analysis() or {}).get("flops")
    return None if flops is None else flops / 1e6


def xla_memory_mib(compiled) -> Optional[float]:
    """The memory XLA plans for one call (arguments + outputs + temporaries), in MiB.

    It is the compiled program's own peak, the same on every run and free of
    other processes; None where the backend reports none.
    """
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    used = analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
    return (used - analysis.alias_size_in_bytes) / 2**20


def make_step(graphdef, tx, *, with_features: bool) -> Callable:
    """The library's training step on one batch: ``(params, model_state, opt_state, x, y, transforms)``.

    Returns ``(params, model_state, opt_state, loss)``. ``with_features`` passes
    the head layers' inputs as ``features=`` (MLA's projection), as
    train/shared_head.py does.
    """

    def step(params, model_state, opt_state, x, y, transforms):
        def loss_fn(p):
            (logits, layer_inputs), new_state = steps.apply_model(graphdef, p, model_state, x, train=True)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (layer_inputs, new_state)

        def features_of(aux):
            return {"features": steps.head_kernel_tree(params, jax.lax.stop_gradient(aux[0]))}

        params, opt_state, loss, (_, model_state) = steps.optimizer_step(
            loss_fn, tx, params, opt_state,
            extra_args_from_aux=features_of if with_features else None,
            transforms=transforms,
        )
        return params, model_state, opt_state, loss

    return step


def scan_steps(step: Callable, length: int) -> Callable:
    """``step`` repeated ``length`` times on the same batch inside one ``lax.scan``."""

    def run(params, model_state, opt_state, *batch):
        def body(carry, _):
            *carry, loss = step(*carry, *batch)
            return tuple(carry), loss

        carry, losses = jax.lax.scan(body, (params, model_state, opt_state), length=length)
        return (*carry, losses)

    return run


def unimodal_cases(
    config: TrainConfig, graphdef, params, model_state, transforms, x, y, *, prefix: str = "", scanned: bool = True
) -> List[Case]:
    """plain, sam, gm, mie and mla on one classifier; names start with ``prefix``.

    ``scanned=False`` times one step per call only: for large models Python's
    dispatch is negligible, and a scan of them takes long to compile.
    """
    head_kernels = steps.head_kernel_tree(params, {layer: True for layer in HEAD_LAYERS})
    mask = jax.tree.map(lambda leaf: leaf is True, head_kernels, is_leaf=lambda leaf: leaf is None)
    # The schedule's epochs: any value; a constant learning rate does not read it.
    per_epoch = {"steps_per_epoch": 1}
    plain_tx = steps.make_optimizer(config, sam=False, **per_epoch)
    sam_tx = steps.make_optimizer(config, sam=True, **per_epoch)
    # A constant alpha: MLA's schedule only adds scalar arithmetic.
    mla_tx = steps.make_optimizer(
        config, sam=False, **per_epoch,
        projection=mie_jax.orthogonal_projection(alpha=config.mla_alpha_base, mask=mask),
    )
    variants = (
        ("plain", "SGD (momentum, weight decay)", plain_tx, None, False),
        ("sam", "mie_jax.sam + SGD", sam_tx, None, False),
        ("gm", "flat_projection (3 T matrices) + SGD", plain_tx, transforms, False),
        ("mie", "sam + flat_projection + SGD", sam_tx, transforms, False),
        ("mla", "orthogonal_projection(features=) + SGD", mla_tx, None, True),
    )
    cases = []
    for name, description, tx, t_tree, with_features in variants:
        step = make_step(graphdef, tx, with_features=with_features)
        one, many = jax.jit(step), jax.jit(scan_steps(step, SCAN_STEPS))
        opt_state = tx.init(params)
        lowered = one.lower(params, model_state, opt_state, x, y, t_tree)
        compiled = lowered.compile()  # Timed as is: one compile serves the timing and the memory plan.
        cases.append(Case(
            prefix + name, description, prefix + "plain" if name != "plain" else "",
            # Default arguments bind this iteration's functions and T.
            per_call=lambda carry, f=compiled, t=t_tree: f(*carry, x, y, t)[:3],
            scanned=(lambda carry, f=many, t=t_tree: f(*carry, x, y, t)[:3]) if scanned else None,
            init=(params, model_state, opt_state),
            mflops=xla_mflops(lowered),
            memory_mib=xla_memory_mib(compiled),
        ))
    return cases


def encoder_model_cases(name: str, config: TrainConfig, batch_size: int, num_classes: int = 10) -> List[Case]:
    """plain, sam, gm, mie and mla on one of ``ENCODER_MODELS``, per call, names ``<name>/<variant>``.

    T is Eq. 7 of the head inputs' covariance on the timed batch: its values
    do not change the cost of applying it.
    """
    _, encoder_name, shape = ENCODER_MODELS[name]
    rngs = nnx.Rngs(config.seed)
    key_x, key_y = jax.random.split(jax.random.key(config.seed))
    if encoder_name == "bert":
        encoder = TextEncoder(bert.BertEncoder(BERT_SMALL, rngs=rngs), pad_id=0, dim=config.dim, rngs=rngs)
        x = jax.random.randint(key_x, (batch_size, *shape), 1, BERT_SMALL.vocab_size)
    else:
        encoder = build_encoder(config, encoder_name, shape, rngs)
        x = jax.random.normal(key_x, (batch_size, *shape), jnp.float32)
    y = jax.random.randint(key_y, (batch_size,), 0, num_classes)
    graphdef, params, model_state = steps.split_model(
        UnimodalClassifier(encoder, Head(config.dim, num_classes, rngs=rngs)))
    (_, layer_inputs), _ = steps.apply_model(graphdef, params, model_state, x, train=False)
    covariances = {layer: mie_jax.update_covariance(jnp.zeros((f.shape[1],) * 2), f)
                   for layer, f in layer_inputs.items()}
    transforms = steps.head_kernel_tree(params, mie_jax.flat_transforms(covariances, config.tau))
    return unimodal_cases(config, graphdef, params, model_state, transforms, x, y, prefix=f"{name}/", scanned=False)


def joint_cases(base: Dict[str, Any], split, num_classes: int, batch) -> List[Case]:
    """joint SGD and OGM-GE, each through ``JointMethod.phase_fn`` on the fac+mor model."""
    keys = jax.random.split(jax.random.key(0), SCAN_STEPS)
    one = (jnp.asarray(batch[None]), keys[:1])
    many = (jnp.asarray(np.tile(batch, (SCAN_STEPS, 1))), keys)
    cases = []
    for name, description, baseline in (
        ("joint", "joint SGD, fac+mor concat model", "plain"),
        ("ogm_ge", "OGM-GE (JointMethod), fac+mor concat model", "joint"),
    ):
        method = JointMethod(make_config(base, method=name), split, num_classes)
        state = method.init()
        init = (state["params"], state["model_state"], state["opt_state"])
        lowered = method.phase_fn.lower(*init, method.inputs, method.labels, *one)
        compiled = lowered.compile()
        cases.append(Case(
            name, description, baseline,
            per_call=lambda carry, m=method, f=compiled: f(*carry, m.inputs, m.labels, *one)[:3],
            scanned=lambda carry, m=method: m.phase_fn(*carry, m.inputs, m.labels, *many)[:3],
            init=init,
            # A one-step phase: the scan's body is counted once.
            mflops=xla_mflops(lowered),
            memory_mib=xla_memory_mib(compiled),
        ))
    return cases


def time_chain(fn: Callable, init, calls: int) -> float:
    """Seconds for ``calls`` chained calls ``carry = fn(carry)`` from ``init``, as training runs them."""
    start = time.perf_counter()
    carry = init
    for _ in range(calls):
        carry = fn(carry)
    jax.block_until_ready(carry)
    return time.perf_counter() - start


def time_call(fn: Callable) -> float:
    """Seconds for one call ``fn()``, until its results are ready."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def measure_steps(cases: List[Case], repeats: int) -> List[dict]:
    """Median seconds per step, per-call and scanned, and paired ratios to each baseline."""
    for case in cases:  # Compile, then one warm call each.
        for fn in (case.per_call, case.scanned):
            if fn is not None:
                time_chain(fn, case.init, calls=2)
    samples = {(case.name, mode): [] for case in cases for mode in ("per_call", "scanned")}
    for r in range(repeats):
        shift = r % len(cases)  # Every variant takes every position in turn.
        for case in cases[shift:] + cases[:shift]:
            samples[case.name, "per_call"].append(
                time_chain(case.per_call, case.init, CALLS_PER_UNIT) / CALLS_PER_UNIT)
            if case.scanned is not None:
                samples[case.name, "scanned"].append(time_chain(case.scanned, case.init, 1) / SCAN_STEPS)
    mflops = {case.name: case.mflops for case in cases}
    rows = []
    for case in cases:
        row = {"variant": case.name, "description": case.description, "baseline": case.baseline or None,
               "goal": GOALS.get(case.name.rsplit("/", 1)[-1]), "mflop_per_step": case.mflops,
               "memory_mib": case.memory_mib,
               "flop_ratio": (case.mflops / mflops[case.baseline or case.name]
                              if case.mflops and mflops[case.baseline or case.name] else None)}
        for mode in ("per_call", "scanned"):
            own = samples[case.name, mode]
            if not own:
                row[f"{mode}_ms"] = row[f"{mode}_ratio"] = None
                continue
            row[f"{mode}_ms"] = 1e3 * statistics.median(own)
            if case.baseline:
                base = samples[case.baseline, mode]
                row[f"{mode}_ratio"] = statistics.median(a / b for a, b in zip(own, base))
            else:
                row[f"{mode}_ratio"] = 1.0
        rows.append(row)
    return rows


def measure_covariance(
    mie: AlternatingMethod, unimodal: AlternatingMethod, modality: str, transforms, repeats: int
) -> dict:
    """The covariance pass and T (once per phase) against one epoch of the MIE phase.

    The epoch is the trainer's own jitted phase (``mie.phase_fns``) over
    ``n // batch_size`` steps; T is the trainer's own (``mie.flat_transforms``,
    the three eigendecompositions in one jitted program).
    """
    config = mie.config
    state = mie.init()
    params, model_state = state["params"][modality], state["model_state"][modality]
    inputs, labels = mie.inputs[modality], mie.labels
    order = batches.epoch_batches(batches.phase_rng(config.seed, 0), labels.shape[0], config.batch_size, 1)
    lam, partners = batches.mixup_draws(
        batches.phase_rng(config.seed, 0), config.mixup_alpha, order.shape[0], config.batch_size)
    zero = steps.zero_covariances(params)
    mie_state, plain_state = mie.tx.init(params), unimodal.tx.init(params)
    mie_phase, plain_phase = mie.phase_fns[modality], unimodal.phase_fns[modality]
    covariance_pass = mie.covariance_passes[modality]
    covariance = covariance_pass(params, model_state, inputs, config.covariance_batch_size)

    pieces = {
        "mie_epoch": lambda: mie_phase(
            params, model_state, mie_state, zero, inputs, labels, order, lam, partners, transforms),
        "unimodal_epoch": lambda: plain_phase(
            params, model_state, plain_state, zero, inputs, labels, order, lam, partners, None),
        "covariance_pass": lambda: covariance_pass(params, model_state, inputs, config.covariance_batch_size),
        "transforms": lambda: mie.flat_transforms(covariance),
    }
    for fn in pieces.values():  # Compile, then one warm call each.
        time_call(fn)
        time_call(fn)
    samples = {name: [] for name in pieces}
    for r in range(repeats):
        names = list(pieces)
        names = names[r % len(names):] + names[:r % len(names)]
        for name in names:
            samples[name].append(time_call(pieces[name]))
    ms = {name: 1e3 * statistics.median(values) for name, values in samples.items()}
    overhead = ms["covariance_pass"] + ms["transforms"]
    phase_epochs = config.epochs_of_phase(0)
    return {
        "train_rows": int(labels.shape[0]),
        "steps_per_epoch": int(order.shape[0]),
        "covariance_batches": -(-int(labels.shape[0]) // config.covariance_batch_size),
        "phase_epochs": phase_epochs,
        "ms": ms,
        "pass_plus_transforms_ms": overhead,
        "fraction_of_mie_epoch": overhead / ms["mie_epoch"],
        "fraction_of_mie_phase": overhead / (phase_epochs * ms["mie_epoch"]),
        "mie_epoch_over_unimodal_epoch": ms["mie_epoch"] / ms["unimodal_epoch"],
    }


def measure_eigh(sizes, repeats: int) -> List[dict]:
    """Median warm ``jnp.linalg.eigh`` time of a float32 positive semi-definite ``[d, d]``, jitted.

    Each size is timed on its own after one warm call: right after a large
    size, a small one's first call pays for waking the LAPACK threads.
    """
    rows = []
    for d in sizes:
        a = jax.random.normal(jax.random.key(d), (d, d), jnp.float32)
        matrix = jax.block_until_ready(a @ a.T / d)
        eigh = jax.jit(jnp.linalg.eigh).lower(matrix).compile()
        time_call(lambda: eigh(matrix))
        samples = [time_call(lambda: eigh(matrix)) for _ in range(repeats)]
        rows.append({"d": d, "eigh_ms": 1e3 * statistics.median(samples)})
    return rows


def _format(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def to_markdown(machine: dict, command: str, settings: dict, rows, covariance: dict, eigh_rows) -> str:
    """The report: machine, command, and the three tables."""
    encoder_models = [name for name in settings["models"] if name != "mlp"]
    lines = [
        "# Step time",
        "",
        f"Machine: {machine['hostname']}, {machine['platform']}, {machine['cpu']} ({machine['cpu_count']} CPUs); "
        f"jax {machine['jax']}, backend {machine['backend']}, device {machine['device_kind']} "
        f"x{machine['device_count']}; python {machine['python']}; {machine['date_utc']} UTC; "
        f"1-min load average {machine['load_average_1min']['before']} before, "
        f"{machine['load_average_1min']['after']} after; environment {machine['environment'] or 'default'}.",
        "",
        f"Command: `{command}`",
        "",
        f"mfeat 'fac' classifier (216 -> {settings['encoder_hidden']} -> {settings['dim']}, head "
        f"{settings['dim']} -> 256 -> 64 -> 10), batch {settings['batch_size']}, float32. Per-call: one jitted "
        f"step per call, {CALLS_PER_UNIT} chained calls per sample; scanned: {SCAN_STEPS} steps in one "
        f"`lax.scan`. Median over {settings['repeats']['steps']} interleaved repeats; a ratio is the median "
        f"of the per-repeat ratios to the baseline.",
        "",
        *(["Encoder models (names `<model>/<variant>`): "
           + "; ".join(f"{name}: {ENCODER_MODELS[name][0]}" for name in encoder_models)
           + f"; batch {settings['encoder_batch']}, Dim {settings['encoder_dim']}, ResNet width "
           f"{settings['resnet_width']}; timed per call only.", ""] if encoder_models else []),
        "Memory: XLA's plan for one step (arguments + outputs + temporaries).",
        "",
        "| variant | what runs | vs | per-call ms/step | per-call ratio | scanned ms/step | scanned ratio "
        "| MFLOP/step (XLA) | FLOP ratio | memory MiB | goal |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['description']} | {row['baseline'] or '-'} | "
            f"{_format(row['per_call_ms'], '.3f')} | {_format(row['per_call_ratio'], '.2f')}x | "
            f"{_format(row['scanned_ms'], '.3f')} | {_format(row['scanned_ratio'], '.2f')}x | "
            f"{_format(row['mflop_per_step'], '.1f')} | {_format(row['flop_ratio'], '.2f')} | "
            f"{_format(row['memory_mib'], '.1f')} | {row['goal'] or ''} |")
    ms = covariance["ms"]
    epoch = ms["mie_epoch"]
    lines += [
        "",
        f"## Covariance pass and T per MIE phase ({covariance['train_rows']} training rows, "
        f"{covariance['steps_per_epoch']} steps of {settings['batch_size']} per epoch, "
        f"{covariance['covariance_batches']} covariance batches of {settings['covariance_batch_size']})",
        "",
        "| piece | ms | fraction of one MIE epoch |",
        "|---|---:|---:|",
        f"| one MIE epoch (`make_phase_fn`, SAM + T) | {epoch:.2f} | 1.000 |",
        f"| one unimodal epoch (`make_phase_fn`, SGD) | {ms['unimodal_epoch']:.2f} | "
        f"{ms['unimodal_epoch'] / epoch:.3f} |",
        f"| covariance pass (`make_covariance_pass`) | {ms['covariance_pass']:.2f} | "
        f"{ms['covariance_pass'] / epoch:.3f} |",
        f"| T for 3 layers (`AlternatingMethod.flat_transforms`) | {ms['transforms']:.2f} | "
        f"{ms['transforms'] / epoch:.3f} |",
        f"| **pass + T (trainer)** | **{covariance['pass_plus_transforms_ms']:.2f}** | "
        f"**{covariance['fraction_of_mie_epoch']:.3f}** |",
        "",
        f"Once per phase of {covariance['phase_epochs']} epochs: "
        f"{100 * covariance['fraction_of_mie_phase']:.1f}% of the phase's training time.",
        "",
        f"## eigh alone (float32, jitted, median of {settings['repeats']['eigh']} warm calls)",
        "",
        "| d | eigh ms |",
        "|---:|---:|",
    ]
    lines += [f"| {row['d']} | {row['eigh_ms']:.2f} |" for row in eigh_rows]
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[List[str]]):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_time", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, noisier numbers)")
    parser.add_argument("--out", type=Path, default=results.DEFAULT_OUT, help=f"results directory (default: {results.DEFAULT_OUT})")
    parser.add_argument("--models", default="mlp",
                        help=f"comma-separated: mlp (the mfeat tables) and any of {list(ENCODER_MODELS)}")
    parser.add_argument("--batch", type=int, default=64, help="batch of the encoder models (default 64)")
    parser.add_argument("--dim", type=int, default=512, help="their common feature size Dim (default 512)")
    parser.add_argument("--width", type=int, default=64, help="ResNet base width (default 64, torchvision's)")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(args.models) - {"mlp", *ENCODER_MODELS})
    if unknown or not args.models:
        parser.error(f"--models takes mlp and {list(ENCODER_MODELS)}, got {args.models}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = results.load_average()
    step_repeats, covariance_repeats, eigh_repeats = REPEATS["quick" if args.quick else "full"]
    base = configs.get_config("mfeat")
    config = make_config(base, method="mie")
    dataset = load_dataset("mfeat", config.modalities, LoadOptions(seed=config.seed))
    train = dataset.splits["train"]

    # The trainer's own models and jitted phases: one classifier per modality.
    mie = AlternatingMethod(config, train, dataset.num_classes)
    unimodal = AlternatingMethod(make_config(base, method="unimodal"), train, dataset.num_classes)
    state = mie.init()
    params, model_state = state["params"]["fac"], state["model_state"]["fac"]
    # Real T: from the covariance of the modality trained before fac (mor), as in phase 2 of Algorithm 1.
    mor_covariance = mie.covariance_passes["mor"](
        state["params"]["mor"], state["model_state"]["mor"], mie.inputs["mor"], config.covariance_batch_size)
    transforms = steps.head_kernel_tree(params, mie.flat_transforms(mor_covariance))
    # A shuffled batch: the rows are stored in class order.
    batch = batches.epoch_batches(batches.phase_rng(config.seed, 0), mie.labels.shape[0], config.batch_size, 1)[0]
    x, y = mie.inputs["fac"][batch], mie.labels[batch]

    cases = []
    if "mlp" in args.models:
        cases += unimodal_cases(config, mie.graphdefs["fac"], params, model_state, transforms, x, y)
        cases += joint_cases(base, train, dataset.num_classes, batch)
    encoder_config = make_config(base, method="mie", dim=args.dim, resnet_width=args.width)
    for name in args.models:
        if name != "mlp":
            cases += encoder_model_cases(name, encoder_config, args.batch)

    def progress(message):
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr)

    progress(f"timing {len(cases)} variants x {step_repeats} repeats ...")
    rows = measure_steps(cases, step_repeats)
    progress("timing the covariance pass ...")
    covariance = measure_covariance(mie, unimodal, "fac", transforms, covariance_repeats)
    progress("timing eigh ...")
    eigh_rows = measure_eigh(EIGH_SIZES, eigh_repeats)
    progress("done")

    machine = results.machine_info()
    # Other processes skew absolute times (ratios less so): the load average says whether there were any.
    machine["load_average_1min"] = {"before": load_before, "after": results.load_average()}
    command = " ".join(["python -m benchmarks.step_time", *(sys.argv[1:] if argv is None else argv)]).strip()
    settings = {
        "batch_size": config.batch_size, "covariance_batch_size": config.covariance_batch_size,
        "dim": config.dim, "encoder_hidden": config.encoder_hidden, "scan_steps": SCAN_STEPS,
        "calls_per_unit": CALLS_PER_UNIT, "models": args.models, "encoder_batch": args.batch,
        "encoder_dim": args.dim, "resnet_width": args.width,
        "repeats": {"steps": step_repeats, "covariance": covariance_repeats, "eigh": eigh_repeats},
    }
    markdown = to_markdown(machine, command, settings, rows, covariance, eigh_rows)
    print(markdown)

    report = {"machine": machine, "command": command, "settings": settings, "steps": rows,
              "covariance": covariance, "eigh": eigh_rows, "seconds": time.perf_counter() - started,
              "markdown": markdown}
    results.write(args.out, "step_time", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
