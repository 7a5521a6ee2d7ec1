"""Time per training step of MIE's pieces and its peers, as ratios to a plain SGD step; and the streamed loop.

  python -m benchmarks.step_time            # a few minutes on an idle 2-core CPU
  python -m benchmarks.step_time --quick    # fewer repeats
  python -m benchmarks.step_time --out DIR  # default: benchmarks/results

Every variant runs a method's own chunk function (``plan.run_chunk`` of
:meth:`phase_plan`, the jitted ``lax.scan`` of the method's very training step
that the trainer runs), built by :func:`mie_jax.train.trainer.build_method`
on mfeat with ``experiments/configs/mfeat.py``, on chunks prepared on the
device beforehand from the phase's own batch order: a chunk of one step per
call ("per-call", Python dispatch included) and a chunk of ``SCAN_STEPS``
steps per call ("scanned", the trainer's regime). The variants are
interleaved within every repeat, and a ratio is the median over repeats of
the ratio to the baseline timed in the same repeat, so slow drifts of the
machine cancel.

The alternating variants time phase 3 of Algorithm 1 (modality 'fac' again,
its T from the covariance of 'mor', trained just before it); OGM-GE and MLA
need two modalities, so they run on the fac+mor model and are compared with
joint SGD on that model.

Also timed, in the same run: a whole phase through the trainer's streamed
loop (:func:`mie_jax.train.loop.run_chunks`: batches gathered on the host,
transferred a chunk ahead while the previous one computes) against the same
steps on device-resident data (the whole training split on the device, every
batch gathered by index inside one jitted ``lax.scan`` over the phase, as the
trainer did before it streamed); the covariance pass and the T matrices
(Eq. 5 and 7) against one epoch of the MIE phase; and ``eigh`` alone.
"""

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import mie_jax
from benchmarks import results_files as results
from experiments import configs
from mie_jax.data.registry import LoadOptions, load_dataset
from mie_jax.models import bert
from mie_jax.models.classifier import UnimodalClassifier
from mie_jax.models.encoders import TextEncoder, build_encoder
from mie_jax.models.head import Head
from mie_jax.train import feed, loop, registry, steps
from mie_jax.train.config import COMMON_SECTIONS, TrainConfig, make_config
from mie_jax.train.methods.alternating import make_train_step, zero_covariances
from mie_jax.train.trainer import build_method

SCAN_STEPS = 50
CALLS_PER_UNIT = 10  # Per-call steps timed together, so the timer's own cost vanishes.
EIGH_SIZES = (64, 256, 1024, 2048)
# Repeats: (steps, streamed vs resident, covariance, eigh); eigh(2048) alone takes about a second on a small CPU.
REPEATS = {"full": (20, 30, 10, 5), "quick": (5, 5, 3, 2)}
GOALS = {"sam": "about 2.0 (floor)", "gm": "<= 1.05", "mie": "<= 2.1"}
STREAM_GOAL = 1.05  # Issue 12: the streamed loop within 5% of the device-resident one.
# The alternating phase timed: phase 3 of Algorithm 1 trains 'fac' with T from 'mor' (trained in phase 2).
ALTERNATING_PHASE = 2
# mfeat variants: (name, method, what runs, baseline).
MFEAT_VARIANTS = (
    ("plain", "unimodal", "unimodal: SGD (momentum, weight decay), fac", ""),
    ("sam", "mie_no_gm", "mie_no_gm: mie_jax.sam + SGD, fac", "plain"),
    ("gm", "mie_no_sam", "mie_no_sam: flat_projection (3 T matrices) + SGD, fac", "plain"),
    ("mie", "mie", "mie: sam + flat_projection + SGD, fac", "plain"),
    ("joint", "joint", "joint: SGD, fac+mor concat model", "plain"),
    ("ogm_ge", "ogm_ge", "ogm_ge: OGM-GE, fac+mor concat model", "joint"),
    ("mla", "mla", "mla: 2 updates per batch, shared head, fac+mor", "joint"),
)
# Streamed vs resident: the variants whose whole phase is timed both ways.
STREAM_VARIANTS = ("plain", "mie", "joint")
# The paper's encoders on one modality each: (what, encoder, one example's shape).
ENCODER_MODELS = {
    "resnet18_audio": ("ResNet18, CREMA-D log-spectrogram 257x188x1", "resnet18", (257, 188, 1)),
    "resnet18_frames": ("ResNet18 per frame, 3 frames 224x224x3, pooled", "frames_resnet18", (3, 224, 224, 3)),
    "bert_small": ("BERT-small (all-MiniLM-L6-v2's shape, random weights), 64 tokens", "bert", (64,)),
}
BERT_SMALL = bert.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)


