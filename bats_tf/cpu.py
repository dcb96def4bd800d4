"""This machine's CPU as ``/proc/cpuinfo`` describes it: the model and the feature flags."""

from __future__ import annotations

import functools
import os
import platform

CPUINFO = "/proc/cpuinfo"
# The features that decide which code paths run fast here (the benchmark reports them).
NOTABLE_FLAGS = (
    "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8",
)  # fmt: skip


@functools.cache
def _fields() -> dict[str, str]:
    """The first value of each field of ``/proc/cpuinfo`` (empty where there is none)."""
    fields = {}
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), " ".join(value.split()))
    except OSError:
        pass
    return fields


def model() -> str:
    """The CPU model, else what :mod:`platform` says."""
    fields = _fields()
    for name in ("model name", "Hardware", "Model"):
        if fields.get(name):
            return fields[name]
    return platform.processor() or platform.machine() or "unknown"


def flags() -> frozenset[str]:
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` lists none)."""
    return frozenset(_fields().get("flags", "").split())


def notable_flags() -> list[str]:
    """Which of :data:`NOTABLE_FLAGS` this CPU has."""
    return [f for f in NOTABLE_FLAGS if f in flags()]


def description() -> str:
    """The architecture, model and flags: what code built or measured here depends on."""
    return " ".join([platform.machine(), model(), *sorted(flags())])


def cache_dir() -> str:
    """Where what depends on this machine is kept (compiled kernels, the bfloat16 probe):
    ``$BATS_TF_KERNEL_CACHE``, else ``~/.cache/bats_tf``."""
    return os.environ.get("BATS_TF_KERNEL_CACHE") or os.path.expanduser("~/.cache/bats_tf")
