"""What this machine is and what it can do: the context every speed figure needs (``deepprop info``).

    machine.cpu()                 CPU model, ISA flags, usable cores, cache sizes (from /proc and /sys)
    machine.limits()              measured limits, cached per machine (see below)
    machine.blas()                BLAS libraries and the architecture they run (threadpoolctl)
    machine.software()            numpy, numba (+ threading layer), the C build, torch
    machine.info()                all of the above as one dict; format_info(d) renders it
    machine.limit_for(...)        the limit a bench row is measured against (kernels.bench)

Limits (csrc/machine.c does the work; Python only times the calls):
  * FMA peak, float32 and float64: independent chains of fused multiply-adds in the widest ISA the
    CPU runs (AVX-512F, AVX2+FMA or portable C, chosen at run time), per core and all cores at once;
  * STREAM-style copy (a = b) and triad (a = b + s*c) bandwidth, 1 core and all cores, at working
    sets sized to each cache level (half of L1d, half of L2, half of L3) and to main memory (each
    array 4x the last-level cache, as STREAM asks). Bytes are counted STREAM's way: each array read
    or written once, no write-allocate traffic.
All-core figures call the C probe from one Python thread per usable core: cffi releases the GIL
during each call, so they run in parallel; each round starts at a barrier and counts the work of all
threads over the slowest thread's time; the best of several rounds is kept.

Measured limits are cached in ``$DEEPPROP_CACHE_DIR`` (else ``$XDG_CACHE_HOME/deepprop``, else
``~/.cache/deepprop``), one JSON file per key = CPU model + ISA flags + usable cores + C build flags
+ probe version. ``deepprop info --remeasure`` (and ``deepprop report``) measure afresh; measure
on a quiet machine, since anything else running lowers every figure.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import threading
import time

PROBE_VERSION = 1
ISA_NAMES = {0: "portable C", 1: "avx2+fma", 2: "avx512f"}
#: environment variables that set thread counts or the BLAS kernels
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "OMP_PROC_BIND", "OMP_WAIT_POLICY", "OPENBLAS_CORETYPE")
#: ISA flags worth showing (the full list is in info()["cpu"]["flags"])
SHOWN_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
               "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni", "amx_tile", "neon", "asimd", "sve")
LEVELS = ("L1", "L2", "L3", "DRAM")


# ---- CPU -------------------------------------------------------------------------------------------

def usable_cores() -> int:
    """The cores this process may run on (affinity, cgroup-pinned CPUs), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _parse_size(text: str) -> int | None:
    text = text.strip().upper()
    mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    try:
        if text and text[-1] in mult:
            return int(text[:-1]) * mult[text[-1]]
        return int(text)
    except ValueError:
        return None


def caches() -> dict[str, int]:
    """Data-cache sizes in bytes: L1d and L2 per core, L3 in total over its instances (sysfs)."""
    out: dict[str, int] = {}
    base = pathlib.Path("/sys/devices/system/cpu")
    l3_instances: set[str] = set()
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = [0]
    for cpu in cpus:
        for idx in sorted((base / f"cpu{cpu}" / "cache").glob("index*")):
            try:
                level = int((idx / "level").read_text())
                kind = (idx / "type").read_text().strip()
                size = _parse_size((idx / "size").read_text())
                shared = (idx / "shared_cpu_list").read_text().strip()
            except (OSError, ValueError):
                continue
            if size is None or kind == "Instruction":
                continue
            if level == 1:
                out.setdefault("L1d", size)
            elif level == 2:
                out.setdefault("L2", size)
            elif level == 3 and shared not in l3_instances:
                l3_instances.add(shared)
                out["L3"] = out.get("L3", 0) + size
    return out


def cpu() -> dict:
    """Model, vendor, ISA flags, usable cores and caches of this CPU."""
    model, vendor, flags, family, cpu_model = platform.processor() or platform.machine(), None, [], None, None
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model") and value:
            model = value
        elif key == "vendor_id":
            vendor = value
        elif key in ("flags", "Features") and not flags:
            flags = value.split()
        elif key == "cpu family" and family is None:
            family = value
        elif key == "model" and cpu_model is None:
            cpu_model = value
        if not key and model and flags:  # end of the first processor block
            break
    return {"model": model, "vendor": vendor, "family": family, "cpu_model": cpu_model,
            "machine": platform.machine(), "flags": sorted(set(flags)), "usable_cores": usable_cores(),
            "logical_cpus": os.cpu_count(), "caches": caches()}


