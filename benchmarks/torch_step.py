"""The mfeat MLP's plain and MIE steps written in PyTorch, timed against the library's JAX steps.

  python -m benchmarks.torch_step              # about a minute on a 2-core CPU
  python -m benchmarks.torch_step --quick      # fewer repeats
  python -m benchmarks.torch_step --threads 1  # default: every core this process may use
  python -m benchmarks.torch_step --out DIR    # default: benchmarks/results

torch is an optional benchmark dependency, not in requirements.txt: install it
(``pip install torch``) or put a directory holding it on ``PYTHONPATH``.

The PyTorch step is our own eager code doing what ``steps.optimizer_step``
does with the chain of ``steps.make_optimizer`` for the mfeat config: plain,
SGD with momentum and weight decay; MIE, SAM (the gradient at the parameters
moved by ``rho * g / ||g||``, global norm) then each head kernel's gradient
multiplied by its T matrix, then the same SGD. The JAX steps are
benchmarks/step_time.py's, one jitted step per call ("per-call") and
``SCAN_STEPS`` steps in one ``lax.scan`` ("scanned", the trainer's regime).
Before timing, both frameworks take the same steps from the same parameters
and batch, and their updates must agree within ``TOLERANCE``.

Both run in one process with the same number of threads: XLA's CPU pool is
sized by ``PJRT_NPROC`` when its backend starts, torch's by
``torch.set_num_threads``. Times are medians over repeats that interleave the
variants, each timed after a few untimed steps of its own; a ratio is the
median of the per-repeat ratios.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import List, NamedTuple, Optional

try:
    import torch
    import torch.nn.functional as F
except ModuleNotFoundError as error:
    if error.name != "torch":
        raise
    raise SystemExit(
        "torch is not installed: pip install torch, or put it on PYTHONPATH, to run this benchmark "
        "(optional benchmark dependency)"
    ) from None

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import mie_jax
from benchmarks import results_files as results
from benchmarks.step_time import CALLS_PER_UNIT, SCAN_STEPS, make_step, scan_steps, time_chain
from experiments import configs
from mie_jax.models.classifier import UnimodalClassifier
from mie_jax.models.head import HEAD_LAYERS, Head
from mie_jax.models.mlp import MLPEncoder
from mie_jax.train import steps
from mie_jax.train.config import TrainConfig, flat_items, make_config

IN_FEATURES = 216  # mfeat 'fac', the classifier step_time.py times.
NUM_CLASSES = 10
LAYERS = (("encoder", "hidden"), ("encoder", "out"), *(("head", layer) for layer in HEAD_LAYERS))
TOLERANCE = 1e-4  # On the largest relative difference of the two frameworks' parameter updates.
# Steps from the same start: from the second on they check the momentum buffers, and they grow the update
# well above float32's rounding of the parameters (about 5e-5 of one step's update on the mfeat MLP).
CHECK_STEPS = 5
REPEATS = {"full": 20, "quick": 5}
WARM_STEPS = 3  # Untimed, before each timed chunk (at least one call).
VARIANTS = ("plain", "mie")
# The config values ("section.key") the PyTorch step implements (the mfeat config's); others would need more code.
SUPPORTED = {
    "optimizer.name": "sgd",
    "sam.normalize": "global",
    "sam.params": "all",
    "sam.mix": None,
    "optimizer.lr_schedule": "constant",
    "optimizer.skip_nonfinite_steps": 0,
}


class Problem(NamedTuple):
    """The JAX classifier, one batch, and the T tree of ``transforms=`` (a ``[d, d]`` matrix per head kernel)."""

    graphdef: nnx.GraphDef
    params: dict
    model_state: dict
    x: jax.Array
    y: jax.Array
    transforms: dict


def build(
    config: TrainConfig, in_features: int = IN_FEATURES, num_classes: int = NUM_CLASSES, widths=(256, 64)
) -> Problem:
    """The trainer's MLP classifier, a random float32 batch, and fixed random T matrices.

    T is Eq. 7 of a random covariance: symmetric positive definite with
    eigenvalues in ``[exp(-tau), 1]``, like the trainer's; its values do not
    change what applying it costs.
    """
    rngs = nnx.Rngs(config.seed)
    model = UnimodalClassifier(
        MLPEncoder(in_features, config.model.dim, hidden=config.model.encoder_hidden, rngs=rngs),
        Head(config.model.dim, num_classes, widths=widths, rngs=rngs),
    )
    graphdef, params, model_state = steps.split_model(model)
    key_x, key_y, key_t = jax.random.split(jax.random.key(config.seed), 3)
    x = jax.random.normal(key_x, (config.train.batch_size, in_features), jnp.float32)
    y = jax.random.randint(key_y, (config.train.batch_size,), 0, num_classes)
    covariances = {}
    for layer, key in zip(HEAD_LAYERS, jax.random.split(key_t, len(HEAD_LAYERS))):
        d = params["head"][layer]["kernel"].shape[0]
        a = jax.random.normal(key, (d, d), jnp.float32)
        covariances[layer] = a @ a.T / d
    transforms = steps.head_kernel_tree(params, mie_jax.flat_transforms(covariances, config.mie.tau))
    return Problem(graphdef, params, model_state, x, y, transforms)


def jax_step(config: TrainConfig, problem: Problem, *, mie: bool, scanned: bool = False):
    """step_time.py's JAX step as ``(fn, init)``: ``fn(carry) -> carry`` over ``(params, model_state, opt_state)``.

    ``scanned`` runs ``SCAN_STEPS`` steps per call.
    """
    tx = steps.make_optimizer(config.optimizer, steps_per_epoch=1, sam=config.sam if mie else None)
    step = make_step(problem.graphdef, tx)
    fn = jax.jit(scan_steps(step, SCAN_STEPS) if scanned else step)
    transforms = problem.transforms if mie else None
    init = (problem.params, problem.model_state, tx.init(problem.params))
    return (lambda carry: fn(*carry, problem.x, problem.y, transforms)[:3]), init


def _tensor(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array))  # A writable copy: torch warns on read-only buffers.


class TorchStep:
    """The same classifier and step in eager PyTorch, from the JAX problem's parameters.

    ``mie=False`` is the plain step; ``mie=True`` adds SAM and the T matrices.
    ``step(x, y)`` updates the parameters in place and returns the loss at
    the parameters before the update, as the JAX step does.
    """

    def __init__(self, config: TrainConfig, problem: Problem, *, mie: bool):
        values = flat_items(config)
        unsupported = {k: values[k] for k, v in SUPPORTED.items() if values[k] != v}
        if unsupported:
            raise ValueError(f"TorchStep implements {SUPPORTED} only, got {unsupported}.")
        # torch's linear weight is [out, in], the transpose of a Flax kernel [in, out].
        self.params = [
            _tensor(array).requires_grad_()
            for group, layer in LAYERS
            for array in (problem.params[group][layer]["kernel"].T, problem.params[group][layer]["bias"])
        ]
        # The index of each head kernel's weight in self.params -> its T.
        self.transforms = (
            {
                2 * LAYERS.index(("head", layer)): _tensor(problem.transforms["head"][layer]["kernel"])
                for layer in HEAD_LAYERS
            }
            if mie
            else {}
        )
        self.rho = config.sam.rho if mie else None
        # torch's SGD adds the weight decay to p.grad inside step(): after T, as the optax chain does.
        optimizer = config.optimizer
        self.optimizer = torch.optim.SGD(
            self.params, lr=optimizer.learning_rate, momentum=optimizer.momentum, weight_decay=optimizer.weight_decay
        )

    @staticmethod
    def loss(params: List[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the classifier with ``params`` (weight, bias per layer of ``LAYERS``)."""
        w1, b1, w2, b2, w3, b3, w4, b4, w5, b5 = params
        features = F.relu(F.linear(F.relu(F.linear(x, w1, b1)), w2, b2))  # MLPEncoder
        hidden = F.relu(F.linear(features, w3, b3))  # Head: fc1 -> ReLU -> fc2 -> fc3.
        return F.cross_entropy(F.linear(F.linear(hidden, w4, b4), w5, b5), y)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One training step on the batch ``(x, y)``; returns the loss before it."""
        loss = self.loss(self.params, x, y)
        grads = torch.autograd.grad(loss, self.params)
        if self.rho is not None:
            with torch.no_grad():
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                scale = torch.where(norm > 0, self.rho / norm, 0.0)  # A zero gradient has no direction.
                # The gradient at a perturbed copy, as mie_jax.sam takes it: adding eps in place and
                # subtracting it afterwards would not restore the parameters exactly in float32.
                perturbed = [(p + scale * g).requires_grad_() for p, g in zip(self.params, grads)]
            grads = torch.autograd.grad(self.loss(perturbed, x, y), perturbed)
            # Flax's T @ g on a kernel [in, out] is g @ T^T on torch's weight [out, in].
            grads = [g @ self.transforms[i].T if i in self.transforms else g for i, g in enumerate(grads)]
        for p, g in zip(self.params, grads):
            p.grad = g
        self.optimizer.step()
        return loss.detach()


def _as_torch_layout(params: dict) -> List[np.ndarray]:
    """JAX parameters in ``TorchStep.params``' order and layout."""
    return [
        np.asarray(a)
        for group, layer in LAYERS
        for a in (params[group][layer]["kernel"].T, params[group][layer]["bias"])
    ]


