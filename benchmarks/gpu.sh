#!/usr/bin/env bash
# Runs the step-time benchmark on a GPU machine and prints its table: benchmarks/gpu.sh [--quick] [--out DIR] [...]
# Without --models it times every model: the mfeat MLP and the paper's encoders (ResNet18 on
# spectrograms and on frames, BERT-small), each at batch 64 and full width.
#
# Python: $PYTHON (default python3) is used as is when its jax already sees a GPU and it has
# the project's requirements (e.g. a CUDA image with jax[cuda], flax and optax installed;
# PYTHON=/path/to/python selects one). Otherwise a venv is created at $MIE_JAX_GPU_VENV
# (default ~/.cache/mie-jax/venv-gpu, outside the repo) and requirements.txt plus
# "jax[cuda12]" are installed into it together, so pip keeps jax inside the project's range;
# that needs network access and an NVIDIA driver for CUDA 12.
#
# Its time on a GPU is mostly XLA compiles: a few minutes in all.
# Results go where the CPU run's go: benchmarks/results/step_time_<hostname>.{json,md}.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"

ready() {  # A jax that sees a GPU, and the packages the benchmark imports.
  "$1" -c 'import jax, flax, optax, orbax.checkpoint, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null
}

if ! ready "$python"; then
  venv="${MIE_JAX_GPU_VENV:-$HOME/.cache/mie-jax/venv-gpu}"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet -r requirements.txt "jax[cuda12]"
  python="$venv/bin/python"
  ready "$python" || { echo "error: jax in $python sees no GPU (is the NVIDIA driver there?)" >&2; exit 1; }
fi
"$python" -c 'import jax; print("jax", jax.__version__, "on", jax.devices())' >&2
case " $* " in
  *" --models"*) ;;
  *) set -- --models mlp,resnet18_audio,resnet18_frames,bert_small "$@" ;;
esac
PYTHONUNBUFFERED=1 exec "$python" -m benchmarks.step_time "$@"