@dataclasses.dataclass
class Case:
    """One variant: a one-step chunk per call and a ``SCAN_STEPS`` chunk per call, each ``carry -> carry``."""

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


# --- torch_step.py's JAX step (kept here, where it has always been: torch_step.py imports it) ---


def make_step(graphdef, tx) -> Callable:
    """The library's unimodal step, no mixup or augmentation: ``(params, model_state, opt_state, x, y, transforms)``.

    Returns ``(params, model_state, opt_state, loss)``: :func:`mie_jax.train.methods.alternating.make_train_step`
    on a plain batch, in the positional form ``benchmarks/torch_step.py`` compares with its
    PyTorch translation; this benchmark itself times the methods' own chunks (``plan.run_chunk``).
    """
    train_step = make_train_step(graphdef, tx, "x")

    def step(params, model_state, opt_state, x, y, transforms):
        batch = feed.Batch({"x": x}, y, jnp.ones(()), jnp.arange(x.shape[0]), {})
        (params, model_state, opt_state, _), loss = train_step(
            transforms, (params, model_state, opt_state, None), batch
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


# --- the methods' own chunks ---


def cyclic_draws(draws: feed.StepDraws, num_steps: int) -> feed.StepDraws:
    """The phase's draws for ``num_steps`` steps, wrapping around its end (a chunk longer than the phase)."""
    rows = np.arange(num_steps) % draws.num_steps
    return feed.StepDraws(
        draws.order[rows],
        draws.lam[rows],
        draws.partners[rows],
        {m: (boxes[rows], flips[rows]) for m, (boxes, flips) in draws.crops.items()},
        None if draws.keys is None else draws.keys[rows],
    )


def prepared_chunk(plan: loop.PhasePlan, num_steps: int, mesh=None) -> feed.Batch:
    """The phase's first ``num_steps`` steps' batches on the device, as the trainer's feed makes them."""
    return feed.put_chunk(
        feed.host_chunk(plan.columns, plan.labels, cyclic_draws(plan.draws, num_steps), 0, num_steps), mesh
    )


def mfeat_state(method, state):
    """The state before phase ``ALTERNATING_PHASE``: 'mor''s covariance from a real pass (its T is real)."""
    covariance_batch_size = method.config.mie.covariance_batch_size
    covariance = method.covariance_passes["mor"](
        state["params"]["mor"],
        state["model_state"]["mor"],
        method.inputs["mor"],
        covariance_batch_size,
        max(1, method.config.train.eval_batch_size // covariance_batch_size),
    )
    return {**state, "covariance": {**state["covariance"], "mor": covariance}}


def overrides_for(method: str, overrides) -> List[str]:
    """The ``section.key=value`` overrides that ``method`` reads: those of method sections it does not read dropped.

    One ``--set`` serves every variant (e.g. ``mie.tau=...`` changes the MIE
    variants and not ``plain`` or ``joint``); an unknown section is kept, so
    that ``make_config`` refuses it.
    """
    read = set(COMMON_SECTIONS) | set(registry.get(method).sections)
    unread = set(registry.sections()) - read
    return [item for item in overrides if item.partition("=")[0].rpartition(".")[0] not in unread]


def mfeat_plans(base: dict, dataset, names=None, overrides=()) -> Dict[str, tuple]:
    """name -> (method, the state it starts from, its timed phase, the phase's plan) for the mfeat variants."""
    plans = {}
    for name, method_name, _, _ in MFEAT_VARIANTS:
        if names is not None and name not in names:
            continue
        method = build_method(make_config(base, overrides_for(method_name, overrides), method=method_name), dataset)
        state = method.init()
        phase = 0
        if method.config.reads("alternating"):
            state, phase = mfeat_state(method, state), ALTERNATING_PHASE
        plans[name] = (method, state, phase, method.phase_plan(state, phase))
    return plans


def chunk_case(name: str, description: str, baseline: str, plan: loop.PhasePlan, *, scanned: bool = True) -> Case:
    """A variant timed through ``plan.run_chunk`` on a prepared one-step chunk and a ``SCAN_STEPS`` one."""
    one = prepared_chunk(plan, 1)
    many = prepared_chunk(plan, SCAN_STEPS) if scanned else None
    lowered = plan.run_chunk.lower(plan.constants, plan.carry, one)
    compiled = lowered.compile()  # Timed as is: one compile serves the timing and the memory plan.
    constants = plan.constants
    return Case(
        name,
        description,
        baseline,
        per_call=lambda carry: compiled(constants, carry, one)[0],
        scanned=(lambda carry: plan.run_chunk(constants, carry, many)[0]) if scanned else None,
        init=plan.carry,
        mflops=xla_mflops(lowered),  # A one-step chunk: the scan's body is counted once.
        memory_mib=xla_memory_mib(compiled),
    )


def mfeat_cases(plans: Dict[str, tuple]) -> List[Case]:
    return [
        chunk_case(name, description, baseline if baseline in plans else "", plans[name][3])
        for name, _, description, baseline in MFEAT_VARIANTS
        if name in plans
    ]


def encoder_model_cases(
    name: str, config: TrainConfig, batch_size: int, num_classes: int = 10, variants: Optional[Sequence[str]] = None
) -> List[Case]:
    """plain, sam, gm, mie, gm_all and mie_all on one of ``ENCODER_MODELS``, per call, names ``<name>/<variant>``.

    The step is the alternating methods' own (:func:`mie_jax.train.methods.alternating.make_train_step`,
    scanned by :func:`loop.chunk_runner`) on random inputs. T is Eq. 7 of the
    head inputs' covariance on the timed batch (``*_all``: of every tapped
    layer's inputs, ``mie.layers=all``): its values do not change the cost of
    applying it. ``variants`` limits the cases built (all by default).
    """
    _, encoder_name, shape = ENCODER_MODELS[name]
    rngs = nnx.Rngs(config.seed)
    key_x, key_y = jax.random.split(jax.random.key(config.seed))
    if encoder_name == "bert":
        encoder = TextEncoder(bert.BertEncoder(BERT_SMALL, rngs=rngs), pad_id=0, dim=config.model.dim, rngs=rngs)
        x = jax.random.randint(key_x, (batch_size, *shape), 1, BERT_SMALL.vocab_size)
    else:
        encoder = build_encoder(config, encoder_name, shape, rngs)
        x = jax.random.normal(key_x, (batch_size, *shape), jnp.float32)
    y = jax.random.randint(key_y, (batch_size,), 0, num_classes)
    graphdef, params, model_state = steps.split_model(
        UnimodalClassifier(encoder, Head(config.model.dim, num_classes, rngs=rngs))
    )
    (_, layer_inputs), _ = steps.apply_model(graphdef, params, model_state, x, train=False)
    covariances = {
        layer: mie_jax.update_covariance(jnp.zeros((f.shape[1],) * 2), f) for layer, f in layer_inputs.items()
    }
    transforms = steps.head_kernel_tree(params, mie_jax.flat_transforms(covariances, config.mie.tau))
    # mie.layers=all on a pair of such encoders: T at every tapped dense and conv layer (conv: [c_in, c_in]).
    _, _, every_input = steps.apply_model(graphdef, params, model_state, x, train=False, record=True)
    every_covariance = {
        layer: mie_jax.update_conv_covariance(jnp.zeros((f.shape[-1],) * 2), f) for layer, f in every_input.items()
    }
    every_transform = steps.kernel_tree(params, mie_jax.flat_transforms(every_covariance, config.mie.tau))
    one = feed.Batch(
        {"x": x[None]}, y[None], jnp.ones((1,), jnp.float32), jnp.arange(batch_size, dtype=jnp.int32)[None], {}
    )
    cases = []
    for variant, description, sam, t_tree in (
        ("plain", "SGD (momentum, weight decay)", False, None),
        ("sam", "mie_jax.sam + SGD", True, None),
        ("gm", "flat_projection (3 T matrices) + SGD", False, transforms),
        ("mie", "sam + flat_projection + SGD", True, transforms),
        ("gm_all", f"flat_projection on all {len(every_covariance)} tapped layers + SGD", False, every_transform),
        ("mie_all", "sam + flat_projection on all tapped layers + SGD", True, every_transform),
    ):
        if variants is not None and variant not in variants:
            continue
        tx = steps.make_optimizer(config.optimizer, steps_per_epoch=1, sam=config.sam if sam else None)
        run_chunk = loop.chunk_runner(make_train_step(graphdef, tx, "x"))
        carry = (params, model_state, tx.init(params), zero_covariances(params))
        lowered = run_chunk.lower(t_tree, carry, one)
        compiled = lowered.compile()
        cases.append(
            Case(
                f"{name}/{variant}",
                description,
                f"{name}/plain" if variant != "plain" else "",
                per_call=lambda carry, f=compiled, t=t_tree: f(t, carry, one)[0],
                scanned=None,
                init=carry,
                mflops=xla_mflops(lowered),
                memory_mib=xla_memory_mib(compiled),
            )
        )
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
            samples[case.name, "per_call"].append(time_chain(case.per_call, case.init, CALLS_PER_UNIT) / CALLS_PER_UNIT)
            if case.scanned is not None:
                samples[case.name, "scanned"].append(time_chain(case.scanned, case.init, 1) / SCAN_STEPS)
    mflops = {case.name: case.mflops for case in cases}
    rows = []
    for case in cases:
        row = {
            "variant": case.name,
            "description": case.description,
            "baseline": case.baseline or None,
            "goal": GOALS.get(case.name.rsplit("/", 1)[-1]),
            "mflop_per_step": case.mflops,
            "memory_mib": case.memory_mib,
            "flop_ratio": (
                case.mflops / mflops[case.baseline or case.name]
                if case.mflops and mflops[case.baseline or case.name]
                else None
            ),
        }
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


# --- streamed vs device-resident ---


def resident_runner(step: Callable) -> Callable:
    """``run(constants, carry, inputs, labels, draws) -> (carry, losses)``: a whole phase in one jitted scan.

    ``inputs`` (modality -> the whole training split) and ``labels`` are on the
    device; each step gathers its batch by index from them, with the phase's
    draws, and runs ``step``, the method's own: what the trainer did before it
    streamed batches from the host.
    """

    @jax.jit
    def run(constants, carry, inputs, labels, draws):
        def body(c, step_draws):
            order, lam, partners, crops, key = step_draws
            batch = feed.Batch({m: x[order] for m, x in inputs.items()}, labels[order], lam, partners, crops, key)
            return step(constants, c, batch)

        return jax.lax.scan(body, carry, (draws.order, draws.lam, draws.partners, draws.crops, draws.keys))

    return run


def method_step(method, phase: int) -> Callable:
    """The method's un-jitted training step of ``phase``: the one its ``plan.run_chunk`` scans."""
    if hasattr(method, "train_steps"):
        return method.train_steps[method.phase_name(phase)]
    return method.train_step


def streamed_phase(plan: loop.PhasePlan, chunk: int) -> Callable[[], Any]:
    """The whole phase through the trainer's loop (host gathers, transfers one chunk ahead), to the last loss."""

    def run():
        carry, losses = plan.carry, []
        for carry, _, chunk_losses in loop.run_chunks(plan, start=0, chunk=chunk, mesh=None):
            losses.append(chunk_losses)
        return carry, np.concatenate(losses)

    return run


def resident_phase(method, phase: int, plan: loop.PhasePlan) -> Callable[[], Any]:
    """The whole phase with the split on the device (put there once, untimed), to the last loss on the host."""
    run = resident_runner(method_step(method, phase))
    inputs = jax.device_put({m: np.asarray(c) for m, c in plan.columns.items()})
    labels = jax.device_put(plan.labels)
    draws = jax.device_put(plan.draws)

    def go():
        carry, losses = run(plan.constants, plan.carry, inputs, labels, draws)
        return carry, np.asarray(losses)

    return go


def measure_streaming(plans: Dict[str, tuple], names, repeats: int, chunk: int = 0) -> List[dict]:
    """Per variant: a whole phase streamed (``loop.run_chunks``) and device-resident, interleaved; paired ratios.

    Both give the same losses (checked: the same steps on the same batches).
    """
    rows, pieces = [], {}
    for name in names:
        method, _, phase, plan = plans[name]
        k = plan.chunk_steps(chunk or method.config.train.chunk_steps)
        streamed, resident = streamed_phase(plan, k), resident_phase(method, phase, plan)
        losses_streamed, losses_resident = streamed()[1], resident()[1]  # Compiles, and checks the two agree.
        max_diff = float(np.max(np.abs(losses_streamed - losses_resident)))
        streamed(), resident()
        pieces[name] = (streamed, resident)
        rows.append(
            {
                "variant": name,
                "phase": phase,
                "steps": plan.num_steps,
                "chunk_steps": k,
                "chunks": -(-plan.num_steps // k),
                "max_abs_loss_diff": max_diff,
            }
        )
    samples = {(name, how): [] for name in names for how in ("streamed", "resident")}
    for r in range(repeats):
        for name in names:
            order = ("streamed", "resident") if r % 2 == 0 else ("resident", "streamed")
            for how in order:
                samples[name, how].append(time_call(pieces[name][0 if how == "streamed" else 1]))
    for row in rows:
        streamed_s, resident_s = samples[row["variant"], "streamed"], samples[row["variant"], "resident"]
        ratios = [a / b for a, b in zip(streamed_s, resident_s)]
        row.update(
            {
                "streamed_ms": 1e3 * statistics.median(streamed_s),
                "resident_ms": 1e3 * statistics.median(resident_s),
                "streamed_ms_per_step": 1e3 * statistics.median(streamed_s) / row["steps"],
                "resident_ms_per_step": 1e3 * statistics.median(resident_s) / row["steps"],
                "ratio": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                # Other processes only ever add time: the best of each is the least disturbed.
                "best_streamed_ms": 1e3 * min(streamed_s),
                "best_resident_ms": 1e3 * min(resident_s),
                "ratio_of_best": min(streamed_s) / min(resident_s),
                "repeats": repeats,
                "within_goal": statistics.median(ratios) <= STREAM_GOAL,
            }
        )
    return rows


def measure_covariance(plans: Dict[str, tuple], modality: str, repeats: int) -> dict:
    """The covariance pass and T (once per phase) against one epoch of the MIE phase.

    The epoch is the MIE and the unimodal methods' own chunk function
    (``plan.run_chunk``) over one epoch's prepared batches; the pass is the
    trainer's (``method.covariance_passes``, groups of batches as
    ``finish_phase`` reads them); T is the trainer's own
    (``method.flat_transforms``, the three eigendecompositions in one jitted program).
    """
    mie, _, _, mie_plan = plans["mie"]
    _, _, _, plain_plan = plans["plain"]
    config = mie.config
    covariance_batch_size = config.mie.covariance_batch_size
    params, model_state = mie_plan.carry[0], mie_plan.carry[1]
    column = mie.inputs[modality]
    per_epoch = mie_plan.steps_per_epoch
    mie_epoch, plain_epoch = prepared_chunk(mie_plan, per_epoch), prepared_chunk(plain_plan, per_epoch)
    group = max(1, config.train.eval_batch_size // covariance_batch_size)
    covariance_pass = mie.covariance_passes[modality]
    covariance = covariance_pass(params, model_state, column, covariance_batch_size, group)

    pieces = {
        "mie_epoch": lambda: mie_plan.run_chunk(mie_plan.constants, mie_plan.carry, mie_epoch),
        "unimodal_epoch": lambda: plain_plan.run_chunk(plain_plan.constants, plain_plan.carry, plain_epoch),
        "covariance_pass": lambda: covariance_pass(params, model_state, column, covariance_batch_size, group),
        "transforms": lambda: mie.flat_transforms(covariance),
    }
    for fn in pieces.values():  # Compile, then one warm call each.
        time_call(fn)
        time_call(fn)
    samples = {name: [] for name in pieces}
    for r in range(repeats):
        names = list(pieces)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            samples[name].append(time_call(pieces[name]))
    ms = {name: 1e3 * statistics.median(values) for name, values in samples.items()}
    overhead = ms["covariance_pass"] + ms["transforms"]
    phase_epochs = config.train.epochs_of_phase(ALTERNATING_PHASE)
    rows = len(column)
    return {
        "train_rows": rows,
        "steps_per_epoch": per_epoch,
        "covariance_batches": -(-rows // covariance_batch_size),
        "covariance_group": group,
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


def to_markdown(machine: dict, command: str, settings: dict, rows, streaming, covariance: dict, eigh_rows) -> str:
    """The report: machine, command, and the four tables."""
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
    ]
    if "mlp" in settings["models"]:
        lines += [
            f"mfeat MLP classifiers (216 -> {settings['encoder_hidden']} -> {settings['dim']}, head "
            f"{settings['dim']} -> 256 -> 64 -> 10), batch {settings['batch_size']}, float32; each variant is "
            f"its method's own `plan.run_chunk` (`build_method` on mfeat; alternating methods in phase "
            f"{ALTERNATING_PHASE + 1}, 'fac' with T from 'mor'). Per-call: a one-step chunk per call, "
            f"{CALLS_PER_UNIT} chained calls per sample; scanned: a {SCAN_STEPS}-step chunk per call. "
            f"Chunks prepared on the device beforehand. Median over {settings['repeats']['steps']} interleaved "
            "repeats; a ratio is the median of the per-repeat ratios to the baseline.",
            "",
        ]
    if encoder_models:
        lines += [
            "Encoder models (names `<model>/<variant>`, `alternating.make_train_step` in `loop.chunk_runner`): "
            + "; ".join(f"{name}: {ENCODER_MODELS[name][0]}" for name in encoder_models)
            + f"; batch {settings['encoder_batch']}, Dim {settings['encoder_dim']}, ResNet width "
            f"{settings['resnet_width']}; timed per call only.",
            "",
        ]
    lines += [
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
            f"{_format(row['memory_mib'], '.1f')} | {row['goal'] or ''} |"
        )
    if streaming:
        lines += [
            "",
            "## Streamed loop vs device-resident data (a whole phase)",
            "",
            "Streamed: `loop.run_chunks` (the trainer's loop: each chunk's batches gathered from the host "
            "columns and transferred on a thread while the previous chunk computes, losses to the host after "
            "every chunk). Resident: the same step (`method.train_steps[m]` / `method.train_step`) in one "
            "jitted `lax.scan` over the phase, gathering each batch by index from the training split put on "
            "the device beforehand. Interleaved, median over "
            f"{streaming[0]['repeats']} repeats; the ratio is the median of per-repeat ratios "
            f"(goal <= {STREAM_GOAL:.2f}).",
            "",
            "| variant | phase steps | chunk K | chunks | streamed ms | resident ms | streamed ms/step "
            "| resident ms/step | streamed / resident | min..max | best streamed / best resident "
            "| max abs loss diff |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
        ]
        for row in streaming:
            lines.append(
                f"| {row['variant']} | {row['steps']} | {row['chunk_steps']} | {row['chunks']} | "
                f"{row['streamed_ms']:.1f} | {row['resident_ms']:.1f} | {row['streamed_ms_per_step']:.3f} | "
                f"{row['resident_ms_per_step']:.3f} | **{row['ratio']:.3f}** | "
                f"{row['ratio_min']:.2f}..{row['ratio_max']:.2f} | {row['ratio_of_best']:.3f} | "
                f"{row['max_abs_loss_diff']:.1e} |"
            )
    if covariance:
        ms = covariance["ms"]
        epoch = ms["mie_epoch"]
        lines += [
            "",
            f"## Covariance pass and T per MIE phase ({covariance['train_rows']} training rows, "
            f"{covariance['steps_per_epoch']} steps of {settings['batch_size']} per epoch, "
            f"{covariance['covariance_batches']} covariance batches of {settings['covariance_batch_size']}, "
            f"{covariance['covariance_group']} per call)",
            "",
            "| piece | ms | fraction of one MIE epoch |",
            "|---|---:|---:|",
            f"| one MIE epoch (`plan.run_chunk`, SAM + T) | {epoch:.2f} | 1.000 |",
            f"| one unimodal epoch (`plan.run_chunk`, SGD) | {ms['unimodal_epoch']:.2f} | "
            f"{ms['unimodal_epoch'] / epoch:.3f} |",
            f"| covariance pass (`method.covariance_passes`) | {ms['covariance_pass']:.2f} | "
            f"{ms['covariance_pass'] / epoch:.3f} |",
            f"| T for 3 layers (`AlternatingMethod.flat_transforms`) | {ms['transforms']:.2f} | "
            f"{ms['transforms'] / epoch:.3f} |",
            f"| **pass + T (trainer)** | **{covariance['pass_plus_transforms_ms']:.2f}** | "
            f"**{covariance['fraction_of_mie_epoch']:.3f}** |",
            "",
            f"Once per phase of {covariance['phase_epochs']} epochs: "
            f"{100 * covariance['fraction_of_mie_phase']:.1f}% of the phase's training time.",
        ]
    if eigh_rows:
        lines += [
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
    parser.add_argument(
        "--out", type=Path, default=results.DEFAULT_OUT, help=f"results directory (default: {results.DEFAULT_OUT})"
    )
    parser.add_argument(
        "--models", default="mlp", help=f"comma-separated: mlp (the mfeat tables) and any of {list(ENCODER_MODELS)}"
    )
    parser.add_argument("--batch", type=int, default=64, help="batch of the encoder models (default 64)")
    parser.add_argument("--dim", type=int, default=512, help="their common feature size Dim (default 512)")
    parser.add_argument("--width", type=int, default=64, help="ResNet base width (default 64, torchvision's)")
    parser.add_argument(
        "--chunk", type=int, default=0, help="steps per chunk of the streamed loop (default 0: the trainer's choice)"
    )
    parser.add_argument("--repeats", type=int, default=0, help="override every repeat count (e.g. 1 for a smoke test)")
    parser.add_argument("--no-eigh", action="store_true", help="skip the eigh table")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        dest="overrides",
        help="mfeat config overrides section.key=value (e.g. train.phase_epochs=10 for longer streamed phases); "
        "a method section's (e.g. mie.tau) applies to the variants whose method reads it",
    )
    parser.add_argument(
        "--variants",
        default=",".join(v[0] for v in MFEAT_VARIANTS),
        help="comma-separated mfeat variants (default: all); the covariance table needs plain and mie",
    )
    args = parser.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown_variants = sorted(set(args.variants) - {v[0] for v in MFEAT_VARIANTS})
    if unknown_variants:
        parser.error(f"--variants takes {[v[0] for v in MFEAT_VARIANTS]}, got {unknown_variants}")
    args.models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(args.models) - {"mlp", *ENCODER_MODELS})
    if unknown or not args.models:
        parser.error(f"--models takes mlp and {list(ENCODER_MODELS)}, got {args.models}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = results.load_average()
    repeats = REPEATS["quick" if args.quick else "full"]
    if args.repeats:
        repeats = (args.repeats,) * len(repeats)
    step_repeats, stream_repeats, covariance_repeats, eigh_repeats = repeats
    base = configs.get_config("mfeat")
    config = make_config(base, overrides_for("mie", args.overrides), method="mie")

    def progress(message):
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr)

    cases, plans = [], {}
    if "mlp" in args.models:
        dataset = load_dataset("mfeat", config.modalities, LoadOptions(seed=config.seed))
        plans = mfeat_plans(base, dataset, args.variants, args.overrides)
        cases += mfeat_cases(plans)
    encoder_config = make_config(
        configs.merge(base, {"model": {"dim": args.dim, "resnet_width": args.width}}), method="mie"
    )
    for name in args.models:
        if name != "mlp":
            cases += encoder_model_cases(name, encoder_config, args.batch)

    progress(f"timing {len(cases)} variants x {step_repeats} repeats ...")
    rows = measure_steps(cases, step_repeats)
    streaming, covariance = [], {}
    if plans:
        progress(f"timing streamed vs resident phases x {stream_repeats} repeats ...")
        streaming = measure_streaming(plans, [v for v in STREAM_VARIANTS if v in plans], stream_repeats, args.chunk)
        if "plain" in plans and "mie" in plans:
            progress("timing the covariance pass ...")
            covariance = measure_covariance(plans, "fac", covariance_repeats)
    eigh_rows = []
    if not args.no_eigh:
        progress("timing eigh ...")
        eigh_rows = measure_eigh(EIGH_SIZES, eigh_repeats)
    progress("done")

    machine = results.machine_info()
    # Other processes skew absolute times (ratios less so): the load average says whether there were any.
    machine["load_average_1min"] = {"before": load_before, "after": results.load_average()}
    command = " ".join(["python -m benchmarks.step_time", *(sys.argv[1:] if argv is None else argv)]).strip()
    settings = {
        "batch_size": config.train.batch_size,
        "covariance_batch_size": config.mie.covariance_batch_size,
        "dim": config.model.dim,
        "encoder_hidden": config.model.encoder_hidden,
        "scan_steps": SCAN_STEPS,
        "calls_per_unit": CALLS_PER_UNIT,
        "models": args.models,
        "encoder_batch": args.batch,
        "encoder_dim": args.dim,
        "resnet_width": args.width,
        "chunk": args.chunk,
        "alternating_phase": ALTERNATING_PHASE,
        "variants": args.variants,
        "overrides": args.overrides,
        "repeats": {
            "steps": step_repeats,
            "streaming": stream_repeats,
            "covariance": covariance_repeats,
            "eigh": eigh_repeats,
        },
    }
    markdown = to_markdown(machine, command, settings, rows, streaming, covariance, eigh_rows)
    print(markdown)

    report = {
        "machine": machine,
        "command": command,
        "settings": settings,
        "steps": rows,
        "streaming": streaming,
        "covariance": covariance,
        "eigh": eigh_rows,
        "seconds": time.perf_counter() - started,
        "markdown": markdown,
    }
    results.write(args.out, "step_time", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
