"""The low-rank T of MIE Eq. 7: top-r eigensolvers against eigh, and gradient modification's cost with it.

  python -m benchmarks.low_rank            # a few minutes on an idle 2-core CPU
  python -m benchmarks.low_rank --tiny     # seconds: small sizes, one repeat (the test's smoke run)
  python -m benchmarks.low_rank --out DIR  # default: benchmarks/results

Two tables, from the public API alone:

* Solvers: at each ``d``, a batch-mean covariance (Eq. 5) of ``COV_BATCHES``
  batches of ReLU features, decomposed by ``jnp.linalg.eigh``, by
  ``jax.experimental.sparse.linalg.lobpcg_standard`` (top ``r``), and by
  ``mie_jax.flat_transform(..., rank=r, solver="subspace")`` (block power
  iteration, the whole low-rank T); with the distance of each low-rank T to the
  dense one and its ``bound``. Every function is jitted and timed warm.
* Gradient modification (GM) on the mfeat MLP classifier (216 -> 256 -> 128,
  head 128 -> 256 -> 64 -> 10, float32), at each batch size of ``GM_BATCHES``:
  ``SCAN_STEPS`` SGD steps in one jitted ``lax.scan`` per call, plain SGD against ``flat_projection()`` with
  the dense T and with the low-rank T (``tol``) on the three head kernels, as in
  the trainer's chain (projection, weight decay, momentum SGD); and the low-rank
  T applied in the backward pass by ``flat_layer`` instead (the chain without
  ``flat_projection``), which projects whichever side is cheaper: a layer's
  inputs (``4 B d r`` FLOPs) or its kernel gradient (``4 d r out``). The T come from
  the covariances of the head inputs on mfeat 'fac' (``COV_BATCHES`` batches of
  12) after ``WARMUP_STEPS`` plain steps. The variants are interleaved within
  every repeat; a ratio is the median over repeats of the per-repeat ratio to
  plain SGD, so slow drifts of the machine cancel. Batch 64 is the trainer's
  (and the issue's) setting; the larger batches show GM's cost once its thin
  rank-r products are a smaller share of the step's arithmetic.
* One wide dense layer (``WIDE``: 4096 -> 4096, batch 64, a rank-64 T): the
  same three ways, where ``flat_layer`` projects 64 input rows instead of
  4096 kernel columns.
"""

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental.sparse.linalg import lobpcg_standard

import mie_jax
from benchmarks import results_files as results
from mie_jax.data.registry import LoadOptions, load_dataset

TAU = 0.4
COV_BATCHES, COV_BATCH = 100, 12  # experiments/configs/mfeat.py's covariance pass.
SOLVER_SIZES = (512, 1024, 2048, 4096)
SOLVER_RANK = 64  # Above what tol 1e-3 keeps on these covariances (the rank column): bound <= tol.
GM_TOL = 1e-3
SCAN_STEPS = 50
GM_BATCHES = (64, 256, 1024)
WARMUP_STEPS = 200
LAYERS = ((216, 256), (256, 128), (128, 256), (256, 64), (64, 10))  # enc1, enc2, fc1, fc2, fc3.
HEAD = ("fc1", "fc2", "fc3")
NAMES = ("enc1", "enc2", *HEAD)
# (solver repeats at d < 4096, at 4096; GM repeats).
REPEATS = {"full": (5, 2, 40), "tiny": (1, 1, 1)}
TINY = {"sizes": (64,), "rank": 8, "scan_steps": 4, "warmup": 4, "cov_batches": 10, "wide": 64, "batches": (8, 16)}
WIDE = {"d": 4096, "batch": 64, "rank": 64, "scan_steps": 10, "repeats": 10}


