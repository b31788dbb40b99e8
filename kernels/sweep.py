"""Sweeps at scale: ``deepprop sweep SPEC`` runs a grid of depth-harness configurations on Dask,
checkpointed so that a sweep stopped at any moment loses nothing (docs/sweep.md is the manual).

    from kernels import sweep
    spec = sweep.load_spec("examples/sweep.toml")
    sweep.run_sweep(spec, workers=2)           # a LocalCluster; or scheduler="tcp://host:8786"
    df = sweep.load_results(spec.output)       # one row per (configuration, seed), deduplicated
    sweep.aggregate(df)                        # the CSV columns of ``deepprop depth``, mean over seeds

Unit of work: one ``depth.Config`` and one seed replicate r. Its id is a hash of the canonical
parameters, r, the seed mode and the code version (``code_version``); its seed is derived from the id
with ``numpy.random.SeedSequence`` (unless ``derive_seeds = false``: then seed = r, exactly as
``deepprop depth --seeds``). Results go to OUTPUT/shards/<batch>.parquet, one shard per finished batch,
written by the client to a temporary file, fsynced and renamed atomically: a shard is complete or
absent. A re-run reads the ids of every shard and runs only the others; readers deduplicate by id.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import functools
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import depth

# ---- vocabulary ---------------------------------------------------------------------------------

#: env of every worker process, set before it imports numpy: one thread per process everywhere
WORKER_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                     "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                                     "NUMBA_NUM_THREADS")}
_INT_FIELDS = ("width", "batch", "depth")
_FLOAT_FIELDS = ("sigma_w2", "sigma_b2", "dropout", "clip", "alpha")
_STR_FIELDS = ("activation", "init", "norm", "residual", "backend", "dtype")
FIELDS = [f.name for f in dataclasses.fields(depth.Config)]
#: extra grid key, for tests only: "exit-once:MARKER" (os._exit in the worker unless MARKER exists,
#: creating it), "exit-always", "sleep:SECONDS" (then run normally)
HOOK = "_hook"

#: the columns of every shard, in order, with their Arrow types
SCHEMA_COLUMNS = {
    "id": "string", "key": "string", "code_version": "string", "params": "string", "replicate": "int64",
    "seed": "uint64", "status": "string", "error": "string", "compute_seconds": "float64",
    "started": "float64", "finished": "float64", "worker": "string", "task": "string", "attempt": "int64",
    "activation": "string", "init": "string", "sigma_w2": "float64", "sigma_b2": "float64", "norm": "string",
    "residual": "string", "dropout": "float64", "clip": "float64", "width": "int64", "batch": "int64",
    "depth": "int64", "backend": "string", "dtype": "string", "alpha": "float64",
    "input_grad_ratio": "float64", "log10_input_grad_ratio": "float64", "weight_grad_ratio": "float64",
    "log10_weight_grad_ratio": "float64", "rate": "float64", "theory_rate": "float64",
    "theory_log10_input_grad_ratio": "float64", "plain": "string", "plain_log10_input_grad_ratio": "float64",
}
_SUMMARY_COLS = ["activation", "init", "sigma_w2", "sigma_b2", "norm", "residual", "dropout", "clip", "width",
                 "depth", "backend", "dtype", "input_grad_ratio", "log10_input_grad_ratio", "weight_grad_ratio",
                 "log10_weight_grad_ratio", "rate", "theory_rate", "theory_log10_input_grad_ratio", "plain",
                 "plain_log10_input_grad_ratio"]
#: the timing/bookkeeping columns, which differ between otherwise identical runs
TIMING_COLUMNS = ["compute_seconds", "started", "finished", "worker", "task", "attempt"]


class SpecError(ValueError):
    """A SPEC that cannot be run (unknown key, wrong type); the message names the key."""


# ---- code version and ids -----------------------------------------------------------------------

_CODE_FILES = ("kernels/*.py", "csrc/*.c", "csrc/*.h")
_NOT_CODE = {"sweep.py", "cli.py", "bench.py", "report.py", "machine.py", "verify.py", "torch_peer.py"}


@functools.cache
def code_version() -> str:
    """'deepprop <version>+<hash>': the hash of the sources that compute a result (the depth harness, the
    theory, every kernel module and the C sources), so that results of different code never share an id."""
    try:
        from importlib.metadata import version
        ver = version("deepprop")
    except Exception:  # noqa: BLE001 - not installed: a source checkout
        ver = "0+src"
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for pattern in _CODE_FILES:
        for p in sorted(root.glob(pattern)):
            if p.name in _NOT_CODE or p.name.startswith("zz_dev"):
                continue
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return f"{ver}+{h.hexdigest()[:12]}"


def canonical(params: dict) -> dict:
    """Grid parameters with every Config field, typed canonically (2 and 2.0 are the same sigma_w2;
    'auto'/'none' are None), in field order; ``_hook`` kept if present. Raises SpecError for an
    unknown key or a value of the wrong kind (out-of-range values are left to Config: error rows)."""
    unknown = sorted(set(params) - set(FIELDS) - {HOOK})
    if unknown:
        raise SpecError(f"grid: unknown parameter(s) {', '.join(unknown)}; expected {', '.join(FIELDS)}")
    defaults = depth.Config()
    out = {}
    for name in FIELDS:
        v = params.get(name, getattr(defaults, name))
        try:
            if isinstance(v, str) and v.lower() in ("auto", "none") and name in _FLOAT_FIELDS:
                v = None
            elif name in _INT_FIELDS:
                if isinstance(v, (list, tuple)):
                    raise SpecError(f"{name}: a sweep takes one {name} per net, got {v!r}")
                if isinstance(v, bool) or float(v) != int(v):
                    raise ValueError
                v = int(v)
            elif name in _FLOAT_FIELDS:
                if isinstance(v, bool):
                    raise ValueError
                v = None if v is None else float(v)
            elif name in _STR_FIELDS:
                if not isinstance(v, str):
                    raise ValueError
                if name == "backend" and v == "auto":
                    v = depth.default_backend()
        except (TypeError, ValueError):
            kind = "an integer" if name in _INT_FIELDS else ("a number or 'auto'" if name in _FLOAT_FIELDS
                                                              else "a string")
            raise SpecError(f"grid: {name}: expected {kind}, got {v!r}") from None
        out[name] = v
    if HOOK in params:
        out[HOOK] = str(params[HOOK])
    return out


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def seed_of(config_id: str) -> int:
    """The seed of a unit of work, in [0, 2^64): SeedSequence seeded with its id's 80 bits."""
    return int(np.random.SeedSequence(int(config_id, 16)).generate_state(1, np.uint64)[0])


