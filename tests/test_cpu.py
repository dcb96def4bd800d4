"""The CPU description read from /proc/cpuinfo: model, flags, the notable ones."""

import os

import pytest

from bats_tf import cpu

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile avx512_fp16

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile avx512_fp16
"""


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    def use(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(cpu, "CPUINFO", str(path))
        cpu._fields.cache_clear()

    yield use
    cpu._fields.cache_clear()


def test_model_and_flags_come_from_the_first_processor(cpuinfo):
    cpuinfo(CPUINFO)
    assert cpu.model() == "Intel(R) Xeon(R) Platinum 8488C"
    assert "amx_tile" in cpu.flags() and "avx512_vnni" not in cpu.flags()
    assert cpu.notable_flags() == ["avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16"]


def test_a_missing_cpuinfo_leaves_no_flags_and_a_platform_model(cpuinfo, monkeypatch):
    monkeypatch.setattr(cpu, "CPUINFO", "/nonexistent/cpuinfo")
    cpu._fields.cache_clear()
    assert cpu.flags() == frozenset() and cpu.notable_flags() == []
    assert cpu.model()  # platform's answer, never empty


def test_this_machine_is_described():
    assert cpu.model() and cpu.model() != "unknown"
    assert set(cpu.notable_flags()) <= cpu.flags()


def test_description_and_cache_dir(cpuinfo, monkeypatch):
    cpuinfo(CPUINFO)
    described = cpu.description().split()
    assert "8488C" in described and described[-1] == "sse2"  # model, then sorted flags
    monkeypatch.setenv("BATS_TF_KERNEL_CACHE", "/some/cache")
    assert cpu.cache_dir() == "/some/cache"
    monkeypatch.delenv("BATS_TF_KERNEL_CACHE")
    assert cpu.cache_dir().endswith(os.path.join(".cache", "bats_tf"))