def time_call(fn: Callable, *args) -> float:
    """Seconds for one call ``fn(*args)``, until its results are ready."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def rows_against_plain(calls: Dict[str, Callable], flops: Dict[str, Optional[float]], repeats: int, steps: int):
    """Times ``calls`` (one has the name ``plain``), interleaved, each ``steps`` steps per call: a row each.

    Every variant takes every position in turn within the repeats; a ratio is
    the median over repeats of the per-repeat ratio to ``plain``, so slow drifts
    of the machine cancel. ``flops`` are XLA's counts per step (or None): it
    counts a scan's body once.
    """
    samples = {name: [] for name in calls}
    names = list(calls)
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_call(calls[name]) / steps)
    plain = flops["plain"]
    return [
        {
            "variant": name,
            "ms_per_step": 1e3 * statistics.median(samples[name]),
            "ratio_to_plain": statistics.median(a / b for a, b in zip(samples[name], samples["plain"])),
            "mflop_per_step": None if flops[name] is None else flops[name] / 1e6,
            "flop_ratio": flops[name] / plain if flops[name] and plain else None,
        }
        for name in names
    ]


def relu_covariance(d: int, batches: int, seed: int = 0) -> jax.Array:
    """Eq. 5 of ``batches`` batches of 12 ReLU features ``relu(x W + b)``: non-negative, as after a ReLU."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(64, d)) / 8.0
    b = rng.normal(size=d) * 0.1
    cov = jnp.zeros((d, d), jnp.float32)
    update = jax.jit(mie_jax.update_covariance)
    for _ in range(batches):
        x = rng.normal(size=(COV_BATCH, 64)) + rng.normal(size=64) * 0.5  # Batches differ in their means.
        cov = update(cov, jnp.asarray(np.maximum(x @ w + b, 0.0), jnp.float32))
    return cov


def spectral_distance(a: jax.Array, b: jax.Array, iterations: int = 100) -> float:
    """``||a - b||_2`` of two symmetric matrices by power iteration (an SVD at d = 4096 costs minutes)."""
    diff = a - b
    v = jax.random.normal(jax.random.key(1), (a.shape[0],), a.dtype)
    v = jax.lax.fori_loop(0, iterations, lambda _, v: (lambda w: w / jnp.linalg.norm(w))(diff @ v), v)
    return float(jnp.linalg.norm(diff @ v))


def measure_solvers(sizes, rank: int, repeats, cov_batches: int, progress) -> List[dict]:
    """Per d: median ms of eigh, lobpcg (top rank), the dense T and the subspace low-rank T; their errors."""
    eigh = jax.jit(jnp.linalg.eigh)
    dense = jax.jit(lambda c: mie_jax.flat_transform(c, TAU))
    subspace = jax.jit(lambda c: mie_jax.flat_transform(c, TAU, rank, solver="subspace"))
    eigh_low_rank = jax.jit(lambda c: mie_jax.flat_transform(c, TAU, rank))
    lobpcg = jax.jit(lambda c, x: lobpcg_standard(c, x)[:2])
    rows = []
    for d in sizes:
        progress(f"solvers at d = {d} ...")
        cov = relu_covariance(d, cov_batches)
        start = jax.random.normal(jax.random.key(0), (d, rank), jnp.float32)
        fns = {
            "eigh": (eigh, cov),
            "lobpcg": (lobpcg, cov, start),
            "dense_t": (dense, cov),
            "subspace_t": (subspace, cov),
        }
        outputs = {name: fn(*args) for name, (fn, *args) in fns.items()}  # Compile and warm up.
        count = repeats[1] if d >= 4096 else repeats[0]
        samples = {name: [] for name in fns}
        for _ in range(count):
            for name, (fn, *args) in fns.items():
                samples[name].append(time_call(fn, *args))
        ms = {name: 1e3 * statistics.median(values) for name, values in samples.items()}
        t_dense = outputs["dense_t"]
        exact = eigh_low_rank(cov)  # The exact truncation: what the subspace solver approximates.
        eigenvalues = outputs["eigh"][0][::-1]
        theta = outputs["lobpcg"][0]
        rows.append(
            {
                "d": d,
                "rank": rank,
                "repeats": count,
                "ms": ms,
                "subspace_speedup_vs_dense_t": ms["dense_t"] / ms["subspace_t"],
                "lobpcg_speedup_vs_eigh": ms["eigh"] / ms["lobpcg"],
                "tol_1e-3_rank": int(mie_jax.flat_rank(cov, TAU, GM_TOL)),
                "subspace_error": spectral_distance(t_dense, outputs["subspace_t"].dense()),
                "subspace_bound": float(outputs["subspace_t"].bound),
                "exact_truncation_error": spectral_distance(t_dense, exact.dense()),
                "exact_bound": float(exact.bound),
                "lobpcg_max_rel_eigenvalue_error": float(jnp.max(jnp.abs(theta - eigenvalues[:rank]) / eigenvalues[0])),
            }
        )
    return rows


# --- gradient modification on the mfeat MLP ---