# ---- the SPEC -----------------------------------------------------------------------------------

@dataclass
class Spec:
    """A parsed SPEC: ``grids`` (list of {field: list of values}), ``seeds`` (replicate numbers),
    ``derive_seeds``, ``output`` (a directory), ``batch_size`` (None = auto)."""

    grids: list
    seeds: list
    output: Path
    derive_seeds: bool = True
    batch_size: int | None = None
    code_version: str = field(default_factory=code_version)
    path: str = ""

    def units(self) -> list[dict]:
        """Every unit of work, deduplicated, in grid order: {id, key, params, replicate, seed}."""
        out, seen = [], set()
        for grid in self.grids:
            keys = [k for k in grid if k != "seeds"]
            for combo in _product([grid[k] for k in keys]):
                params = canonical(dict(zip(keys, combo, strict=True)))
                pure = {k: v for k, v in params.items() if k != HOOK}  # a test hook is not a parameter
                key = _hash({"params": pure, "code": self.code_version})
                for r in grid.get("seeds", self.seeds):
                    uid = _hash({"params": pure, "replicate": r, "derive": self.derive_seeds,
                                 "code": self.code_version})
                    if uid in seen:
                        continue
                    seen.add(uid)
                    out.append({"id": uid, "key": key, "params": params, "replicate": r,
                                "seed": seed_of(uid) if self.derive_seeds else r})
        return out


def _product(lists):
    import itertools
    return itertools.product(*lists)


def _as_list(v):
    return list(v) if isinstance(v, list) else [v]


def _parse_seeds(seeds, where: str) -> list:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    if (not isinstance(seeds, list) or not seeds
            or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds)):
        raise SpecError(f"{where}: expected a list of integers >= 0 or a count, got {seeds!r}")
    return list(dict.fromkeys(seeds))


def parse_spec(data: dict, *, path: str = "", output: str | None = None) -> Spec:
    """A Spec from TOML data (see examples/sweep.toml)."""
    allowed = {"output", "seeds", "derive_seeds", "batch_size", "grid", "code_version"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed))}")
    if "grid" not in data:
        raise SpecError("grid: missing; expected a [grid] table (or [[grid]] tables) of depth parameters")
    grids = data["grid"] if isinstance(data["grid"], list) else [data["grid"]]
    parsed = []
    for g in grids:
        if not isinstance(g, dict) or not g:
            raise SpecError("grid: expected a table of parameter = value or [values]")
        g = dict(g)
        if "depths" in g:
            g["depth"] = g.pop("depths")
        own = _parse_seeds(g.pop("seeds"), "grid: seeds") if "seeds" in g else None
        parsed.append({k: _as_list(v) for k, v in g.items()})
        for k, v in parsed[-1].items():
            if not v:
                raise SpecError(f"grid: {k}: empty list")
        if own is not None:
            parsed[-1]["seeds"] = own
    seeds = _parse_seeds(data.get("seeds", list(depth.DEFAULT_SEEDS)), "seeds")
    derive = data.get("derive_seeds", True)
    if not isinstance(derive, bool):
        raise SpecError(f"derive_seeds: expected true or false, got {derive!r}")
    bs = data.get("batch_size", "auto")
    if bs == "auto":
        bs = None
    elif not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
        raise SpecError(f"batch_size: expected an integer >= 1 or 'auto', got {bs!r}")
    out = output or data.get("output")
    if not out:
        raise SpecError("output: missing; expected a directory for the shards (or --output DIR)")
    spec = Spec(grids=parsed, seeds=seeds, output=Path(out), derive_seeds=derive,
                batch_size=bs, path=path)
    if "code_version" in data:
        spec.code_version = str(data["code_version"])
    spec.units()  # validates every grid key and value kind now
    return spec


