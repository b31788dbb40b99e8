"""``deepprop report``: regenerate results/ (every file stamped with how and where it was made).

Speed part (this module):
    results/speed.csv          every row of `deepprop bench` over every kernel (kernels.bench.ALL_COLUMNS),
                               after '# ' lines with the stamp
    results/speed.md           the same as tables per kernel family, with the machine's limits and the
                               byte-counting table
    results/speed_<family>.png speed-up over NumPy against size, one line per backend (solid float32,
                               dashed float64), one panel per kernel
    results/README.md          how each file is made
Depth part: ``kernels.depth.report(outdir, stamp=text)`` when kernels.depth has a ``report``; it gets
the same stamp as 'key: value' lines (``stamp_text``) and returns the paths it wrote (or {file name:
how it is made}), which README.md lists too.

The speed part runs the benchmark with ``--blas-coretype auto`` (NumPy on OpenBLAS's own kernels: the
fair baseline) and re-measures the machine's limits first, unless told otherwise. Run it on a quiet
machine: anything else running lowers every figure.
"""

from __future__ import annotations

import math
import os
import pathlib
import sys
import textwrap
import time

from . import bench
from .cli import parse_sizes

SPEED_FILES = {
    "speed.csv": "every (kernel, backend, dtype, size) row of `deepprop bench`, all columns; '# ' lines on "
                 "top carry the stamp (pandas: `read_csv(path, comment='#')`)",
    "speed.md": "the rows as tables per kernel family, the machine's limits, and what each kernel is timed on; "
                "with copies of targets.md's graded table and speed_before_after.md's tables (issue 5's record)",
    "speed_<family>.png": "per kernel family: speed-up over NumPy (median times) against size n, one line per "
                          "backend, solid float32 / dashed float64, one panel per kernel",
}
TARGET_FILES = {
    "targets.md": "issue 5's speed targets graded: each target, our median time, the baseline's, the measured "
                  "ratio / % of bandwidth / rate, the requirement, met or not (`deepprop bench --targets` prints "
                  "the same table; kernels.targets says how each is measured)",
    "targets.csv": "the raw measurements behind targets.md: one row per (workload, side, threads), median/min/IQR "
                   "times, bytes, elements, errors; '# ' lines carry the stamp",
}


# ---- the stamp ---------------------------------------------------------------------------------------

def make_stamp(command: str, plan, env_reports: dict, limits: dict | None) -> dict:
    """Everything a result file is stamped with, as a JSON-serialisable dict."""
    ctx = bench.context(plan, env_reports, limits, command)
    numpy_child = env_reports.get("numpy") or next(iter(env_reports.values()), {})
    ctx["blas_arch"] = numpy_child.get("blas_arch")
    if ctx["blas_arch"] is None:  # nothing measured in a child (a partial report): this process's BLAS
        from . import machine

        ctx["blas_arch"] = machine.blas_architecture()
    ctx["openblas_coretype"] = (numpy_child.get("env") or {}).get("OPENBLAS_CORETYPE")
    if not env_reports:  # a partial report (--parts depth): the tables were made here, under this environment
        ctx["openblas_coretype"] = os.environ.get("OPENBLAS_CORETYPE")
        ctx["blas_where"] = "this process (no benchmark child ran)"
    return ctx


def limits_summary(limits: dict | None) -> str:
    if not limits:
        return "not measured (C backend unavailable)"
    f, bw = limits["fma_gflops"], limits["bandwidth_gbps"]
    cores = str(limits["cores"])
    return (f"FMA peak float32 {f['float32']['1']:.1f} GFLOP/s per core ({f['float32'][cores]:.1f} on {cores}), "
            f"float64 {f['float64']['1']:.1f} ({f['float64'][cores]:.1f}); DRAM triad "
            f"{bw['triad']['DRAM']['1']:.1f} GB/s on 1 core ({bw['triad']['DRAM'][cores]:.1f} on {cores}); "
            f"probe ISA {limits['isa']}, measured {limits['measured_at']}")