def init_mlp(seed: int) -> Dict[str, Dict[str, jax.Array]]:
    keys = jax.random.split(jax.random.key(seed), len(LAYERS))
    return {
        name: {
            "kernel": jax.random.normal(k, shape, jnp.float32) * jnp.sqrt(2.0 / shape[0]),
            "bias": jnp.zeros(shape[1], jnp.float32),
        }
        for name, k, shape in zip(NAMES, keys, LAYERS)
    }


def forward(params, x, layer_transforms=None):
    """The logits and the inputs of the head layers (what their covariances summarise).

    ``layer_transforms`` (``{head layer: T}``) modifies those layers' kernel
    gradients in the backward pass, with ``mie_jax.flat_layer``.
    """
    layer_transforms = layer_transforms or {}

    def dense(name, h):
        kernel = params[name]["kernel"]
        return mie_jax.flat_layer(jnp.matmul, h, kernel, layer_transforms.get(name)) + params[name]["bias"]

    h = jax.nn.relu(dense("enc2", jax.nn.relu(dense("enc1", x))))
    hidden = jax.nn.relu(dense("fc1", h))
    bottleneck = dense("fc2", hidden)
    return dense("fc3", bottleneck), {"fc1": h, "fc2": hidden, "fc3": bottleneck}


def loss_fn(params, x, y, layer_transforms=None):
    logits = forward(params, x, layer_transforms)[0]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def optimizer(projection: bool) -> optax.GradientTransformationExtraArgs:
    """The trainer's chain: (flat_projection,) weight decay 1e-4, SGD with momentum 0.9."""
    parts = [mie_jax.flat_projection()] if projection else []
    return optax.chain(*parts, optax.add_decayed_weights(1e-4), optax.sgd(1e-2, momentum=0.9))


def scanned_steps(tx, in_backward: bool = False) -> Callable:
    """``run(params, opt_state, xs, ys, transforms)``: one step per batch of ``xs`` in a jitted scan.

    ``transforms`` go to ``tx`` (``flat_projection``'s tree), or with
    ``in_backward`` to the head layers (``{layer: T}``, ``flat_layer``).
    """

    def run(params, opt_state, xs, ys, transforms):
        layer_transforms, chain_transforms = (transforms, None) if in_backward else (None, transforms)

        def body(carry, batch):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, *batch, layer_transforms)
            updates, opt_state = tx.update(grads, opt_state, params, transforms=chain_transforms)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xs, ys))
        return params, opt_state, losses

    return jax.jit(run)


def head_covariances(params, x: np.ndarray, batches: int) -> Dict[str, jax.Array]:
    """Eq. 5 of the head inputs over ``batches`` consecutive batches of 12 rows of ``x``."""
    _, inputs = jax.jit(forward)(params, jnp.asarray(x[: batches * COV_BATCH]))
    return {
        name: jax.vmap(lambda z: jnp.outer(z.mean(0), z.mean(0)))(f.reshape(batches, COV_BATCH, -1)).sum(0)
        for name, f in inputs.items()
    }


def kernel_tree(params, leaves):
    """``leaves[layer]`` at each head kernel, None elsewhere: the shape of ``transforms=``."""
    return {name: {"kernel": leaves[name] if name in HEAD else None, "bias": None} for name in params}


def mfeat_fac_train():
    """mfeat 'fac' training split: ``(inputs [n, 216] float32, labels [n] int32)``."""
    split = load_dataset("mfeat", ("fac",), LoadOptions(seed=0)).splits["train"]
    return np.asarray(split.inputs["fac"], np.float32), np.asarray(split.labels, np.int32)


