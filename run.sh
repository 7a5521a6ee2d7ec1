#!/usr/bin/env bash
# Trains on the embedded default dataset (or what the flags say): ./run.sh [--dataset ...] [--method ...]
source "$(dirname "$0")/scripts/ensure_venv.sh"
exec "$venv/bin/python" -m experiments.run "$@"