# ---- the C probe -----------------------------------------------------------------------------------

def _lib():
    from . import _c

    _c.require()
    return _c.ffi, _c.lib


def probe_isa() -> int:
    """The ISA the probe runs: 2 = AVX-512F, 1 = AVX2+FMA, 0 = portable C."""
    return int(_lib()[1].machine_isa())


def _parallel(n_threads: int, work, rounds: int) -> float:
    """Best over rounds of (sum of the amounts work() returns) / (slowest thread's seconds).
    work(i) runs in thread i, returns (amount, seconds) and must release the GIL while it works."""
    def run(i, barrier, results):
        barrier.wait()
        results[i] = work(i)

    best = 0.0
    for _ in range(rounds):
        results: list = [None] * n_threads
        barrier = threading.Barrier(n_threads)
        threads = [threading.Thread(target=run, args=(i, barrier, results)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        amount = sum(r[0] for r in results)
        seconds = max(r[1] for r in results)
        if amount > 0 and seconds > 0:
            best = max(best, amount / seconds)
    return best


def fma_peak(dtype: str = "float64", threads: int = 1, seconds: float = 0.05, rounds: int = 5,
             isa: int = -1) -> float:
    """FMA peak in GFLOP/s of `threads` threads together (each on its own chains)."""
    ffi, lib = _lib()
    fn = lib.machine_fma_f32 if dtype == "float32" else lib.machine_fma_f64
    sink = ffi.new("double[]", max(threads, 1))
    iters = 1 << 14
    while True:  # calibrate one call to about `seconds`
        t0 = time.perf_counter()
        flops = fn(sink, iters, isa)
        dt = time.perf_counter() - t0
        if flops < 0:
            raise ValueError(f"the CPU does not run probe ISA {isa}")
        if dt >= seconds / 4 or iters >= 1 << 34:
            iters = max(1, int(iters * seconds / max(dt, 1e-9)))
            break
        iters *= 4

    def work(i):
        t0 = time.perf_counter()
        f = fn(sink + i, iters, isa)
        return f, time.perf_counter() - t0

    return _parallel(threads, work, rounds) / 1e9


def stream(kind: str = "triad", working_set: int = 1 << 27, threads: int = 1, seconds: float = 0.02,
           rounds: int = 5, isa: int = -1) -> float:
    """STREAM copy or triad bandwidth in GB/s of `threads` threads, each over its own arrays of
    `working_set` bytes in total (2 arrays for copy, 3 for triad)."""
    import numpy as np

    ffi, lib = _lib()
    narr = 2 if kind == "copy" else 3
    n = max(64, working_set // (8 * narr))
    arrays: list = [None] * threads
    reps = [1]

    def setup(i):  # each thread touches its own arrays first (first-touch page placement)
        arrays[i] = [np.full(n, 1.0 + j) for j in range(narr)]

    def call(i, r):
        a = [ffi.cast("double *", x.ctypes.data) for x in arrays[i]]
        if kind == "copy":
            return lib.machine_stream_copy(a[0], a[1], n, r, isa)
        return lib.machine_stream_triad(a[0], a[1], a[2], n, r, 3.0, isa)

    ts = [threading.Thread(target=setup, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if call(0, 1) < 0:
        raise ValueError(f"the CPU does not run probe ISA {isa}")
    while True:  # calibrate repetitions so one call lasts about `seconds`
        t0 = time.perf_counter()
        call(0, reps[0])
        dt = time.perf_counter() - t0
        if dt >= seconds / 4 or reps[0] >= 1 << 30:
            reps[0] = max(1, int(reps[0] * seconds / max(dt, 1e-9)))
            break
        reps[0] *= 4

    def work(i):
        t0 = time.perf_counter()
        nbytes = call(i, reps[0])
        return nbytes, time.perf_counter() - t0

    return _parallel(threads, work, rounds) / 1e9


def level_working_sets(caches_: dict, threads: int) -> dict[str, int]:
    """Per-thread working set (bytes) probed for each level with `threads` threads: half the level's
    capacity per thread, so it surely fits; DRAM: 3 arrays of 4x the last-level cache in all."""
    l1 = caches_.get("L1d", 32 * 1024)
    l2 = caches_.get("L2", 512 * 1024)
    l3 = caches_.get("L3", 8 * 1024 * 1024)
    return {"L1": l1 // 2, "L2": l2 // 2, "L3": max(l2, l3 // (2 * threads)),
            "DRAM": max(3 * 4 * max(l3, l2) // threads, 1 << 24)}


def level_capacity(caches_: dict, threads: int) -> dict[str, float]:
    """The bytes a working set may have to count as resident in each level with `threads` threads."""
    l1 = caches_.get("L1d", 32 * 1024)
    l2 = caches_.get("L2", 512 * 1024)
    l3 = caches_.get("L3", 8 * 1024 * 1024)
    return {"L1": l1 * threads, "L2": l2 * threads, "L3": l3, "DRAM": math.inf}


def measure(progress=None, quick: bool = False) -> dict:
    """Measure every limit now (a few seconds). progress(msg) is called before each step.
    quick=True: short calls, one round, a main-memory set of 16 MiB at most (for tests: the figures
    are then rough)."""
    t_start = time.perf_counter()
    info = cpu()
    cores = info["usable_cores"]
    isa = probe_isa()
    counts = sorted({1, cores})
    say = progress or (lambda msg: None)
    quick_args = {"seconds": 0.002, "rounds": 1} if quick else {}
    fma: dict = {}
    for dtype in ("float32", "float64"):
        fma[dtype] = {}
        for t in counts:
            say(f"FMA peak {dtype}, {t} thread(s)")
            fma[dtype][str(t)] = fma_peak(dtype, t, **quick_args)
    bw: dict = {"copy": {}, "triad": {}}
    ws_probed: dict = {}
    for t in counts:
        ws = level_working_sets(info["caches"], t)
        if quick:
            ws["DRAM"] = min(ws["DRAM"], (16 << 20) // t)
        for level in LEVELS:
            ws_probed.setdefault(level, {})[str(t)] = ws[level] * t
            for kind in ("copy", "triad"):
                say(f"{kind} bandwidth {level}, {t} thread(s)")
                bw[kind].setdefault(level, {})[str(t)] = stream(kind, ws[level], t, **quick_args)
    return {"probe_version": PROBE_VERSION, "isa": ISA_NAMES.get(isa, str(isa)), "cores": cores, "quick": quick,
            "caches": info["caches"], "fma_gflops": fma, "bandwidth_gbps": bw,
            "probed_working_set_bytes": ws_probed,
            "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "measure_seconds": round(time.perf_counter() - t_start, 2)}


# ---- the per-machine cache --------------------------------------------------------------------------

def cache_dir() -> pathlib.Path:
    if os.environ.get("DEEPPROP_CACHE_DIR"):
        return pathlib.Path(os.environ["DEEPPROP_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "deepprop"


def cache_key(cpu_info: dict | None = None, build: str | None = None, quick: bool = False) -> dict:
    """What the cached limits depend on: a different value measures afresh. Quick (rough, test-only)
    measurements have keys of their own, so they never stand in for real ones."""
    cpu_info = cpu_info or cpu()
    if build is None:
        from . import _c

        build = _c.build_info()
    return {"model": cpu_info["model"], "flags": cpu_info["flags"], "cores": cpu_info["usable_cores"],
            "build": build, "probe_version": PROBE_VERSION, **({"quick": True} if quick else {})}


def cache_path(key: dict | None = None) -> pathlib.Path:
    key = key or cache_key()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"machine-{digest}.json"


def load_cached(key: dict | None = None) -> dict | None:
    key = key or cache_key()
    path = cache_path(key)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key or "limits" not in data:
        return None
    return data["limits"]


def save_cached(limits_: dict, key: dict | None = None) -> pathlib.Path | None:
    key = key or cache_key()
    path = cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "limits": limits_}, indent=1))
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def limits(refresh: bool = False, measure_if_missing: bool = True, progress=None, quick: bool = False) -> dict | None:
    """The machine's limits: from the cache, or measured now (and cached). With refresh=True always
    measured now. None when not cached and measure_if_missing is False, or without the C backend."""
    from . import _c

    if _c.UNAVAILABLE is not None:
        return None
    key = cache_key(quick=quick)
    if not refresh:
        cached = load_cached(key)
        if cached is not None:
            return {**cached, "source": f"cached {cache_path(key)}"}
        if not measure_if_missing:
            return None
    lim = measure(progress, quick)
    saved = save_cached(lim, key)
    return {**lim, "source": "measured now" + (f", cached in {saved}" if saved else " (cache not writable)")}


def _scaled(per_count: dict, threads: int, cores: int) -> float:
    """A figure for `threads` threads from the 1-thread and all-core figures: threads x the 1-thread
    figure, capped by the all-core one (threads beyond the cores add nothing)."""
    one = per_count["1"]
    full = max(per_count.get(str(cores), one), one)  # more threads never lower the limit: one may idle
    return min(max(threads, 1) * one, full) if threads < cores else full


def limit_for(limits_: dict, bound: str, dtype: str, threads: int, working_set: float | None = None):
    """The limit a measurement is compared with: (value, unit, description).

    compute-bound: the FMA peak of dtype for `threads` threads (GFLOP/s);
    memory-bound:  the best of copy and triad bandwidth (GB/s) at the level the working set fits in
                   with `threads` threads (L1d x threads, L2 x threads, L3, else main memory)."""
    cores = int(limits_["cores"])
    t = max(1, min(int(threads), cores))
    if bound == "compute":
        peak = _scaled(limits_["fma_gflops"][dtype], t, cores)
        return peak, "GFLOP/s", f"FMA peak {dtype}, {t} core(s): {peak:.1f} GFLOP/s"
    cap = level_capacity(limits_.get("caches", {}), t)
    ws = 0.0 if working_set is None else float(working_set)
    level = next(lv for lv in LEVELS if ws <= cap[lv])
    bw = max(_scaled(limits_["bandwidth_gbps"][k][level], t, cores) for k in ("copy", "triad"))
    return bw, "GB/s", f"{level} bandwidth, {t} core(s): {bw:.1f} GB/s"


# ---- libraries and settings -------------------------------------------------------------------------

def blas() -> list[dict]:
    """Every thread pool threadpoolctl sees (BLAS and OpenMP), with the architecture BLAS runs."""
    import numpy  # noqa: F401  (loads OpenBLAS, so threadpoolctl can see it)
    import threadpoolctl

    keep = ("user_api", "internal_api", "version", "architecture", "threading_layer", "num_threads",
            "prefix")
    return [{k: p.get(k) for k in keep} for p in threadpoolctl.threadpool_info()]


def blas_architecture(pools: list[dict] | None = None) -> str:
    """'openblas Haswell' style summary of the BLAS libraries in use (NumPy's first)."""
    pools = blas() if pools is None else pools
    names = [f"{p['internal_api']} {p.get('architecture') or '?'}" for p in pools if p.get("user_api") == "blas"]
    return "; ".join(names) or "no BLAS found"


def thread_settings() -> dict[str, str | None]:
    return {v: os.environ.get(v) for v in THREAD_VARS}


def coretype_note(env: dict | None = None) -> str | None:
    """A sentence when OPENBLAS_CORETYPE pins OpenBLAS's kernels, else None."""
    env = os.environ if env is None else env
    value = env.get("OPENBLAS_CORETYPE")
    if not value:
        return None
    return (f"OPENBLAS_CORETYPE={value} is set in the environment: NumPy's OpenBLAS runs the {value} kernels, "
            "not the ones it would detect for this CPU; `deepprop bench --blas-coretype auto` measures "
            "NumPy without the pin.")


def cpu_ticks() -> list[int] | None:
    """The machine's CPU time so far, the fields of /proc/stat's "cpu" line (user, nice, system, idle, iowait,
    irq, softirq, steal, ...), in clock ticks; None off Linux."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    return [int(v) for v in fields[1:9]]  # guest time is already in user: not added twice


def steal_ticks(before: list[int] | None, after: list[int] | None) -> tuple[int, int] | None:
    """(ticks stolen, ticks wanted) between two cpu_ticks(): the CPU time the hypervisor gave to others
    ("steal") and the time this machine's cores asked for (all but idle and iowait). Summed over several
    timings they give their pooled share (a tick is 1/100 s, so one short timing's share is coarse)."""
    if not before or not after:
        return None
    d = [a - b for a, b in zip(after, before, strict=True)]
    return d[7], sum(d) - d[3] - d[4]


def steal_pct(ticks: tuple[int, int] | None) -> float | None:
    """steal_ticks' share stolen, in %: on a VM, a timing taken while it is high ran on a core that was not
    there all the time. An idle core accrues no steal, so one busy thread losing 5% of its time reads 5%
    whatever the core count."""
    return 100.0 * ticks[0] / ticks[1] if ticks and ticks[1] > 0 else None


def load_note(cores: int | None = None) -> str | None:
    """A sentence when other work keeps the CPU busy (1-minute load average), else None."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cores = cores or usable_cores()
    if load < 0.5:
        return None
    return (f"the machine is busy (load average {load:.2f} on {cores} usable core(s)): every figure will be low "
            "and noisy, multi-threaded ones most (a thread pool waits for its slowest thread); measure on a quiet "
            "machine or with --threads 1.")


def numba_info(threading_layer: bool = True) -> dict:
    try:
        import numba
    except ImportError as exc:
        return {"version": None, "why": str(exc)}
    out = {"version": numba.__version__, "num_threads": numba.get_num_threads(),
           "threading_layer_requested": numba.config.THREADING_LAYER, "threading_layer": None}
    if threading_layer:
        try:  # the layer is chosen on the first parallel launch
            _numba_parallel_probe(numba)(4)
            out["threading_layer"] = numba.threading_layer()
        except Exception as exc:  # no layer could be loaded
            out["threading_layer"] = f"unavailable ({type(exc).__name__}: {exc})"
    return out


_PARALLEL_PROBE = None


def _numba_parallel_probe(numba):
    global _PARALLEL_PROBE
    if _PARALLEL_PROBE is None:
        @numba.njit(parallel=True, cache=True)
        def _probe(n):
            s = 0.0
            for i in numba.prange(n):
                s += i
            return s

        _PARALLEL_PROBE = _probe
    return _PARALLEL_PROBE


def torch_info() -> dict | None:
    """torch's version and threading, or None when torch is not importable."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except Exception as exc:  # installed but broken
        return {"version": None, "why": f"{type(exc).__name__}: {exc}"}
    parallel = torch.__config__.parallel_info()
    backend = next((ln.split(":", 1)[1].strip() for ln in parallel.splitlines()
                    if ln.startswith("ATen parallel backend")), None)
    return {"version": torch.__version__, "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads(), "parallel_backend": backend,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": torch.backends.mkl.is_available(), "mkldnn": torch.backends.mkldnn.is_available()}


def commit() -> str:
    """The git commit of this checkout (+ '-dirty' when tracked files outside results/ are modified: results/
    is what a report run writes, so its own earlier files do not make the code dirty), or 'unknown' outside a
    git checkout."""
    root = pathlib.Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)results"],
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not found)"


def software(threading_layer: bool = True) -> dict:
    import numpy

    from . import backend_info

    b = backend_info()
    nb = numba_info(threading_layer)
    return {"python": platform.python_version(), "numpy": numpy.__version__, "numba": nb,
            "c_build": b.get("c_build"), "gemm_isa": b.get("gemm_isa"),
            "c_paths": "; ".join(f"{k[:-4]} {v}" for k, v in b.items() if k.endswith("_isa") and v) or None,
            "torch": torch_info(),
            "deepprop_commit": commit()}


def info(refresh: bool = False, measure_limits: bool = True, progress=None) -> dict:
    """Everything `deepprop info` shows, as one dict (JSON-serialisable)."""
    from . import _c

    c = cpu()
    lim = limits(refresh=refresh, measure_if_missing=measure_limits, progress=progress)
    return {"cpu": c, "probe_isa": None if _c.UNAVAILABLE else ISA_NAMES.get(probe_isa()),
            "limits": lim, "limits_unavailable": (_c.UNAVAILABLE if lim is None and _c.UNAVAILABLE else None),
            "blas": blas(), "threads": thread_settings(), "coretype_note": coretype_note(),
            "software": software()}


def _gb(v: float) -> str:
    return f"{v:7.1f}"


def _kib(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


def format_limits(lim: dict) -> list[str]:
    cores = lim["cores"]
    counts = sorted({1, cores})
    lines = [f"limits      {lim.get('source', '')}; measured {lim['measured_at']} "
             f"in {lim['measure_seconds']} s, probe ISA {lim['isa']}"]
    for dtype in ("float32", "float64"):
        per = lim["fma_gflops"][dtype]
        lines.append(f"  FMA peak {dtype}: " + ", ".join(
            f"{per[str(t)]:.1f} GFLOP/s on {t} core{'s' if t > 1 else ''}" for t in counts))
    for kind in ("copy", "triad"):
        lines.append(f"  {kind:<5} GB/s    " + "".join(f"{lv:>9}" for lv in LEVELS))
        for t in counts:
            row = lim["bandwidth_gbps"][kind]
            lines.append(f"    {t} core{'s' if t > 1 else ' '}     " + "".join(f"  {_gb(row[lv][str(t)])}"
                                                                         for lv in LEVELS))
    ws = lim.get("probed_working_set_bytes", {})
    if ws:
        lines.append("  working sets probed (all arrays of all threads): " + ", ".join(
            f"{lv} {'/'.join(_kib(ws[lv][str(t)]) for t in counts)}" for lv in LEVELS))
    return lines


def format_info(d: dict) -> str:
    c = d["cpu"]
    shown = [f for f in SHOWN_FLAGS if f in c["flags"]]
    cache = c["caches"]
    lines = [f"CPU         {c['model']} ({c['vendor'] or '?'} family {c['family']} model {c['cpu_model']}, "
             f"{c['machine']}), {c['usable_cores']} usable core(s) of {c['logical_cpus']} logical CPUs",
             f"ISA         {' '.join(shown) or '-'}  ({len(c['flags'])} flags in all); probe runs "
             f"{d['probe_isa'] or '-'}",
             f"caches      L1d {_kib(cache.get('L1d'))} and L2 {_kib(cache.get('L2'))} per core, "
             f"L3 {_kib(cache.get('L3'))} in all"]
    if d["limits"] is not None:
        lines += format_limits(d["limits"])
    else:
        lines.append(f"limits      not measured: {d.get('limits_unavailable') or 'not cached'}")
    for p in d["blas"]:
        lines.append(f"{p['user_api']:<12}{p['internal_api']} {p['version'] or ''} ({p['prefix']}), "
                     f"{p['num_threads']} thread(s)"
                     + (f", architecture {p['architecture']}" if p.get("architecture") else "")
                     + (f", threading {p['threading_layer']}" if p.get("threading_layer") else ""))
    core = d["threads"].get("OPENBLAS_CORETYPE")
    lines.append("OPENBLAS_CORETYPE " + (f"= {core} (pinned by the environment)" if core
                                         else "unset (OpenBLAS detects the core type)"))
    if d.get("coretype_note"):
        lines.append(f"  note: {d['coretype_note']}")
    settings = ", ".join(f"{k}={v}" for k, v in d["threads"].items() if v is not None and k != "OPENBLAS_CORETYPE")
    lines.append(f"threads     {settings or 'no thread variables set (libraries use all usable cores)'}")
    s = d["software"]
    lines.append(f"C build     {s['c_build'] or 'unavailable'}")
    if s.get("c_paths"):
        lines.append(f"C paths     {s['c_paths']}  (chosen at run time for this CPU; DEEPPROP_<FAMILY>_ISA overrides)")
    nb = s["numba"]
    if nb.get("version"):
        lines.append(f"numba       {nb['version']}, threading layer {nb['threading_layer']} "
                     f"(requested: {nb['threading_layer_requested']}), {nb['num_threads']} thread(s)")
    else:
        lines.append(f"numba       not importable ({nb.get('why')})")
    t = s["torch"]
    if t is None:
        lines.append("torch       not installed (optional peer: pip install 'deepprop[torch]')")
    elif t.get("version") is None:
        lines.append(f"torch       installed but not importable: {t['why']}")
    else:
        lines.append(f"torch       {t['version']}, {t['num_threads']} thread(s) ({t['parallel_backend']}), "
                     f"CPU capability {t['cpu_capability']}, MKL {'yes' if t['mkl'] else 'no'}")
    lines.append(f"python      {s['python']}, numpy {s['numpy']}; deepprop commit {s['deepprop_commit']}")
    return "\n".join(lines)


def main(args) -> int:
    """`deepprop info` (wired in kernels/cli.py)."""
    progress = None
    if args.format == "text" and sys.stderr.isatty():
        def progress(msg):
            print(f"\rmeasuring: {msg:<60}", end="", file=sys.stderr, flush=True)
    d = info(refresh=args.remeasure, measure_limits=not args.no_measure, progress=progress)
    if progress:
        print("\r" + " " * 72 + "\r", end="", file=sys.stderr, flush=True)
    if args.format == "json":
        print(json.dumps(d, indent=1))
    else:
        print(format_info(d))
    return 0


def add_arguments(p) -> None:
    p.add_argument("--remeasure", action="store_true",
                   help="measure the limits now even if cached (do it on a quiet machine)")
    p.add_argument("--no-measure", action="store_true",
                   help="show cached limits only; never start a measurement")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