def measure_gm(
    x_all: np.ndarray,
    y_all: np.ndarray,
    batch: int,
    repeats: int,
    scan_steps: int,
    warmup: int,
    cov_batches: int,
    progress,
) -> dict:
    """GM against plain SGD on batches of ``batch`` rows of ``x_all``: the T used and a row per variant."""
    rng = np.random.default_rng(0)
    order = rng.integers(0, len(y_all), size=(scan_steps, batch))
    xs, ys = jnp.asarray(x_all[order]), jnp.asarray(y_all[order])
    params = init_mlp(0)
    plain_tx, gm_tx = optimizer(False), optimizer(True)
    run_plain, run_gm = scanned_steps(plain_tx), scanned_steps(gm_tx)
    # Train a little first: the T comes from a model that has learned something, as in phase 2 onwards.
    opt_state = plain_tx.init(params)
    for _ in range(-(-warmup // scan_steps)):
        params, opt_state, _ = run_plain(params, opt_state, xs, ys, None)
    covariances = head_covariances(params, x_all[rng.permutation(len(y_all))], cov_batches)
    progress("covariances and T ...")
    ranks = {name: int(mie_jax.flat_rank(c, TAU, GM_TOL)) for name, c in covariances.items()}
    dense = jax.jit(lambda c: mie_jax.flat_transforms(c, TAU))(covariances)
    # The rank is a static shape: the one tol needs on this covariance (the trainer would fix it in its config).
    low_rank = {name: mie_jax.flat_transform(c, TAU, max(1, ranks[name]), GM_TOL) for name, c in covariances.items()}
    bounds = {name: float(t.bound) for name, t in low_rank.items()}
    errors = {
        name: float(
            np.linalg.norm(np.asarray(dense[name], np.float64) - np.asarray(low_rank[name].dense(), np.float64), 2)
        )
        for name in HEAD
    }
    variants = {
        "plain": (plain_tx, run_plain, None),
        "gm_dense": (gm_tx, run_gm, kernel_tree(params, dense)),
        "gm_low_rank": (gm_tx, run_gm, kernel_tree(params, low_rank)),
        "gm_low_rank_flat_layer": (plain_tx, scanned_steps(plain_tx, in_backward=True), low_rank),
    }
    progress("compiling the GM variants ...")
    calls, flops = {}, {}
    for name, (tx, run, transforms) in variants.items():
        args = (params, tx.init(params), xs, ys, transforms)
        lowered = run.lower(*args)
        flops[name] = (lowered.cost_analysis() or {}).get("flops")
        calls[name] = functools.partial(lowered.compile(), *args)
        time_call(calls[name])  # Warm.
    progress(f"timing GM at batch {batch} x {repeats} repeats ...")
    return {
        "batch": batch,
        "rows": rows_against_plain(calls, flops, repeats, scan_steps),
        "tol": GM_TOL,
        "ranks": ranks,
        "bounds": bounds,
        "errors": errors,
        "dims": {name: int(covariances[name].shape[0]) for name in HEAD},
    }


def measure_wide(d: int, batch: int, rank: int, scan_steps: int, repeats: int, progress) -> dict:
    """One ``d x d`` dense layer on batches of ``batch``: GM by the chain against GM in the backward pass.

    The layer where ``flat_layer`` pays: its inputs (``batch`` rows) are far
    fewer than its kernel's columns (``d``). ``T`` is a rank-``rank``
    :class:`mie_jax.LowRankTransform` on a random orthonormal basis.
    """
    rng = np.random.default_rng(0)
    basis = jnp.asarray(np.linalg.qr(rng.normal(size=(d, rank)))[0], jnp.float32)
    t = mie_jax.LowRankTransform(basis, jnp.linspace(0.33, 0.01, rank, dtype=jnp.float32), jnp.zeros(()))
    params = {"kernel": jnp.asarray(rng.normal(size=(d, d)) / np.sqrt(d), jnp.float32), "bias": jnp.zeros(d)}
    xs = jnp.asarray(rng.normal(size=(scan_steps, batch, d)), jnp.float32)
    ys = jnp.asarray(rng.normal(size=(scan_steps, batch, d)), jnp.float32)
    sgd = optax.sgd(1e-3)

    def run(tx, layer_t, chain_t):
        def body(params_and_state, batch_xy):
            params, state = params_and_state
            x, y = batch_xy

            def loss(p):
                return jnp.mean((mie_jax.flat_layer(jnp.matmul, x, p["kernel"], layer_t) + p["bias"] - y) ** 2)

            grads = jax.grad(loss)(params)
            updates, state = tx.update(grads, state, params, transforms=chain_t)
            return (optax.apply_updates(params, updates), state), None

        return jax.jit(lambda params, state: jax.lax.scan(body, (params, state), (xs, ys))[0])

    chain = optax.chain(mie_jax.flat_projection(), sgd)
    variants = {
        "plain": (sgd, run(sgd, None, None)),
        "gm_low_rank": (chain, run(chain, None, {"kernel": t, "bias": None})),
        "gm_low_rank_flat_layer": (sgd, run(sgd, t, None)),
    }
    progress(f"wide layer d = {d}, batch {batch}, rank {rank} ...")
    calls, flops = {}, {}
    for name, (tx, fn) in variants.items():
        args = (params, tx.init(params))
        lowered = fn.lower(*args)
        flops[name] = (lowered.cost_analysis() or {}).get("flops")
        calls[name] = functools.partial(lowered.compile(), *args)
        time_call(calls[name])  # Warm.
    return {"d": d, "batch": batch, "rank": rank, "rows": rows_against_plain(calls, flops, repeats, scan_steps)}


def gm_markdown(settings: dict, gm: dict) -> List[str]:
    """One batch size's section of the GM table: the T it used and a row per variant."""
    lines = [
        "",
        f"### Batch {gm['batch']}",
        "",
        f"T of the head inputs (fc1, fc2, fc3: d = {gm['dims']['fc1']}, {gm['dims']['fc2']}, {gm['dims']['fc3']}) "
        f"after {settings['warmup']} plain steps, {settings['cov_batches']} covariance batches of {COV_BATCH}. "
        f"Low-rank: `flat_transform(cov, {TAU}, rank, tol={gm['tol']})` with the rank `flat_rank` gives for that "
        f"tol: {', '.join(f'{k} {v}' for k, v in gm['ranks'].items())}; bounds "
        f"{', '.join(f'{k} {v:.1e}' for k, v in gm['bounds'].items())}; measured `||T - T_r||_2` "
        f"{', '.join(f'{k} {v:.1e}' for k, v in gm['errors'].items())}.",
        "",
        "| variant | ms/step | ratio to plain | MFLOP/step (XLA) | FLOP ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in gm["rows"]:
        flops = "-" if row["mflop_per_step"] is None else f"{row['mflop_per_step']:.1f}"
        flop_ratio = "-" if row["flop_ratio"] is None else f"{row['flop_ratio']:.3f}"
        lines.append(
            f"| {row['variant']} | {row['ms_per_step']:.3f} | **{row['ratio_to_plain']:.3f}x** | "
            f"{flops} | {flop_ratio} |"
        )
    return lines


def to_markdown(
    machine: dict, command: str, settings: dict, solver_rows: List[dict], gm_runs: List[dict], wide: dict
) -> str:
    load = machine["load_average_1min"]
    env = ", ".join(f"{k}={v}" for k, v in machine["environment"].items()) or "default"
    lines = [
        "# Low-rank T (MIE Eq. 7): top-r solvers and GM cost",
        "",
        f"Machine: {machine['hostname']}, {machine['platform']}, {machine['cpu']} ({machine['cpu_count']} CPUs); "
        f"jax {machine['jax']}, backend {machine['backend']}; {machine['date_utc']} UTC; "
        f"1-min load average {load['before']} before, {load['after']} after; environment {env}.",
        "",
        f"Command: `{command}`",
        "",
        f"## Solvers (float32, jitted, warm; median of {settings['repeats']['solvers']} calls, "
        f"{settings['repeats']['solvers_4096']} at d >= 4096)",
        "",
        f"Covariance: Eq. 5 of {settings['cov_batches']} batches of {COV_BATCH} ReLU features (rank "
        f"{settings['cov_batches']}). `dense T`: `flat_transform(cov, {TAU})` (eigh and the products). `subspace T`: "
        f'`flat_transform(cov, {TAU}, rank={settings["rank"]}, solver="subspace")` (block power iteration on '
        f"{2 * settings['rank']} vectors, 8 iterations, Rayleigh-Ritz; the whole low-rank T). `lobpcg`: "
        f"`lobpcg_standard` top {settings['rank']} eigenpairs only. Errors: `||T - T_r||_2` against the dense T "
        "(power iteration); `exact` is the truncation of eigh's decomposition to the same rank.",
        "",
        "| d | eigh ms | dense T ms | lobpcg ms | subspace T ms | dense T / subspace T | eigh / lobpcg | "
        "rank at tol 1e-3 | subspace error | subspace bound | exact error | exact bound | "
        "lobpcg max eig err / lambda_max |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in solver_rows:
        ms = row["ms"]
        lines.append(
            f"| {row['d']} | {ms['eigh']:.1f} | {ms['dense_t']:.1f} | {ms['lobpcg']:.1f} | {ms['subspace_t']:.1f} | "
            f"{row['subspace_speedup_vs_dense_t']:.1f}x | {row['lobpcg_speedup_vs_eigh']:.1f}x | "
            f"{row['tol_1e-3_rank']} | {row['subspace_error']:.2e} | {row['subspace_bound']:.2e} | "
            f"{row['exact_truncation_error']:.2e} | {row['exact_bound']:.2e} | "
            f"{row['lobpcg_max_rel_eigenvalue_error']:.1e} |"
        )
    lines += [
        "",
        f"## Gradient modification on the mfeat MLP ({settings['scan_steps']} scanned steps per call, "
        f"median of {settings['repeats']['gm']} interleaved repeats)",
    ]
    for gm in gm_runs:
        lines += gm_markdown(settings, gm)
    lines += [
        "",
        f"## One wide dense layer (d = {wide['d']} -> {wide['d']}, batch {wide['batch']}, rank-{wide['rank']} T, "
        f"{settings['wide']['scan_steps']} scanned SGD steps per call, median of {settings['wide']['repeats']} "
        "interleaved repeats)",
        "",
        "| variant | ms/step | ratio to plain | FLOP ratio |",
        "|---|---:|---:|---:|",
    ]
    for row in wide["rows"]:
        flop_ratio = "-" if row["flop_ratio"] is None else f"{row['flop_ratio']:.3f}"
        lines.append(
            f"| {row['variant']} | {row['ms_per_step']:.3f} | **{row['ratio_to_plain']:.3f}x** | {flop_ratio} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[List[str]]):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.low_rank", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="small sizes and one repeat (a smoke run, meaningless numbers)"
    )
    parser.add_argument(
        "--out", type=Path, default=results.DEFAULT_OUT, help=f"results directory (default: {results.DEFAULT_OUT})"
    )
    parser.add_argument("--sizes", default="", help=f"comma-separated solver sizes d (default {SOLVER_SIZES})")
    parser.add_argument("--rank", type=int, default=0, help=f"solver rank r (default {SOLVER_RANK})")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = results.load_average()
    mode = "tiny" if args.tiny else "full"
    solver_repeats, solver_repeats_4096, gm_repeats = REPEATS[mode]
    sizes = tuple(int(s) for s in args.sizes.split(",") if s) or (TINY["sizes"] if args.tiny else SOLVER_SIZES)
    rank = args.rank or (TINY["rank"] if args.tiny else SOLVER_RANK)
    scan_steps, warmup, cov_batches = (
        (TINY["scan_steps"], TINY["warmup"], TINY["cov_batches"])
        if args.tiny
        else (SCAN_STEPS, WARMUP_STEPS, COV_BATCHES)
    )

    def progress(message):
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr)

    x_all, y_all = mfeat_fac_train()
    gm_runs = [
        measure_gm(x_all, y_all, batch, gm_repeats, scan_steps, warmup, cov_batches, progress)
        for batch in (TINY["batches"] if args.tiny else GM_BATCHES)
    ]
    wide_d = TINY["wide"] if args.tiny else WIDE["d"]
    wide_steps, wide_repeats = (2, 1) if args.tiny else (WIDE["scan_steps"], WIDE["repeats"])
    wide = measure_wide(wide_d, WIDE["batch"], min(WIDE["rank"], wide_d // 2), wide_steps, wide_repeats, progress)
    solver_rows = measure_solvers(sizes, rank, (solver_repeats, solver_repeats_4096), cov_batches, progress)
    progress("done")

    machine = results.machine_info()
    machine["load_average_1min"] = {"before": load_before, "after": results.load_average()}
    command = " ".join(["python -m benchmarks.low_rank", *(sys.argv[1:] if argv is None else argv)]).strip()
    settings = {
        "tau": TAU,
        "sizes": list(sizes),
        "rank": rank,
        "cov_batches": cov_batches,
        "scan_steps": scan_steps,
        "warmup": warmup,
        "gm_tol": GM_TOL,
        "repeats": {"solvers": solver_repeats, "solvers_4096": solver_repeats_4096, "gm": gm_repeats},
        "wide": {**{k: wide[k] for k in ("d", "batch", "rank")}, "scan_steps": wide_steps, "repeats": wide_repeats},
    }
    markdown = to_markdown(machine, command, settings, solver_rows, gm_runs, wide)
    print(markdown)
    report = {
        "machine": machine,
        "command": command,
        "settings": settings,
        "solvers": solver_rows,
        "gm": gm_runs,
        "wide": wide,
        "seconds": time.perf_counter() - started,
        "markdown": markdown,
    }
    results.write(args.out, "low_rank", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