def _relative_difference(updates: List[np.ndarray], reference: List[np.ndarray]) -> float:
    """The largest ``max |u - r| / max |r|`` over the tensors."""
    return max(float(np.max(np.abs(u - r)) / np.max(np.abs(r))) for u, r in zip(updates, reference))


def check_agreement(config: TrainConfig, problem: Problem, num_steps: int = CHECK_STEPS) -> dict:
    """Takes ``num_steps`` plain and MIE steps in both frameworks from the same parameters and batch.

    Returns:
      ``{variant: largest relative difference of the torch and JAX updates}``
      and ``"mie_vs_plain"``, the same measure between JAX's MIE and plain
      updates: how far apart the check can tell steps.

    Raises:
      AssertionError: a difference above ``TOLERANCE``.
    """
    start = _as_torch_layout(problem.params)
    x, y = _tensor(problem.x), _tensor(problem.y).long()
    updates, errors = {}, {}
    for variant in VARIANTS:
        fn, carry = jax_step(config, problem, mie=variant == "mie")
        twin = TorchStep(config, problem, mie=variant == "mie")
        for _ in range(num_steps):
            carry = fn(carry)
            twin.step(x, y)
        updates[variant] = [a - s for a, s in zip(_as_torch_layout(carry[0]), start)]
        errors[variant] = _relative_difference(
            [p.detach().numpy() - s for p, s in zip(twin.params, start)], updates[variant]
        )
        if errors[variant] > TOLERANCE:  # Not an assert: the check must also run under python -O.
            raise AssertionError(
                f"{variant}: PyTorch and JAX updates differ by {errors[variant]:.2e} (relative), over {TOLERANCE}"
            )
    errors["mie_vs_plain"] = _relative_difference(updates["mie"], updates["plain"])
    return errors