def load_spec(path, *, output: str | None = None) -> Spec:
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{path}: not valid TOML: {exc}") from None
    return parse_spec(data, path=str(path), output=output)


# ---- the worker side ----------------------------------------------------------------------------

_PINNED = False


def _pin_threads() -> None:
    """Belt and braces for workers not started by us (``dask worker``): one BLAS/OpenMP/Numba thread."""
    global _PINNED
    if _PINNED:
        return
    _PINNED = True
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except Exception:  # noqa: BLE001 - best effort
        pass
    if "numba" in sys.modules:
        try:
            import numba
            numba.set_num_threads(1)
        except Exception:  # noqa: BLE001
            pass


def _run_hook(hook: str) -> None:
    kind, _, arg = hook.partition(":")
    if kind == "exit-once":
        if not os.path.exists(arg):
            Path(arg).touch()
            os._exit(3)
    elif kind == "exit-always":
        os._exit(3)
    elif kind == "sleep":
        time.sleep(float(arg))
    else:
        raise ValueError(f"_hook: unknown test hook {hook!r}")


def run_unit(unit: dict, *, code: str, batch: str = "", attempt: int = 1) -> dict:
    """Runs one unit of work and returns its row (every SCHEMA_COLUMNS key). A configuration that
    raises gives status='error' and 'ExceptionType: message' in ``error``; it never raises."""
    params = dict(unit["params"])
    hook = params.pop(HOOK, None)
    row = dict.fromkeys(SCHEMA_COLUMNS)
    row.update(id=unit["id"], key=unit["key"], code_version=code, params=json.dumps(params, sort_keys=True),
               replicate=unit["replicate"], seed=unit["seed"], task=batch, attempt=attempt, error="",
               worker=f"{os.uname().nodename}:{os.getpid()}")
    row.update({k: v for k, v in params.items() if k in SCHEMA_COLUMNS})
    row["started"] = time.time()
    t0 = time.perf_counter()
    try:
        if code != code_version():
            raise RuntimeError(f"code version mismatch: this worker runs {code_version()}, the sweep {code}")
        if hook:
            _run_hook(hook)
        run = depth.run_config(depth.Config(**params), (unit["seed"],))
        s = run.summary
        row.update({k: s[k] for k in _SUMMARY_COLS})
        row["status"] = s["status"]
    except Exception as exc:  # noqa: BLE001 - any failure of one configuration is its row
        row["status"] = "error"
        row["error"] = f"{type(exc).__name__}: {exc}"
    row["compute_seconds"] = time.perf_counter() - t0
    row["finished"] = time.time()
    return row


def run_batch(units: list, code: str, batch: str, attempt: int = 1) -> list:
    """The task: runs ``units`` one after another in this worker; returns their rows."""
    _pin_threads()
    return [run_unit(u, code=code, batch=batch, attempt=attempt) for u in units]


def warm_up(backends) -> str:
    """Imports and JIT-compiles in a worker before the clock starts; returns OMP_NUM_THREADS as seen there."""
    _pin_threads()
    for b in backends:
        try:
            depth.run_config(depth.Config(depth=2, width=4, batch=2, backend=b), (0,), stats=False)
        except Exception:  # noqa: BLE001 - an unavailable backend shows up as error rows
            pass
    return os.environ.get("OMP_NUM_THREADS", "")


# ---- shards ---------------------------------------------------------------------------------------

def _arrow_schema():
    import pyarrow as pa
    types = {"string": pa.string(), "int64": pa.int64(), "uint64": pa.uint64(), "float64": pa.float64()}
    return pa.schema([(k, types[t]) for k, t in SCHEMA_COLUMNS.items()])


def rows_frame(rows: list) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(SCHEMA_COLUMNS))
    for k, t in SCHEMA_COLUMNS.items():
        if t == "float64":
            df[k] = pd.to_numeric(df[k], errors="coerce").astype("float64")
    return df