def stamp_lines(stamp: dict) -> list[str]:
    """The stamp as short 'key: value' lines (for Markdown, CSV comments and figure footers)."""
    sw = stamp.get("software") or {}
    nb = sw.get("numba") or {}
    torch = sw.get("torch") or {}
    children = stamp.get("children") or {}
    thr = ", ".join(f"{b}: numba {r.get('numba_threads')}" + (f", torch {r['torch_threads']}"
                                                           if "torch_threads" in r else "")
                    for b, r in children.items())
    return [
        f"command: {stamp.get('command')}",
        f"commit: {stamp.get('commit')}",
        f"date: {stamp.get('date')}",
        f"CPU: {stamp.get('cpu')}, {stamp.get('cores')} usable core(s); load average at the end "
        f"{stamp.get('load_average_1min')}",
        f"limits: {limits_summary(stamp.get('limits'))}",
        f"BLAS: {stamp.get('blas_arch')}; OPENBLAS_CORETYPE in {stamp.get('blas_where', 'the children')}: "
        f"{stamp.get('openblas_coretype') or 'unset (auto-detected)'}"
        + ("" if stamp.get("blas_where") else f" (--blas-coretype {stamp.get('blas_coretype')})"),
        f"threads: {stamp.get('threads')} ({thr})" if thr else f"threads: {stamp.get('threads')}",
        f"output allocation: {stamp.get('alloc', 'inside')} the timing (--alloc)",
        f"versions: python {sw.get('python')}, numpy {sw.get('numpy')}, numba {nb.get('version')}, "
        f"torch {torch.get('version') if torch else 'not installed'}",
        f"C build: {sw.get('c_build')}; run-time paths: {sw.get('c_paths')}",
    ]


def stamp_text(stamp: dict) -> str:
    """The stamp as 'key: value' lines in one string: what kernels.depth.report(outdir, stamp=...) takes."""
    return "\n".join(stamp_lines(stamp))


# ---- writers ----------------------------------------------------------------------------------------------

def family_of(name: str) -> str:
    from . import FAMILY

    mod = FAMILY.get(name)
    return mod.__name__.rsplit(".", 1)[-1] if mod is not None else "other"


def write_csv(path: pathlib.Path, rows, stamp) -> None:
    head = "".join(f"# {line}\n" for line in stamp_lines(stamp))
    path.write_text(head + bench.to_csv(rows))


def write_markdown(path: pathlib.Path, rows, stamp, families: dict, pngs: dict) -> None:
    lines = ["# Kernel speed: NumPy, Numba, C and PyTorch on one machine", "",
             "Generated by `deepprop report`; do not edit. Stamp:", ""]
    lines += [f"- {s}" for s in stamp_lines(stamp)]
    lines += ["", "Times are medians over repeats (kernels.bench explains the timing); speed-ups are NumPy's "
              "(the float64-inside reference) median over the backend's; `% limit` is GFLOP/s against the FMA "
              "peak for compute-bound kernels, GB/s against the measured bandwidth of the cache level the "
              f"bytes fit in for the others. Output allocation is {stamp.get('alloc', 'inside')} the timing for "
              "every backend (`deepprop bench --alloc` offers the other; `faults_per_call` shows the page faults).",
              ""]
    errs = [r for r in rows if r.get("error")]
    for fam, names in families.items():
        frows = [r for r in rows if r["kernel"] in names]
        if not frows:
            continue
        lines += [f"## {fam}", ""]
        if fam in pngs:
            lines += [f"![speed-up over NumPy, {fam}]({pngs[fam].name})", ""]
        lines += [bench.to_table([r for r in frows if not r.get("error")], markdown=True), ""]
    if errs:
        lines += ["## Failures", ""] + [f"- {r['kernel']} {r['backend']} {r['dtype']} n={r['size']}: {r['error']}"
                                        for r in errs] + [""]
    lines += ["## What each kernel is timed on", "", bench.workloads_table(list(dict.fromkeys(r["kernel"]
                                                                                               for r in rows))), ""]
    path.write_text("\n".join(lines))


