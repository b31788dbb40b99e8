"""deepprop sweep: ids, seeds, atomic shards, resume after SIGKILL, a worker killed mid-task, error rows,
the same results on 1 and 2 workers, and report --sweep. Real LocalClusters on 127.0.0.1, tiny nets."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

from kernels import cli, depth, sweep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULT_COLS = [c for c in sweep.SCHEMA_COLUMNS if c not in sweep.TIMING_COLUMNS]

GRID = """\
seeds = [0, 1, 2]
batch_size = 2
[[grid]]
activation = ["relu", "tanh"]
init = ["he_normal", "xavier_normal"]
depth = [4, 9]
width = 8
batch = 4
backend = "numpy"
{hook}
[[grid]]
norm = "batch"
batch = 1
depth = 3
width = 6
backend = "numpy"
{hook}
"""


def write_spec(tmp_path, name, hook="", extra=""):
    path = tmp_path / f"{name}.toml"
    out = tmp_path / name
    path.write_text(f'output = "{out}"\n{extra}' + GRID.format(hook=f'_hook = "{hook}"' if hook else ""))
    return path, out


def shards_ok(out):
    """Every shard readable, the union has no duplicate id; returns the union."""
    parts = [pd.read_parquet(p) for p in sweep._shard_paths(out)]
    df = pd.concat(parts, ignore_index=True)
    assert not df["id"].duplicated().any()
    assert not list((out / "shards").glob(".tmp-*"))
    return df


def by_id(df):
    return df[RESULT_COLS].sort_values("id").reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted sweep on a real 2-worker LocalCluster (27 units: 24 + 3 error rows)."""
    tmp = tmp_path_factory.mktemp("ref")
    path, out = write_spec(tmp, "ref")
    spec = sweep.load_spec(path)
    res = sweep.run_sweep(spec, workers=2, progress=False, log=lambda m: None)
    return spec, out, res, sweep.load_results(out)


# ---- no cluster ---------------------------------------------------------------------------------

def test_ids_are_canonical_and_seeds_derive_from_them(tmp_path):
    a = sweep.parse_spec({"output": "x", "seeds": 2, "grid": {"sigma_w2": 2, "depth": [3], "init": "normal"}})
    b = sweep.parse_spec({"output": "y", "seeds": [0, 1], "grid": {"init": ["normal"], "depths": 3,
                                                                     "sigma_w2": 2.0}})
    ua, ub = a.units(), b.units()
    assert [u["id"] for u in ua] == [u["id"] for u in ub]          # key order, 2 vs 2.0, depths alias
    assert len({u["id"] for u in ua}) == 2 and ua[0]["key"] == ua[1]["key"]
    assert [u["seed"] for u in ua] == [sweep.seed_of(u["id"]) for u in ua]
    assert ua[0]["seed"] != ua[1]["seed"] and all(0 <= u["seed"] < 2 ** 64 for u in ua)
    own = sweep.parse_spec({"output": "x", "seeds": 3, "grid": [{"depth": [2, 3]}, {"depth": 5, "seeds": 1}]})
    assert len(own.units()) == 2 * 3 + 1                                    # a grid's own seeds
    lit = sweep.parse_spec({"output": "x", "seeds": [5], "derive_seeds": False, "grid": {"depth": 3}})
    assert lit.units()[0]["seed"] == 5
    c = sweep.parse_spec({"output": "x", "seeds": 2, "code_version": "other", "grid": {"sigma_w2": 2, "depth": 3,
                                                                                       "init": "normal"}})
    assert {u["id"] for u in c.units()}.isdisjoint({u["id"] for u in ua})   # the code version is in the id


