"""The deepprop command line, and the package without its C extension."""

import json
import subprocess
import sys

import pytest

from kernels import cli


def test_list_shows_every_kernel_and_backend(capsys):
    import kernels

    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in kernels.names():
        assert name in out
    assert "backend c:" in out and "backend numba:" in out


def test_check_json_lists_cells_with_the_documented_fields(capsys):
    assert cli.main(["check", "--kernel", "relu_forward", "--kernel", "linear_forward",
                     "--sizes", "1,7", "--format", "json"]) == 0
    cells = json.loads(capsys.readouterr().out)
    assert len(cells) == 2 * 3 * 2  # kernels x (numpy, numba, c) x dtypes
    for c in cells:
        assert {"kernel", "backend", "dtype", "ok", "max_error"} <= set(c)
        assert c["ok"] is True and c["max_error"] <= c["tolerance"]


def test_check_fails_when_a_backend_is_wrong(monkeypatch, capsys):
    import kernels

    ref = kernels.REGISTRY["relu_forward"]["numpy"]
    monkeypatch.setitem(kernels.REGISTRY["relu_forward"], "c", lambda x, alpha=None: ref(x) * 1.001)
    assert cli.main(["check", "--kernel", "relu_forward", "--backend", "c", "--sizes", "7"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_refuses_unknown_kernel(capsys):
    assert cli.main(["check", "--kernel", "no_such_kernel"]) == 2
    assert "unknown kernel" in capsys.readouterr().err


@pytest.mark.parametrize("sizes", ["0", "a,b", ""])
def test_check_refuses_bad_sizes(sizes):
    with pytest.raises(SystemExit):
        cli.main(["check", "--sizes", sizes])


def test_package_imports_without_the_c_extension():
    """As after an install with no C compiler: import works, the c backend says why, calls raise."""
    code = """
import sys
sys.modules['kernels._deepprop_c'] = None  # makes `from kernels._deepprop_c import ...` fail
import json, kernels
from kernels import cli
why = kernels.backends()['c']
try:
    kernels.get('relu_forward', 'c')
    raised = False
except kernels.BackendUnavailable as exc:
    raised = 'unavailable' in str(exc)
rc = cli.main(['check', '--kernel', 'residual_add', '--sizes', '3', '--format', 'json'])
print(json.dumps({'why': why, 'raised': raised, 'rc': rc}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["why"] and "not built" in result["why"]
    assert result["raised"] is True
    assert result["rc"] == 0  # an unavailable backend is reported, not failed


def test_bench_harness_reports_time_and_peak_memory_per_depth(capsys):
    import io

    import pandas as pd

    assert cli.main(["bench", "--harness", "2,5", "--backends", "numpy", "--format", "csv"]) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(df["depth"]) == [2, 5]
    assert (df["seconds"] > 0).all() and (df["peak_rss_gib"] > 0).all() and (df["threads"] >= 1).all()


def test_every_help_text_renders(capsys):
    """argparse formats help lazily: a stray % in one option's text crashes only --help of its command."""
    parser = cli.build_parser()
    commands = list(parser._subparsers._group_actions[0].choices)
    assert {"bench", "report", "check", "info"} <= set(commands)
    for argv in [[]] + [[c] for c in commands]:
        with pytest.raises(SystemExit) as exc:
            cli.main([*argv, "--help"])
        assert exc.value.code == 0, argv
        assert "usage: deepprop" in capsys.readouterr().out