def write_plots(outdir: pathlib.Path, rows, stamp, families: dict) -> tuple[dict, str | None]:
    """speed_<family>.png per family; ({family: path}, why not) - matplotlib is optional."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401
    except ImportError as exc:
        return {}, f"matplotlib is not installed ({exc}): pip install matplotlib"
    colors = {"numpy": "#444444", "numba": "#1f77b4", "c": "#d62728", "torch": "#ff7f0e"}
    styles = {"float32": "-", "float64": "--"}
    sl = stamp_lines(stamp)  # command, commit, date, CPU, limits, BLAS, threads, versions, C build
    footer = [" | ".join(sl[0:3]), sl[3], sl[4], sl[5], " | ".join(sl[6:8]), sl[8], sl[9]]  # every stamp line
    meta = {"Software": "deepprop report", "Description": "\n".join(stamp_lines(stamp))}
    out = {}
    for fam, names in families.items():
        names = [k for k in names if any(r["kernel"] == k and r.get("speedup_vs_numpy") for r in rows)]
        if not names:
            continue
        ncol = min(4, len(names))
        nrow = math.ceil(len(names) / ncol)
        width = max(4.2 * ncol, 10.0)
        # 6-pt footer lines, ~20 characters per inch: a longer one wraps rather than runs off the figure
        foot = [w for ln in footer for w in textwrap.wrap(ln, int(width * 20), subsequent_indent="    ")]
        foot_in = 0.15 + 0.1 * len(foot)
        height = 3.2 * nrow + 0.9 + foot_in
        fig, axes = plt.subplots(nrow, ncol, figsize=(width, height), squeeze=False)
        for ax, name in zip(axes.flat, names, strict=False):
            for backend in bench.ALL_BACKENDS:
                for dtype in bench.DTYPES:
                    pts = sorted((r["size"], r["speedup_vs_numpy"]) for r in rows
                                 if r["kernel"] == name and r["backend"] == backend and r["dtype"] == dtype
                                 and r.get("speedup_vs_numpy"))
                    if pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], styles[dtype], marker="o", ms=3,
                                color=colors.get(backend), label=f"{backend} {dtype}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.yaxis.set_major_formatter(plain)
            lo, hi = ax.get_ylim()
            few_decades = lo > 0 and math.log10(hi / lo) < 1.3  # label minor ticks only when few majors show
            ax.yaxis.set_minor_formatter(plain if few_decades else matplotlib.ticker.NullFormatter())
            ax.axhline(1.0, color="#999999", lw=0.8)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("size n (kernels.bench workloads)", fontsize=8)
            ax.set_ylabel("speed-up over numpy", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="both", alpha=0.25)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        labels: dict = {}
        for ax in axes.flat:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                labels.setdefault(lab, h)
        fig.suptitle(f"deepprop {fam}: speed-up over NumPy (median time), threads={stamp.get('threads')}",
                     fontsize=11, x=0.01, ha="left", y=1 - 0.05 / height)
        legend_cols = min(len(labels), 8 if width >= 14 else 4)  # handles long enough to show float64's dashes
        top_in = 0.55 + 0.17 * (math.ceil(len(labels) / max(1, legend_cols)) - 1)
        fig.legend(list(labels.values()), list(labels), loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 / height),
                   fontsize=7, ncol=max(1, legend_cols), frameon=False, handlelength=4)
        fig.text(0.01, 0.005, "\n".join(foot), fontsize=6, color="#555555")
        fig.tight_layout(rect=(0, foot_in / height, 1, 1 - top_in / height))
        path = outdir / f"speed_{fam}.png"
        fig.savefig(path, dpi=110, metadata=meta)
        plt.close(fig)
        out[fam] = path
    return out, None


def _previous_entries(path: pathlib.Path) -> dict:
    """The file table of an existing results/README.md: {name: how}, so that regenerating some parts
    keeps the entries of the files the run did not touch."""
    import re

    if not path.exists():
        return {}
    found = re.findall(r"^\| `([^`]+)` \| (.*) \|$", path.read_text(), flags=re.M)
    return {name: how for name, how in found if (path.parent / name).exists()}


SWEEP_FILES = {
    "sweep_bench2000/": "issue 6's scale benchmark, 2,000 configurations (depths 10-1000, widths 64-256): "
                        "`deepprop sweep examples/bench2000.toml --workers 2` (writes sweeps/bench2000/), then "
                        "`deepprop report --sweep sweeps/bench2000 --sweep-outdir results/sweep_bench2000`: "
                        "runs.md (wall, compute, overhead of every run), table.csv/md/png (the depth table), "
                        "errors.csv",
}


def write_readme(path: pathlib.Path, stamp, files: dict, command: str) -> None:
    """results/README.md: how each file is made, and the stamp of the last measuring run (kept from the
    existing README when this command measured nothing, stamp None)."""
    old_stamp = []
    if stamp is None and path.exists():
        text = path.read_text().splitlines()
        i = next((k for k, line in enumerate(text) if line.startswith("Stamp of")), None)
        old_stamp = text[i:] if i is not None else []
    files = {**_previous_entries(path), **files}
    files.update({k: v for k, v in SWEEP_FILES.items() if (path.parent / k).exists()})
    lines = ["# results/", "", "Generated files only. Regenerate everything with", "", "```sh", "deepprop report",
             "deepprop report --before 651578c:results/speed.csv   # speed_before_after.md (an earlier speed.csv)",
             "```",
             "", "on a quiet machine (anything else running lowers every figure); the table says what makes each "
             "file. Every file carries its stamp (CSV in '# ' lines, Markdown in a list, PNG in its footer and "
             "its text metadata).", "", "| file | how it is made |", "|---|---|"]
    lines += [f"| `{name}` | {how} |" for name, how in files.items()]
    if stamp is not None:
        lines += ["", f"Stamp of the last measuring run (`{command}`):", ""] + [f"- {s}" for s in stamp_lines(stamp)]
    else:
        lines += [""] + old_stamp
    path.write_text("\n".join(lines) + "\n")


def write_targets(outdir: pathlib.Path, command: str, limits, progress=True) -> dict:
    """results/targets.md and targets.csv: kernels.targets measured and graded, stamped."""
    import pandas as pd

    from . import targets

    graded, rows, envs = targets.run(progress=progress)
    plan = bench.Plan([], [], [], {}, threads=1, blas_coretype="auto")
    children = {f"{side} x{threads}" + (" alloc outside" if alloc == "outside" else ""): rep
                for (side, threads, alloc), rep in envs.items()}
    stamp = make_stamp(command, plan, children, limits)
    stamp["threads"] = "1, and 2 for the scaling and 2-core bandwidth targets (per row)"
    met = sum(1 for g in graded if g["met"])
    lines = ["# Speed targets (issue 5), measured on this machine", "", "Generated by `deepprop report`; "
             "`deepprop bench --targets` prints the same table. Stamp:", ""]
    lines += [f"- {s}" for s in stamp_lines(stamp)]
    lines += ["", f"**{met} of {len(graded)} targets met.** Ratios are the baseline's median time over ours (> 1: "
              "ours is faster). NumPy = NumPy/SciPy as a user writes it, in the dtype, on OpenBLAS/LAPACK with "
              "its own detected kernels (OPENBLAS_CORETYPE removed); the NumPy reference = our float64-inside "
              "spec; torch = PyTorch's own ops. Every side ran in 3 interleaved rounds of spawned children, "
              "their samples pooled, so a drifting machine slows baseline and ours alike. *bound* is the best the "
              "figure could be at this run's measured limits (a roofline: ours taking the flops at the FMA peak "
              "or each array moved once at the bandwidth of the level it fits in; the baseline as measured): "
              "a target whose bound is below what it requires is out of reach on this machine. How each workload is "
              "timed: `python -c \"import kernels.targets; help(kernels.targets)\"`.", "",
              targets.to_markdown(graded), "", "## Workloads", "",
              "| workload | what is timed |", "|---|---|"]
    lines += [f"| {cid} | {case.doc} |" for cid, case in targets.CASES.items()]
    (outdir / "targets.md").write_text("\n".join(lines) + "\n")
    head = "".join(f"# {line}\n" for line in stamp_lines(stamp))
    cols = ["case", "side", "threads", "alloc", "median_s", "min_s", "iqr_s", "repeats", "rounds", "steal_pct",
            "bytes", "elements", "error"]
    (outdir / "targets.csv").write_text(head + pd.DataFrame(rows).reindex(columns=cols).to_csv(index=False))
    return dict(TARGET_FILES)


def _read_stamped_csv(path):
    """(stamp lines, DataFrame) of a CSV written by write_csv."""
    import pandas as pd

    text = pathlib.Path(path).read_text().splitlines()
    stamp = [line[2:] for line in text if line.startswith("# ")]
    return stamp, pd.read_csv(path, comment="#")


def write_before_after(outdir: pathlib.Path, before_csv, command: str) -> dict:
    """results/speed_before_after.md: the C and Numba rows of an earlier speed.csv (``before_csv``, e.g.
    from git history) against outdir/speed.csv, joined on kernel, backend, dtype and size: median times
    and the factor before / after (> 1: faster now). No measurement of its own; both files' stamps are
    quoted, so the two runs' machines, threads and commits can be compared."""
    stamp_b, b = _read_stamped_csv(before_csv)
    stamp_a, a = _read_stamped_csv(outdir / "speed.csv")
    keys = ["kernel", "backend", "dtype", "size"]
    cols = keys + ["shape", "median_s", "speedup_vs_numpy", "pct_of_limit"]
    j = b[cols].merge(a[cols], on=keys, suffixes=("_before", "_after"))
    j = j[j["backend"].isin(["c", "numba"]) & j["median_s_before"].notna() & j["median_s_after"].notna()]
    j["factor"] = j["median_s_before"] / j["median_s_after"]
    lines = ["# Kernel speed before and after", "", f"Generated by `{command}` from two files of "
             "`deepprop report` (no measurement of its own); do not edit.", "",
             "Before (the earlier speed.csv):", ""] + [f"- {x}" for x in stamp_b] + [
             "", "After (results/speed.csv):", ""] + [f"- {x}" for x in stamp_a] + [
             "", "factor = median before / median after (> 1: faster now); `x numpy` is the speed-up over the "
             "NumPy reference in each run.", ""]
    for fam in dict.fromkeys(family_of(k) for k in j["kernel"]):
        sub = j[j["kernel"].map(family_of) == fam]
        lines += [f"## {fam}", "", "| kernel | backend | dtype | n | shape | before | after | factor | "
                  "x numpy before | x numpy after |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sub.itertuples(index=False):
            lines.append(f"| {r.kernel} | {r.backend} | {r.dtype} | {r.size} | {r.shape_after} | "
                         f"{bench._human_time(r.median_s_before)} | {bench._human_time(r.median_s_after)} | "
                         f"{r.factor:.2f}x | {r.speedup_vs_numpy_before:.3g} | {r.speedup_vs_numpy_after:.3g} |")
        lines.append("")
    (outdir / "speed_before_after.md").write_text("\n".join(lines))
    return {"speed_before_after.md": "the C and Numba rows of an earlier speed.csv against speed.csv: median "
            "before, after, factor (`deepprop report --before 651578c:results/speed.csv`: the run before the issue-5 "
            "speed work, from git history; no measurement of its own)"}


# ---- speed.md holds issue 5's record: the graded targets and the before/after, copied from their files ----

_EMBED = {  # key: (file, heading, what it is)
    "targets": ("targets.md", "Speed targets (issue 5)",
                "graded by `deepprop bench --targets`; the workloads, the stamp and the raw times are in "
                "[targets.md](targets.md) and targets.csv"),
    "before_after": ("speed_before_after.md", "Before and after the speed work",
                     "copied from [speed_before_after.md](speed_before_after.md), which quotes both runs' stamps"),
}


def _section_of(key: str, text: str) -> list[str]:
    """The part of a generated file that speed.md carries, with the commit and date of its stamp."""
    lines = text.splitlines()
    stamp = [ln[2:] for ln in lines if ln.startswith(("- commit:", "- date:"))]
    runs = [", ".join(stamp[i:i + 2]) for i in range(0, len(stamp), 2)]
    said = (f"Measured in the run of {runs[0]}." if len(runs) == 1 else
            f"Before: the run of {runs[0]}; after: the run of {runs[1]}." if len(runs) >= 2 else "Unstamped.")
    if key == "targets":
        start = next((i for i, ln in enumerate(lines) if ln.startswith("**") and "targets met" in ln), None)
        end = next((i for i, ln in enumerate(lines) if ln.startswith("## Workloads")), len(lines))
    else:
        start = next((i for i, ln in enumerate(lines) if ln.startswith("factor = ")), None)
        end = len(lines)
    if start is None:
        return []
    body = [("#" + ln) if ln.startswith("## ") else ln for ln in lines[start:end]]
    return [said, ""] + body


def embed_issue5_sections(outdir) -> None:
    """Copy targets.md's graded table and speed_before_after.md's tables into speed.md, between markers, so
    that speed.md holds issue 5's record whichever of the files was regenerated last (each is copied as it
    is now; one missing leaves its section out)."""
    outdir = pathlib.Path(outdir)
    speed_md = outdir / "speed.md"
    if not speed_md.exists():
        return
    text = speed_md.read_text()
    for key in _EMBED:  # drop the old copies
        begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
        if begin in text and end in text:
            a, b = text.index(begin), text.index(end) + len(end)
            text = text[:a].rstrip("\n") + "\n\n" + text[b:].lstrip("\n")
    blocks = []
    for key, (fname, heading, what) in _EMBED.items():
        src = outdir / fname
        body = _section_of(key, src.read_text()) if src.exists() else []
        if body:
            blocks.append("\n".join([f"<!-- begin {key} -->", f"## {heading}", "", f"_{what}._", "", *body,
                                      f"<!-- end {key} -->"]))
    if blocks:
        at = text.find("\n## ")   # before the first family's section
        at = len(text) if at < 0 else at + 1
        text = text[:at] + "\n\n".join(blocks) + "\n\n" + text[at:]
    speed_md.write_text(text)


# ---- the command ----------------------------------------------------------------------------------------------

def report(outdir="results", kernels=None, threads=None, sizes=None, blas_coretype="auto", repeat=5, min_time=0.1,
           remeasure=True, parts=("speed", "targets", "depth"), command="deepprop report", progress=True, backends=None,
           alloc="inside") -> dict:
    """Regenerate the results files; returns {file name: how it is made}."""
    from . import machine

    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    files: dict = {}
    limits = machine.limits(refresh=remeasure)
    plan = bench.make_plan(kernels, backends, None, sizes, threads, repeat, min_time, blas_coretype, alloc)
    rows, env_reports = bench.run(plan, limits, progress=progress) if "speed" in parts else ([], {})
    stamp = make_stamp(command, plan, env_reports, limits)
    if "speed" in parts:
        families: dict = {}
        for name in plan.kernels:
            families.setdefault(family_of(name), []).append(name)
        write_csv(outdir / "speed.csv", rows, stamp)
        pngs, why_not = write_plots(outdir, rows, stamp, families)
        write_markdown(outdir / "speed.md", rows, stamp, families, pngs)
        files.update({k: v for k, v in SPEED_FILES.items() if k != "speed_<family>.png"})
        for fam, p in pngs.items():
            files[p.name] = f"{fam} family: {SPEED_FILES['speed_<family>.png'].split(': ', 1)[1]}"
        if why_not:
            # a PNG of an earlier run would sit next to tables it no longer matches: remove it
            stale = [outdir / f"speed_{fam}.png" for fam in families if (outdir / f"speed_{fam}.png").exists()]
            for path in stale:
                path.unlink()
            print(f"deepprop report: speed PNGs not made, {why_not}"
                  + (f"; removed the stale {', '.join(p.name for p in stale)}" if stale else ""), file=sys.stderr)
            files["(speed PNGs)"] = f"not made: {why_not}"
    if "targets" in parts:
        files.update(write_targets(outdir, command, limits, progress))
    if "depth" in parts:
        try:
            from . import depth
        except ImportError:
            depth = None
        if depth is not None and hasattr(depth, "report"):
            made = depth.report(str(outdir), stamp=stamp_text(stamp))
            titles = getattr(depth, "REPORT_TABLES", {})
            if isinstance(made, dict):
                files.update({str(k): v for k, v in made.items()})
            elif made:
                for p in made:
                    p = pathlib.Path(p)
                    title = titles.get(p.stem)
                    kind = {".csv": "table (CSV)", ".md": "table (Markdown)", ".png": "plot"}.get(p.suffix, "file")
                    files[p.name] = (f"depth harness (kernels.depth.report): {title}, {kind}" if title
                                     else f"depth harness (kernels.depth.report): {kind}")
    embed_issue5_sections(outdir)
    write_readme(outdir / "README.md", stamp, {**files, "README.md": "this file, by `deepprop report`"}, command)
    return files


def add_arguments(p) -> None:
    p.add_argument("--outdir", default="results", help="where to write (default: %(default)s)")
    p.add_argument("--kernel", action="append", metavar="NAME",
                   help="only these kernels (repeatable or comma-separated; default: every kernel)")
    p.add_argument("--sizes", type=parse_sizes, metavar="N,N,...", help="sizes for every kernel (default: each "
                   "kernel's own; `deepprop bench --workloads`)")
    p.add_argument("--threads", type=int, default=None, help="as for deepprop bench (default: the usable cores)")
    p.add_argument("--blas-coretype", default="auto", metavar="env|auto|NAME",
                   help="as for deepprop bench, but default auto: NumPy on OpenBLAS's own detected kernels")
    p.add_argument("--repeat", type=int, default=5, help="at least this many samples per case (default: 5)")
    p.add_argument("--min-time", type=float, default=0.1, metavar="SECONDS",
                   help="and at least this long per case (default: 0.1)")
    p.add_argument("--backends", type=bench._csv_list, default=None, metavar="B,B,...",
                   help="as for deepprop bench (default: every available one)")
    p.add_argument("--alloc", choices=bench.ALLOC_MODES, default="inside",
                   help="as for deepprop bench (default: inside the timing)")
    p.add_argument("--before", metavar="OLD.csv", default=None,
                   help="instead of measuring: compare an earlier speed.csv (a file, or REV:PATH from git) with "
                        "OUTDIR/speed.csv and write OUTDIR/speed_before_after.md")
    p.add_argument("--cached-limits", action="store_true",
                   help="use the cached machine limits instead of measuring them afresh")
    p.add_argument("--parts", type=bench._csv_list, default=["speed", "targets", "depth"],
                   metavar="speed,targets,depth",
                   help="which parts to regenerate (default: all three; the README's file table keeps the entries "
                        "of parts not regenerated)")


def main(args) -> int:
    """`deepprop report` (wired in kernels/cli.py)."""
    kernels_asked = [k for arg in (args.kernel or []) for k in bench._csv_list(arg)] or None
    command = getattr(args, "command_line", "deepprop report")
    t0 = time.time()
    if args.before:
        outdir = pathlib.Path(args.outdir)
        before = pathlib.Path(args.before)
        if not before.exists() and ":" in args.before:  # REV:PATH, a file in git history
            import subprocess
            import tempfile

            proc = subprocess.run(["git", "show", args.before], capture_output=True, text=True)
            if proc.returncode == 0:
                before = pathlib.Path(tempfile.mkdtemp()) / "speed_before.csv"
                before.write_text(proc.stdout)
        if not (outdir / "speed.csv").exists() or not before.exists():
            print(f"deepprop report: --before needs {args.before} (a file or REV:PATH in git) and "
                  f"{outdir / 'speed.csv'}", file=sys.stderr)
            return 2
        files = write_before_after(outdir, before, command)
        embed_issue5_sections(outdir)
        write_readme(outdir / "README.md", None, files, command)
        print(f"wrote {outdir / 'speed_before_after.md'}")
        return 0
    try:
        files = report(args.outdir, kernels_asked, args.threads, args.sizes, args.blas_coretype, args.repeat,
                       args.min_time, not args.cached_limits, tuple(args.parts), command, backends=args.backends,
                       alloc=args.alloc)
    except bench.BenchError as exc:
        print(f"deepprop report: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(files) + 1} file(s) to {args.outdir}/ in {time.time() - t0:.0f} s:")
    for name in [*files, "README.md"]:
        print(f"  {name}")
    return 0