@pytest.mark.parametrize("data, word", [
    ({"output": "x", "grid": {"depthz": 3}}, "depthz"),
    ({"output": "x", "grid": {"depth": "ten"}}, "depth"),
    ({"output": "x", "grid": {"width": [[4, 4]]}}, "width"),
    ({"output": "x", "seeds": [-1], "grid": {"depth": 3}}, "seeds"),
    ({"output": "x", "batch_size": 0, "grid": {"depth": 3}}, "batch_size"),
    ({"grid": {"depth": 3}}, "output"),
    ({"output": "x"}, "grid"),
    ({"output": "x", "grids": {}}, "grids"),
])
def test_bad_spec_names_the_key(data, word):
    with pytest.raises(sweep.SpecError, match=word):
        sweep.parse_spec(data)


def test_error_row_never_raises():
    unit = sweep.parse_spec({"output": "x", "seeds": 1, "grid": {"norm": "batch", "batch": 1, "depth": 2}}).units()[0]
    row = sweep.run_unit(unit, code=sweep.code_version())
    assert row["status"] == "error" and "batch norm needs batch >= 2" in row["error"]
    assert set(row) == set(sweep.SCHEMA_COLUMNS)
    bad = sweep.run_unit(unit, code="not-this-code")
    assert bad["status"] == "error" and "code version mismatch" in bad["error"]


def test_shard_write_is_atomic(tmp_path, monkeypatch):
    unit = sweep.parse_spec({"output": "x", "seeds": 1, "grid": {"depth": 2, "width": 4, "batch": 2,
                                                                 "backend": "numpy"}}).units()[0]
    row = sweep.run_unit(unit, code=sweep.code_version())
    assert row["status"] in ("ok", "vanishing", "exploding")
    p = sweep.write_shard(tmp_path, "s1", [row])
    assert pd.read_parquet(p)["id"].tolist() == [unit["id"]]
    import pyarrow.parquet as pq

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        sweep.write_shard(tmp_path, "s2", [row])
    assert sorted(x.name for x in (tmp_path / "shards").iterdir()) == ["s1.parquet"]   # no s2, no temp file


def test_batches_cover_every_unit_once():
    spec = sweep.parse_spec({"output": "x", "seeds": 3, "grid": {"depth": [2, 50, 400], "width": [4, 64]}})
    units = spec.units()
    for bs in (None, 1, 4):
        batches = sweep.make_batches(units, 2, bs)
        ids = [u["id"] for b in batches for u in b]
        assert sorted(ids) == sorted(u["id"] for u in units)
        assert len({sweep.batch_name(b) for b in batches}) == len(batches)


# ---- real clusters ------------------------------------------------------------------------------

def test_local_cluster_sweep_and_error_rows(reference):
    spec, out, res, df = reference
    units = spec.units()
    assert res.total == len(units) == 27 and res.done == 27 and res.failed == 3 and res.skipped == 0
    assert sorted(df["id"]) == sorted(u["id"] for u in units)
    shards_ok(out)
    err = df[df["status"] == "error"]
    assert len(err) == 3 and err["error"].str.contains("batch norm needs batch >= 2").all()
    assert (df["compute_seconds"] > 0).all()
    # every row is run_config's answer for its configuration and derived seed
    for _, r in df[df["status"] != "error"].head(6).iterrows():
        cfg = depth.Config(**json.loads(r["params"]))
        s = depth.run_config(cfg, (int(r["seed"]),)).summary
        assert r["log10_input_grad_ratio"] == s["log10_input_grad_ratio"] and r["status"] == s["status"]
    # a re-run of a finished sweep runs nothing
    again = sweep.run_sweep(spec, workers=1, progress=False, log=lambda m: None)
    assert again.done == 0 and again.skipped == 27
    # aggregated: the depth columns, the mean over seeds of run_config's per-seed values
    table, errors = sweep.aggregate(df)
    assert len(table) == 8 and len(errors) == 3 and list(table.columns[:21]) == depth.CSV_COLUMNS
    row = table.iloc[0]
    seeds = tuple(int(s) for s in row["seeds"].split())
    cfg = depth.Config(activation=row["activation"], init=row["init"], width=8, batch=4,
                       depth=int(row["depth"]), backend="numpy")
    s = depth.run_config(cfg, seeds).summary
    for c in ("log10_input_grad_ratio", "log10_weight_grad_ratio", "rate", "theory_rate", "status"):
        assert row[c] == s[c], c


