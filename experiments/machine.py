"""Where numbers come from: the machine, the software and the load a run or a benchmark saw."""

import datetime
import os
import platform
import socket
from typing import Optional

import jax

# Settings that change the timings, recorded when set (eigh runs on OpenBLAS threads on CPU).
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "JAX_PLATFORMS")


def load_average() -> Optional[float]:
    """The 1-minute load average, or None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    """Where the numbers come from."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:  # platform.processor() is often empty on Linux.
            cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu)
    except OSError:
        pass
    device = jax.devices()[0]
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "environment": {name: os.environ[name] for name in THREAD_ENV if name in os.environ},
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
    }
