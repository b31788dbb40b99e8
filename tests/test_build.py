"""The C build: its flags are recorded in the module, and the sanitizer env really is sanitized."""

import os

import pytest

import kernels


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
def test_build_flags_are_recorded():
    info = kernels.backend_info()["c_build"]
    assert "cflags=" in info and "-O" in info
    assert "-ffast-math" not in info  # NaN/Inf propagation and reduction order depend on it


@pytest.mark.skipif(not os.environ.get("DEEPPROP_EXPECT_SANITIZED"), reason="only in tox -e sanitize")
def test_the_sanitizer_env_runs_a_sanitized_module():
    assert kernels.backends()["c"] is None, kernels.backends()["c"]
    assert "-fsanitize=address" in kernels.backend_info()["c_build"]


def test_a_newer_build_beside_the_imported_one_is_named(tmp_path):
    """Python imports _deepprop_c.cpython-3XX-...so before _deepprop_c.abi3.so whatever their ages, so a
    hand build (csrc/build.py) left in kernels/ shadows every later `pip install -e .`: newer_build names
    the newer file, and only a newer one."""
    from kernels import _c

    tagged = tmp_path / "_deepprop_c.cpython-311-x86_64-linux-gnu.so"
    abi3 = tmp_path / "_deepprop_c.abi3.so"
    tagged.write_bytes(b"old")
    assert _c.newer_build(tagged) is None                     # alone
    abi3.write_bytes(b"new")
    os.utime(tagged, (1_000_000, 1_000_000))
    os.utime(abi3, (2_000_000, 2_000_000))
    assert _c.newer_build(tagged) == abi3                     # the stale one imported: named
    assert _c.newer_build(abi3) is None                       # the newest imported: nothing to say
    (tmp_path / "unrelated.so").write_bytes(b"x")
    assert _c.newer_build(abi3) is None