def test_report_reproduces_deepprop_depth_csv(tmp_path, capsys):
    """derive_seeds = false: seeds 0,1 as in deepprop depth, and the report's CSV is byte-identical (in
    the SPEC's row order, which is not the alphabetical one)."""
    path = tmp_path / "lit.toml"
    path.write_text(f'output = "{tmp_path / "lit"}"\nseeds = [0, 1]\nderive_seeds = false\n[grid]\n'
                    'activation = ["tanh", "relu"]\ninit = "xavier_normal"\ndepth = [7, 3]\nwidth = 6\n'
                    'batch = 4\nbackend = "numpy"\n')
    assert cli.main(["sweep", str(path), "--workers", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["report", "--sweep", str(tmp_path / "lit"), "--format", "csv"]) == 0
    got = capsys.readouterr().out
    assert cli.main(["depth", "--activation", "tanh,relu", "--init", "xavier_normal", "--depths", "7,3",
                     "--width", "6", "--batch", "4", "--backend", "numpy", "--seeds", "0,1", "--format", "csv",
                     "--no-progress"]) == 0
    assert got == capsys.readouterr().out
    files = tmp_path / "rep"
    assert cli.main(["report", "--sweep", str(tmp_path / "lit"), "--sweep-outdir", str(files)]) == 0
    table_csv = (files / "table.csv").read_text()
    assert table_csv.startswith("# command: deepprop report --sweep")
    assert "\n".join(ln for ln in table_csv.splitlines() if not ln.startswith("# ")).startswith("activation,init,")
    assert "- command: deepprop report --sweep" in (files / "table.md").read_text()
    runs = (files / "runs.md").read_text()
    assert "- CPU: " in runs and "- BLAS: " in runs and "- threads: " in runs
    run_rows = [ln for ln in runs.splitlines() if ln.startswith("| 20")]
    assert len(run_rows) == 1 and "| 8 | 0 | 0 | 1 |" in run_rows[0], runs  # 8 run, 0 skipped, 0 failed, 1 worker
    try:
        import matplotlib  # noqa: F401
        assert (files / "table.png").stat().st_size > 1000
    except ImportError:
        pass
    (files / "table.png").write_bytes(b"an earlier report's plot")   # without matplotlib it would stay stale
    def no_pyplot():
        raise RuntimeError("matplotlib is not installed")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(depth, "_pyplot", no_pyplot)
        assert cli.main(["report", "--sweep", str(tmp_path / "lit"), "--sweep-outdir", str(files)]) == 0
    assert (files / "table.csv").exists() and not (files / "table.png").exists()
    assert cli.main(["report", "--sweep", str(tmp_path / "nothing")]) == 2


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path, reference):
    _, _, _, ref = reference
    path, out = write_spec(tmp_path, "killed", hook="sleep:0.15")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "kernels.cli", "sweep", str(path), "--workers", "2",
                             "--no-progress"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(sweep._shard_paths(out)) < 2 and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # the orphaned worker processes of the killed sweep
        except ProcessLookupError:
            pass
        proc.wait(10)
        proc.stderr.close()
    before = shards_ok(out)
    assert 0 < len(before) < 27
    spec = sweep.load_spec(path)
    res = sweep.run_sweep(spec, workers=2, progress=False, log=lambda m: None)
    assert res.skipped == len(before) and res.done == 27 - len(before)
    union = shards_ok(out)                          # no duplicate row across old and new shards
    assert len(union) == 27
    pd.testing.assert_frame_equal(by_id(sweep.load_results(out)), by_id(ref))
    t1 = sweep.aggregate(sweep.load_results(out))[0]
    t0 = sweep.aggregate(ref)[0]
    pd.testing.assert_frame_equal(t1, t0)