def write_shard(outdir: Path, name: str, rows: list) -> Path:
    """Writes ``rows`` to OUTDIR/shards/NAME.parquet atomically: a temporary file in the same directory,
    fsynced, renamed over the final name, and the directory fsynced. Returns the final path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = outdir / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    final = shards / f"{name}.parquet"
    tmp = shards / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
    table = pa.Table.from_pandas(rows_frame(rows), schema=_arrow_schema(), preserve_index=False)
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    fd = os.open(shards, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def _shard_paths(outdir: Path) -> list[Path]:
    d = Path(outdir) / "shards"
    return sorted(p for p in d.glob("*.parquet") if not p.name.startswith(".")) if d.is_dir() else []


def read_shards(outdir, columns=None, *, quarantine: bool = False) -> pd.DataFrame:
    """Every shard of OUTDIR as one DataFrame (not deduplicated). A shard that cannot be read (it
    cannot be half-written by us; a disk fault could) is moved to OUTDIR/corrupt/ if ``quarantine``
    (its configurations then run again), else reported as an error."""
    import pyarrow.parquet as pq

    parts = []
    for p in _shard_paths(Path(outdir)):
        try:
            parts.append(pq.read_table(p, columns=columns).to_pandas())
        except Exception as exc:  # noqa: BLE001
            if not quarantine:
                raise RuntimeError(f"{p}: unreadable shard ({exc}); `deepprop sweep` moves it aside") from exc
            bad = Path(outdir) / "corrupt"
            bad.mkdir(exist_ok=True)
            os.replace(p, bad / p.name)
            print(f"deepprop sweep: warning: {p} unreadable ({exc}); moved to {bad}/, its configurations "
                  "run again", file=sys.stderr)
    cols = columns or list(SCHEMA_COLUMNS)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One row per id: a successful row beats an error row, then the latest ``finished``."""
    if df.empty:
        return df
    order = df.assign(_ok=(df["status"] != "error").astype(int)).sort_values(["_ok", "finished"], kind="stable")
    return order.drop_duplicates("id", keep="last").drop(columns="_ok").sort_index().reset_index(drop=True)


def load_results(outdir, *, code: str | None = None) -> pd.DataFrame:
    """The rows of a sweep directory, deduplicated by id; ``code``: only rows of that code version
    (default: the one in OUTDIR/sweep.json, the last run's)."""
    df = dedupe(read_shards(outdir))
    if code is None:
        man = Path(outdir) / "sweep.json"
        if man.exists():
            code = json.loads(man.read_text()).get("code_version")
    if code is not None and not df.empty:
        df = df[df["code_version"] == code].reset_index(drop=True)
    return df


# ---- the client -----------------------------------------------------------------------------------

def _cost(unit: dict) -> float:
    p = unit["params"]
    return p["depth"] * p["width"] * (p["width"] + p["batch"]) + 1e4


def make_batches(units: list, n_workers: int, batch_size: int | None) -> list[list]:
    """Groups units into tasks. Auto: about 8 tasks per worker, at most 64 units and about 2% of the
    work per task, grouped by cost (most expensive first, so the tail is short)."""
    if not units:
        return []
    units = sorted(units, key=lambda u: (-_cost(u), u["id"]))
    if batch_size is not None:
        return [units[i:i + batch_size] for i in range(0, len(units), batch_size)]
    total = sum(map(_cost, units))
    target = total / max(8 * n_workers, len(units) / 64, 1)
    out, cur, acc = [], [], 0.0
    for u in units:
        cur.append(u)
        acc += _cost(u)
        if acc >= target or len(cur) >= 64:
            out.append(cur)
            cur, acc = [], 0.0
    if cur:
        out.append(cur)
    return out


def batch_name(units: list) -> str:
    return "b-" + _hash(sorted(u["id"] for u in units))


@dataclass
class SweepResult:
    total: int
    skipped: int
    done: int
    failed: int
    wall_seconds: float
    compute_seconds: float
    workers: int
    overhead: float
    dashboard: str | None
    interrupted: bool = False


class _Lock:
    def __init__(self, outdir: Path):
        outdir.mkdir(parents=True, exist_ok=True)
        self.f = open(outdir / ".lock", "w")  # noqa: SIM115 - held for the sweep's lifetime
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.close()
            raise RuntimeError(f"{outdir}: another sweep is running on this directory") from None

    def release(self):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def local_cluster(workers: int, *, dashboard: bool = True):
    """A LocalCluster on 127.0.0.1: ``workers`` processes of one thread, BLAS/OpenMP/Numba threads
    pinned to 1 in the environment before each worker process starts (spawned, not forked)."""
    import dask
    from distributed import LocalCluster

    env = {**(dask.config.get("distributed.nanny.pre-spawn-environ") or {}), **WORKER_ENV}
    # the scheduler's HTTP server (dashboard with bokeh; health and metrics without) on loopback only
    dash = "127.0.0.1:0" if dashboard else None
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env,
                          "distributed.worker.multiprocessing-method": "spawn",
                          "distributed.scheduler.allowed-failures": 1,
                          # one task on a worker at a time: when a worker dies, only the task it was
                          # running is suspected (queued ones stay on the scheduler), so innocent
                          # tasks are not killed for sharing a worker with a poisonous one
                          "distributed.scheduler.worker-saturation": 1.0}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address=dash, env=dict(WORKER_ENV), silence_logs=40)