def xla_pool_threads() -> Optional[int]:
    """Threads of XLA's CPU intra-op pool in this process, counted by name (Linux); None elsewhere."""
    try:
        return sum(
            (Path("/proc/self/task") / task / "comm").read_text().strip() == "tf_XLAEigen"
            for task in os.listdir("/proc/self/task")
        )
    except OSError:
        return None


def measure(runners: dict, repeats: int) -> dict:
    """``{name: [seconds per step, one per repeat]}`` for runners ``name -> (fn, init, steps per call)``."""
    for fn, init, _ in runners.values():  # Compile, then one warm call each.
        time_chain(fn, init, calls=2)
    samples = {name: [] for name in runners}
    names = list(runners)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # Every runner takes every position.
            fn, init, per_call = runners[name]
            # Untimed steps first, as in a training loop: the other framework's idle threads (OpenMP's
            # spin after each parallel region) stop competing for the cores, and this one's wake up.
            time_chain(fn, init, max(1, WARM_STEPS // per_call))
            calls = max(1, CALLS_PER_UNIT // per_call)
            samples[name].append(time_chain(fn, init, calls) / (calls * per_call))
    return samples


def summarise(samples: dict) -> dict:
    """Median ms per step, and the median per-repeat ratios: PyTorch over JAX, MIE over plain."""

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(samples[a], samples[b]))

    summary = {"ms": {name: 1e3 * statistics.median(values) for name, values in samples.items()}}
    summary["torch_over_jax"] = {
        f"{variant}/{mode}": ratio(f"torch/{variant}", f"jax_{mode}/{variant}")
        for variant in VARIANTS
        for mode in ("per_call", "scanned")
    }
    summary["mie_over_plain"] = {
        framework: ratio(f"{framework}/mie", f"{framework}/plain")
        for framework in ("jax_per_call", "jax_scanned", "torch")
    }
    return summary


def to_markdown(machine: dict, command: str, settings: dict, errors: dict, summary: dict) -> str:
    """The report: machine, command, the agreement check and the timings."""
    ms, over_jax, over_plain = summary["ms"], summary["torch_over_jax"], summary["mie_over_plain"]
    lines = [
        "# PyTorch vs JAX step time",
        "",
        f"Machine: {machine['hostname']}, {machine['platform']}, {machine['cpu']} ({machine['cpu_count']} CPUs); "
        f"jax {machine['jax']} (backend {machine['backend']}), torch {settings['torch']}; python "
        f"{machine['python']}; {machine['date_utc']} UTC; 1-min load average "
        f"{machine['load_average_1min']['before']} before, {machine['load_average_1min']['after']} after; "
        f"environment {machine['environment'] or 'default'}.",
        "",
        f"Command: `{command}`",
        "",
        f"Threads: {settings['threads']} requested; torch.get_num_threads() = {settings['torch_threads']}, "
        f"XLA CPU pool = {settings['xla_pool_threads']} (tf_XLAEigen threads).",
        "",
        f"mfeat 'fac' MLP ({IN_FEATURES} -> {settings['encoder_hidden']} -> {settings['dim']}, head "
        f"{settings['dim']} -> 256 -> 64 -> {NUM_CLASSES}), batch {settings['batch_size']}, float32, random inputs "
        f"and T. plain: SGD (momentum {settings['momentum']}, weight decay {settings['weight_decay']}); mie: SAM "
        f"(rho {settings['rho']}, global norm) + T on the 3 head kernels + the same SGD. PyTorch: eager, one "
        f"step per call. JAX per-call: one jitted step per call; scanned: {SCAN_STEPS} steps in one `lax.scan`. "
        f"Median over {settings['repeats']} interleaved repeats, each after {WARM_STEPS} untimed steps (one "
        f"untimed call when scanned); a ratio is the median of the per-repeat ratios.",
        "",
        f"Agreement after {settings['check_steps']} steps from the same parameters and batch (largest "
        f"`max|Δtorch - Δjax| / max|Δjax|` over the parameter tensors; tolerance {TOLERANCE:g}): plain "
        f"{errors['plain']:.1e}, mie {errors['mie']:.1e}; for scale, JAX's mie and plain updates differ by "
        f"{errors['mie_vs_plain']:.2f}.",
        "",
        "| step | JAX per-call ms | JAX scanned ms | PyTorch ms | PyTorch / JAX per-call | PyTorch / JAX scanned |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        lines.append(
            f"| {variant} | {ms[f'jax_per_call/{variant}']:.3f} | {ms[f'jax_scanned/{variant}']:.3f} | "
            f"{ms[f'torch/{variant}']:.3f} | {over_jax[f'{variant}/per_call']:.2f}x | "
            f"{over_jax[f'{variant}/scanned']:.2f}x |"
        )
    lines.append(
        f"| mie / plain | {over_plain['jax_per_call']:.2f}x | {over_plain['jax_scanned']:.2f}x | "
        f"{over_plain['torch']:.2f}x | | |"
    )
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[List[str]]):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_step", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, noisier numbers)")
    parser.add_argument(
        "--out", type=Path, default=results.DEFAULT_OUT, help=f"results directory (default: {results.DEFAULT_OUT})"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="threads of both frameworks (default: the cores this process may use)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = results.load_average()
    # Read by XLA when its CPU backend starts, which nothing above has done yet.
    os.environ["PJRT_NPROC"] = str(args.threads)
    torch.set_num_threads(args.threads)
    repeats = REPEATS["quick" if args.quick else "full"]
    config = make_config(configs.get_config("mfeat"), method="mie")
    problem = build(config)
    errors = check_agreement(config, problem)
    print(f"agreement: {errors}", file=sys.stderr)

    x, y = _tensor(problem.x), _tensor(problem.y).long()
    runners = {}
    for variant in VARIANTS:
        mie = variant == "mie"
        runners[f"jax_per_call/{variant}"] = (*jax_step(config, problem, mie=mie), 1)
        runners[f"jax_scanned/{variant}"] = (*jax_step(config, problem, mie=mie, scanned=True), SCAN_STEPS)
        # The carry is unused: the PyTorch step updates its parameters in place.
        runners[f"torch/{variant}"] = (lambda _, twin=TorchStep(config, problem, mie=mie): twin.step(x, y), None, 1)
    print(f"timing {len(runners)} runners x {repeats} repeats ...", file=sys.stderr)
    summary = summarise(measure(runners, repeats))

    machine = results.machine_info()
    machine["load_average_1min"] = {"before": load_before, "after": results.load_average()}
    command = " ".join(["python -m benchmarks.torch_step", *(sys.argv[1:] if argv is None else argv)]).strip()
    settings = {
        "model": "mfeat MLP",
        "batch_size": config.train.batch_size,
        "dim": config.model.dim,
        "encoder_hidden": config.model.encoder_hidden,
        "learning_rate": config.optimizer.learning_rate,
        "momentum": config.optimizer.momentum,
        "weight_decay": config.optimizer.weight_decay,
        "rho": config.sam.rho,
        "scan_steps": SCAN_STEPS,
        "calls_per_unit": CALLS_PER_UNIT,
        "repeats": repeats,
        "check_steps": CHECK_STEPS,
        "tolerance": TOLERANCE,
        "torch": torch.__version__,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "xla_pool_threads": xla_pool_threads(),
    }
    markdown = to_markdown(machine, command, settings, errors, summary)
    print(markdown)
    report = {
        "machine": machine,
        "command": command,
        "settings": settings,
        "agreement": errors,
        **summary,
        "seconds": time.perf_counter() - started,
        "markdown": markdown,
    }
    results.write(args.out, "torch_step", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
