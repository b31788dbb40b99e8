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