def test_worker_killed_mid_task_and_one_worker_same_results(tmp_path, reference):
    """A worker dies (os._exit) on a unit's first attempt: the task is retried and the sweep completes;
    a unit that kills every worker it touches becomes an error row after isolation. Run on an existing
    1-worker cluster through scheduler=ADDRESS: same rows as the 2-worker reference."""
    _, _, _, ref = reference
    marker = tmp_path / "crashed-once"
    path, out = write_spec(tmp_path, "crash", hook=f"exit-once:{marker}")
    spec = sweep.load_spec(path)
    doomed = sweep.parse_spec({"output": str(out), "seeds": [0], "batch_size": 2,
                               "grid": {"depth": 2, "width": 4, "batch": 2, "backend": "numpy", "seeds": [0],
                                        "_hook": "exit-always"}})
    spec.grids.append(doomed.grids[0])
    from distributed import Client

    cluster = sweep.local_cluster(1, dashboard=False)
    try:
        with Client(cluster) as c:
            env = c.run(lambda: {k: os.environ.get(k) for k in sweep.WORKER_ENV})
            assert all(v == "1" for e in env.values() for v in e.values()), env
        res = sweep.run_sweep(spec, scheduler=cluster.scheduler_address, progress=False, log=lambda m: None)
    finally:
        cluster.close()
    assert marker.exists()                          # a worker really died mid-task
    df = sweep.load_results(out)
    assert res.total == 28 and len(df) == 28
    shards_ok(out)
    dead = df[df["params"].str.contains('"depth": 2,')]
    assert len(dead) == 1 and (dead["status"] == "error").all()
    assert dead["error"].str.contains("worker crashed").all()
    rest = df.drop(dead.index)
    pd.testing.assert_frame_equal(by_id(rest), by_id(ref))   # 1 worker == 2 workers, crash or not
    assert np.isfinite(res.overhead)


def test_unreadable_shard_is_moved_aside_not_trusted(tmp_path):
    unit = sweep.parse_spec({"output": "x", "seeds": 1, "grid": {"depth": 2, "width": 4, "batch": 2,
                                                                 "backend": "numpy"}}).units()[0]
    sweep.write_shard(tmp_path, "good", [sweep.run_unit(unit, code=sweep.code_version())])
    (tmp_path / "shards" / "bad.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(RuntimeError, match="unreadable shard"):
        sweep.read_shards(tmp_path)
    df = sweep.read_shards(tmp_path, ["id"], quarantine=True)
    assert df["id"].tolist() == [unit["id"]] and (tmp_path / "corrupt" / "bad.parquet").exists()


def test_an_interrupt_right_after_a_shard_is_written_still_counts_it(tmp_path, monkeypatch):
    # the window test_sigterm_... hits by chance: the shard renamed into place, the counts not yet updated
    path, out = write_spec(tmp_path, "window")
    real = sweep.write_shard

    def write_then_interrupt(outdir, name, rows):
        real(outdir, name, rows)
        raise KeyboardInterrupt
    monkeypatch.setattr(sweep, "write_shard", write_then_interrupt)
    res = sweep.run_sweep(sweep.load_spec(path), workers=1, progress=False, log=lambda m: None)
    run = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    assert res.interrupted and run["interrupted"]
    assert run["done"] == res.done == len(shards_ok(out)) >= 1   # before the fix: 0 done, a shard on disk


def test_sigterm_stops_cleanly_and_records_the_run(tmp_path):
    path, out = write_spec(tmp_path, "term", hook="sleep:0.15")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "kernels.cli", "sweep", str(path), "--workers", "1",
                             "--no-progress"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not sweep._shard_paths(out) and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 130, proc.stderr.read().decode()[-2000:]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        proc.stderr.close()
    run = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    assert run["interrupted"] and 0 < run["done"] < 27
    assert len(shards_ok(out)) == run["done"]