def run_sweep(spec: Spec, *, workers: int | None = None, scheduler: str | None = None, progress: bool = True,
              retry_errors: bool = False, log=None) -> SweepResult:
    """Runs every unit of ``spec`` not already in spec.output (see the module docstring). ``workers``:
    size of the local cluster (default: the usable cores); ``scheduler``: the address of an existing
    cluster instead. ``retry_errors``: run again the units whose row has status=error."""
    from distributed import Client, as_completed

    log = log or (lambda msg: print(msg, file=sys.stderr))
    outdir = Path(spec.output)
    lock = _Lock(outdir)
    cluster = client = bar = None
    try:
        for stale in (outdir / "shards").glob(".tmp-*") if (outdir / "shards").is_dir() else ():
            stale.unlink()  # a temporary file of a killed run: never a result
        units = spec.units()
        have = dedupe(read_shards(outdir, ["id", "status", "finished"], quarantine=True))
        finished = set(have["id"] if not retry_errors else have.loc[have["status"] != "error", "id"])
        todo = [u for u in units if u["id"] not in finished]
        skipped = len(units) - len(todo)
        manifest = {"spec": spec.path, "code_version": spec.code_version, "units": len(units),
                    "grids": spec.grids, "seeds": spec.seeds, "derive_seeds": spec.derive_seeds}
        _atomic_write_text(outdir / "sweep.json", json.dumps(manifest, indent=1) + "\n")
        if not todo:
            log(f"deepprop sweep: all {len(units)} configurations already done in {outdir}")
            return SweepResult(len(units), skipped, 0, 0, 0.0, 0.0, 0, math.nan, None)
        if scheduler:
            client = Client(scheduler, timeout="30s")
        else:
            n = workers or len(os.sched_getaffinity(0))
            cluster = local_cluster(n)
            client = Client(cluster)
        n_threads = sum(client.nthreads().values()) or 1
        dash = None
        if ("dashboard" in client.scheduler_info().get("services", {})
                and (cluster is None or importlib.util.find_spec("bokeh"))):
            dash = client.dashboard_link
        log(f"deepprop sweep: {len(todo)} of {len(units)} configurations to run ({skipped} done) on "
            f"{n_threads} worker thread(s) at {client.scheduler.address}" + (f"; dashboard {dash}" if dash else ""))
        backends = sorted({u["params"]["backend"] for u in todo})
        client.run(warm_up, backends)
        batches = make_batches(todo, n_threads, spec.batch_size)
        from tqdm import tqdm
        bar = tqdm(total=len(units), initial=skipped, unit="cfg", desc="sweep", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True, smoothing=0.05)
        failed = done = 0
        compute = 0.0
        t0 = time.perf_counter()
        futures = {}
        for b in batches:
            name = batch_name(b)
            fut = client.submit(run_batch, b, spec.code_version, name, 1, key=f"{name}-1", pure=False, retries=1)
            futures[fut] = (b, name, 1)
        ac = as_completed(list(futures))
        interrupted = False
        # the batch being written: (its shard, its counts). An interrupt can land after the shard's
        # rename and before the counts below; the except clause then counts a shard that is on disk
        writing = None
        try:
            for fut in ac:
                b, name, attempt = futures.pop(fut)
                try:
                    rows = fut.result()
                except Exception as exc:  # noqa: BLE001 - a crashed or lost worker: isolate the batch
                    fut.release()
                    if len(b) > 1 or attempt < 3:   # a unit alone gets up to 2 more tries
                        log(f"deepprop sweep: task {name} failed ({type(exc).__name__}: {exc}); "
                            f"retrying its {len(b)} configuration(s) one by one")
                        for u in b:
                            one = batch_name([u])
                            f2 = client.submit(run_batch, [u], spec.code_version, one, attempt + 1,
                                               key=f"{one}-{attempt + 1}", pure=False, retries=1)
                            futures[f2] = ([u], one, attempt + 1)
                            ac.add(f2)
                        continue
                    u = b[0]
                    row = dict.fromkeys(SCHEMA_COLUMNS)
                    p = {k: v for k, v in u["params"].items() if k != HOOK}
                    row.update({k: v for k, v in p.items() if k in SCHEMA_COLUMNS})
                    row.update(id=u["id"], key=u["key"], code_version=spec.code_version,
                               params=json.dumps(p, sort_keys=True), replicate=u["replicate"],
                               seed=u["seed"], status="error", task=name, attempt=attempt, worker="",
                               error=f"worker crashed on every attempt: {type(exc).__name__}: {exc}",
                               compute_seconds=0.0, started=time.time(), finished=time.time())
                    rows = [row]
                fut.release()
                counts = (len(rows), sum(r["status"] == "error" for r in rows),
                          sum(r["compute_seconds"] or 0.0 for r in rows))
                writing = (outdir / "shards" / f"{name}.parquet", counts)
                write_shard(outdir, name, rows)
                # one statement without a call: no interrupt lands between the counts and the reset
                done, failed, compute, writing = done + counts[0], failed + counts[1], compute + counts[2], None
                bar.set_postfix(failed=failed, refresh=False)
                bar.update(len(rows))
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: keep what is written, record the run
            interrupted = True
            if writing is not None and writing[0].exists():  # written, not yet counted
                done, failed, compute = done + writing[1][0], failed + writing[1][1], compute + writing[1][2]
            log("\ndeepprop sweep: interrupted; the finished shards are kept: run the same command to resume")
        wall = time.perf_counter() - t0
        bar.close()
        overhead = (wall * n_threads - compute) / compute if compute > 0 else math.nan
        res = SweepResult(len(units), skipped, done, failed, wall, compute, n_threads, overhead, dash, interrupted)
        with open(outdir / "runs.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), "code_version": spec.code_version,
                                **dataclasses.asdict(res)}) + "\n")
        log(f"deepprop sweep: {done} configurations run ({failed} failed), {skipped} skipped, in {wall:.1f} s; "
            f"compute {compute:.1f} s on {n_threads} worker(s); overhead (wall x workers - compute) / compute "
            f"= {overhead:.1%}")
        return res
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        lock.release()


# ---- aggregation: the depth tables ----------------------------------------------------------------

def key_order(outdir) -> list[str]:
    """The configuration keys in SPEC order (grid by grid, the cross product in list order), from
    OUTDIR/sweep.json; [] if it is missing."""
    man = Path(outdir) / "sweep.json"
    if not man.exists():
        return []
    m = json.loads(man.read_text())
    spec = Spec(grids=m["grids"], seeds=m["seeds"], output=Path(outdir), derive_seeds=m["derive_seeds"],
                code_version=m["code_version"])
    return list(dict.fromkeys(u["key"] for u in spec.units()))


def aggregate(df: pd.DataFrame, order=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table, errors): ``table`` has one row per configuration (over its seeds) with depth.CSV_COLUMNS
    and the theory columns of ``deepprop depth``, aggregated exactly as ``depth.run_config`` does
    (geometric mean = mean of log10 over seeds, rate by geometric mean, spread, theory agreement);
    ``errors`` the status=error rows. Rows in ``order`` (a list of keys: the SPEC's order, see
    ``key_order``; as deepprop depth lists them), else sorted by the configuration columns."""
    ok = df[df["status"] != "error"]
    errors = df[df["status"] == "error"].reset_index(drop=True)
    recs = []
    for _key, g in ok.groupby("key", sort=False):
        g = g.sort_values("replicate")
        params = {k: v for k, v in json.loads(g["params"].iloc[0]).items() if k != HOOK}
        cfg = depth.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
        first = g.iloc[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            log10_in = depth._mean_log(g["log10_input_grad_ratio"].to_numpy())
            log10_w = depth._mean_log(g["log10_weight_grad_ratio"].to_numpy())
            rates = g["rate"].to_numpy(dtype=np.float64)
            rate = (float(np.exp(np.mean(np.log(rates)))) if np.all(rates > 0)
                    else (0.0 if np.any(rates == 0) else math.nan))
        spread = depth._spread(g["log10_input_grad_ratio"].to_numpy())
        t_log10 = float(first["theory_log10_input_grad_ratio"])
        agree = None
        if not math.isnan(t_log10) and not math.isnan(log10_in):
            if math.isinf(t_log10) or math.isinf(log10_in):
                agree = t_log10 == log10_in or (math.isinf(t_log10) and log10_in * t_log10 > 0
                                                and abs(log10_in) > 50)
            else:
                below, above = depth.theory_tolerance(cfg, t_log10, spread)
                agree = -below <= log10_in - t_log10 <= above
        recs.append({
            "_key": _key, "activation": first["activation"], "init": first["init"], "sigma_w2": first["sigma_w2"],
            "sigma_b2": first["sigma_b2"], "norm": first["norm"], "residual": first["residual"],
            "dropout": first["dropout"], "clip": first["clip"], "width": int(first["width"]),
            "batch": int(first["batch"]), "depth": int(first["depth"]), "backend": first["backend"],
            "dtype": first["dtype"], "seeds": " ".join(str(int(s)) for s in g["seed"]),
            "input_grad_ratio": 10.0 ** log10_in if log10_in < 308 else math.inf,
            "log10_input_grad_ratio": log10_in,
            "weight_grad_ratio": 10.0 ** log10_w if not log10_w > 308 else math.inf,
            "log10_weight_grad_ratio": log10_w, "rate": rate, "theory_rate": first["theory_rate"],
            "status": depth.status_of(log10_in),
            "log10_input_grad_ratio_spread": spread, "theory_log10_input_grad_ratio": t_log10,
            "theory_agrees": agree, "theory_source": "",
            "plain": "/".join(sorted(set("/".join(g["plain"]).split("/")))),
            "n_seeds": len(g),
        })
    table = pd.DataFrame(recs)
    if not table.empty:
        if order:
            pos = {k: i for i, k in enumerate(order)}
            table = table.assign(_pos=[pos.get(k, len(pos)) for k in table["_key"]])
            table = table.sort_values(["_pos", *depth.CSV_COLUMNS[:13]], kind="stable").drop(columns="_pos")
        else:
            table = table.sort_values(depth.CSV_COLUMNS[:13], kind="stable")
        table = table.drop(columns="_key").reset_index(drop=True)
    return table, errors


def plot_sweep(table: pd.DataFrame, path: str, title: str = "", stamp: list[str] | None = None) -> None:
    """log10(input_grad_ratio) against depth, a line per configuration (all columns but depth), the
    mean-field prediction dashed in the same colour."""
    plt = depth._pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    cols = [c for c in depth.CSV_COLUMNS[:13] if c != "depth" and table[c].nunique(dropna=False) > 1]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    groups = table.groupby(cols, dropna=False, sort=False) if cols else [((), table)]
    for j, (vals, g) in enumerate(groups):
        g = g.sort_values("depth")
        vals = vals if isinstance(vals, tuple) else (vals,)
        label = ", ".join(f"{c}={v}" for c, v in zip(cols, vals, strict=True)) or "all"
        c = colors[j % len(colors)]
        ax.plot(g["depth"], g["log10_input_grad_ratio"], "o-", color=c, label=label, ms=3)
        ax.plot(g["depth"], g["theory_log10_input_grad_ratio"], "--", color=c, lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("depth L")
    ax.set_ylabel("log10 ||dl/dx^0|| / ||dl/dx^L||  (dashed: mean-field)")
    ax.axhline(0, color="gray", lw=0.8)
    ax.grid(alpha=0.3)
    if len(ax.lines) <= 40:
        ax.legend(fontsize=6, ncol=2)
    ax.set_title(title, fontsize=9)
    depth.save_figure(fig, path, "\n".join(stamp or []))  # the stamp in a footer and the PNG's metadata


def report(sweep_dir, fmt: str = "table", *, outdir: str | None = None, plot: bool = True) -> tuple[str, list]:
    """The depth tables of a sweep directory: (text in ``fmt``, files written). With ``outdir``:
    writes table.csv, table.md, errors.csv and (matplotlib importable) table.png there."""
    df = load_results(sweep_dir)
    table, errors = aggregate(df, key_order(sweep_dir))
    written = []
    text = depth.format_table(table, fmt) if not table.empty else "(no finished configurations)\n"
    if not errors.empty and fmt in ("table", "markdown"):
        text += f"\n{len(errors)} configuration(s) failed (status=error):\n"
        for _, r in errors.iterrows():
            text += f"  {r['id']}  {r['params']}  {r['error']}\n"
    if outdir:
        os.makedirs(outdir, exist_ok=True)
        base = Path(outdir)
        stamp = _stamp_lines(sweep_dir, df)
        head = "".join(f"# {line}\n" for line in stamp)  # pandas: read_csv(path, comment="#")
        (base / "table.csv").write_text(head + (depth.format_table(table, "csv") if not table.empty else ""))
        (base / "table.md").write_text(
            f"# Depth table of the sweep {sweep_dir}\n\n" + "".join(f"- {line}\n" for line in stamp) + "\n"
            + (depth.format_table(table, "markdown") if not table.empty else "(no finished configurations)\n"))
        (base / "runs.md").write_text(runs_markdown(sweep_dir, stamp))
        (base / "errors.csv").write_text(head + errors[["id", "params", "replicate", "seed", "error"]].to_csv(
            index=False))
        written += [str(base / "table.csv"), str(base / "table.md"), str(base / "runs.md"), str(base / "errors.csv")]
        if plot and not table.empty:
            try:
                depth._pyplot()
            except RuntimeError:
                plot = False
            if plot:
                plot_sweep(table, str(base / "table.png"), f"sweep {sweep_dir}", stamp)
                written.append(str(base / "table.png"))
        if str(base / "table.png") not in written and (base / "table.png").exists():
            (base / "table.png").unlink()  # an earlier report's plot of other shards: it would not match
    return text, written


def _stamp_lines(sweep_dir, df) -> list[str]:
    """What the report files are stamped with: the command, this checkout and machine, and the code
    versions and workers that produced the shards (which may differ from this checkout)."""
    from . import machine

    sw = machine.software(threading_layer=False)
    c = machine.cpu()
    versions = sorted(set(df["code_version"].dropna())) if "code_version" in df else []
    workers = sorted(set(df["worker"].dropna())) if "worker" in df else []
    return [f"command: deepprop report --sweep {sweep_dir} (+ --sweep-outdir)",
            f"commit of the report: {machine.commit()}; code version(s) of the shards: {', '.join(versions)}",
            f"CPU: {c['model']}, {c['usable_cores']} usable core(s)",
            f"BLAS: {machine.blas_architecture()}; OPENBLAS_CORETYPE: "
            f"{os.environ.get('OPENBLAS_CORETYPE') or 'unset (auto-detected)'}",
            f"threads: 1 per worker (BLAS, Numba, OpenMP pinned in every worker); {len(workers)} worker "
            f"process(es) wrote rows",
            f"versions: python {sw.get('python')}, numpy {sw.get('numpy')}, "
            f"numba {(sw.get('numba') or {}).get('version')}, dask {_dask_version()}; C build: {sw.get('c_build')}; "
            f"run-time paths: {sw.get('c_paths')}"]


def _dask_version() -> str:
    try:
        import dask

        return dask.__version__
    except ImportError:
        return "not installed"


def runs_markdown(sweep_dir, stamp: list[str]) -> str:
    """OUTPUT/runs.jsonl as a table: every run of the sweep (a resume is a run) with its wall time,
    summed compute and overhead = (wall x workers - compute) / compute."""
    lines = [f"# Runs of the sweep {sweep_dir}", ""] + [f"- {s}" for s in stamp] + [
        "", "overhead = (wall x workers - sum of compute_seconds) / sum of compute_seconds: scheduling, "
        "serialization, Parquet I/O and idle workers at the end (cluster start-up and worker warm-up are "
        "outside the wall). A run interrupted with tasks in flight overstates it (their compute is lost).", "",
        "| finished | code version | configurations run | skipped (already done) | failed | workers | wall (s) | "
        "compute (s) | overhead | interrupted |", "|---|---|---|---|---|---|---|---|---|---|"]
    path = Path(sweep_dir) / "runs.jsonl"
    for line in (path.read_text().splitlines() if path.exists() else []):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.get("time", 0)))
        lines.append(f"| {when} UTC | {r.get('code_version')} | {r.get('done')} | {r.get('skipped')} | "
                     f"{r.get('failed')} | {r.get('workers')} | {r.get('wall_seconds', math.nan):.1f} | "
                     f"{r.get('compute_seconds', math.nan):.1f} | {r.get('overhead', math.nan):.1%} | "
                     f"{'yes' if r.get('interrupted') else 'no'} |")
    return "\n".join(lines) + "\n"


# ---- the command line -----------------------------------------------------------------------------

EPILOG = """\
examples:
  deepprop sweep examples/sweep.toml                     a local cluster, one worker per core
  deepprop sweep examples/sweep.toml --workers 2         ...of 2 workers
  deepprop sweep examples/sweep.toml --scheduler tcp://10.0.0.1:8786   an existing cluster
  deepprop report --sweep sweeps/canonical               the depth table of the shards

Re-running the same SPEC resumes: finished configurations are skipped (docs/sweep.md).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("spec", metavar="SPEC", help="the sweep's TOML file (examples/sweep.toml)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="size of the local cluster: N processes of one thread (default: the usable cores)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="use the existing distributed cluster at ADDRESS (tcp://host:8786) instead")
    p.add_argument("--output", default=None, metavar="DIR", help="the output directory (default: SPEC's output)")
    p.add_argument("--retry-errors", action="store_true", help="run again the configurations that failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def main(args) -> int:
    if args.workers is not None and args.workers < 1:
        print("deepprop sweep: error: --workers: expected N >= 1", file=sys.stderr)
        return 2
    if args.workers is not None and args.scheduler:
        print("deepprop sweep: error: --workers sizes the local cluster; not with --scheduler", file=sys.stderr)
        return 2
    import signal

    def _term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _term)
    try:
        spec = load_spec(args.spec, output=args.output)
        res = run_sweep(spec, workers=args.workers, scheduler=args.scheduler, progress=not args.no_progress,
                        retry_errors=args.retry_errors)
    except (SpecError, RuntimeError, OSError) as exc:
        print(f"deepprop sweep: error: {exc}", file=sys.stderr)
        return 2
    print(f"{res.done + res.skipped} of {res.total} configurations in {spec.output} ({res.failed} failed this run)")
    return 130 if res.interrupted else 0


def report_main(args) -> int:
    """``deepprop report --sweep DIR [--format F] [--outdir OUT]``."""
    if not (Path(args.sweep) / "shards").is_dir():
        print(f"deepprop report: error: {args.sweep}: no shards/ directory (not a sweep output)", file=sys.stderr)
        return 2
    try:
        text, files = report(args.sweep, getattr(args, "format", "table") or "table",
                             outdir=args.sweep_outdir)
    except RuntimeError as exc:
        print(f"deepprop report: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    for f in files:
        print(f"wrote {f}", file=sys.stderr)
    return 0
