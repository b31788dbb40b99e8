"""The ``deepprop`` command line.

    deepprop                 the depth table on its built-in defaults (same as ``deepprop depth``)
    deepprop list            the kernel x backend matrix, with why a backend is unavailable
    deepprop check           every kernel x backend x dtype against the NumPy reference
    deepprop info            the CPU, its measured limits, BLAS, threads and versions
    deepprop bench ...       kernel speed: numpy vs numba vs c vs torch (``deepprop bench --help``)
    deepprop report ...      regenerate results/ (speed, and depth when present) on a quiet machine
    deepprop depth ...       depth-vs-gradient-norm tables (``deepprop depth --help``)
    deepprop sweep SPEC      a grid of depth configurations on Dask, resumable (``deepprop report --sweep``)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

EPILOG_CHECK = """\
examples:
  deepprop check                          every kernel, both dtypes, numba and c
  deepprop check --backend c --format json
  deepprop check --kernel linear_forward --kernel relu_backward --sizes 1,7,1025

Each cell runs the kernel on inputs built from every size (shapes derived from it, non-square)
and reports the worst error against the reference under the kernel's tolerance (kernels/verify.py
documents the measures). The exit status is 1 if any cell fails.
"""


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


def cmd_list(args) -> int:
    import kernels

    avail = kernels.backends()
    width = max(map(len, kernels.names()))
    print(f"{'kernel':<{width}}  " + "  ".join(f"{b:<6}" for b in kernels.BACKENDS))
    for name in kernels.names():
        cells = ["yes" if avail[b] is None and b in kernels.REGISTRY[name] else "-" for b in kernels.BACKENDS]
        print(f"{name:<{width}}  " + "  ".join(f"{c:<6}" for c in cells))
    print(f"\n{len(kernels.names())} kernels.")
    for b, why in avail.items():
        print(f"backend {b}: " + ("available" if why is None else f"UNAVAILABLE - {why}"))
    return 0


def _verdict(ok: bool | None) -> str:
    return "ok" if ok else ("FAIL" if ok is False else "n/a")


def cmd_check(args) -> int:
    import kernels
    from kernels import verify

    names = args.kernel or kernels.names()
    unknown = [n for n in names if n not in kernels.REGISTRY]
    if unknown:
        print(f"deepprop check: unknown kernel(s) {', '.join(unknown)}; `deepprop list` shows them",
              file=sys.stderr)
        return 2
    backends = [args.backend] if args.backend else list(kernels.BACKENDS)
    total = len(names) * len(backends) * 2 * len(args.sizes)
    bar = None
    if args.format == "table" and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=total, desc="checking", unit="case", file=sys.stderr, leave=False)
    results = verify.check(names, backends, sizes=args.sizes, progress=bar.update if bar else None)
    if bar:
        bar.close()
    failed = [r for r in results if r.ok is False]
    if args.format == "json":
        print(json.dumps([{"kernel": r.kernel, "backend": r.backend, "dtype": r.dtype, "ok": r.ok,
                           "max_error": None if r.max_error != r.max_error else r.max_error,
                           "tolerance": None if r.tolerance != r.tolerance else r.tolerance,
                           "worst_size": r.size, "message": r.message} for r in results], indent=1))
    else:
        width = max(map(len, names))
        print(f"{'kernel':<{width}}  {'backend':<7} {'dtype':<7} {'ok':<4} {'max_error':>10} "
              f"{'tolerance':>10}  worst size")
        for r in results:
            err = "-" if r.max_error != r.max_error else f"{r.max_error:10.2e}"
            tol = "-" if r.tolerance != r.tolerance else f"{r.tolerance:10.2e}"
            line = (f"{r.kernel:<{width}}  {r.backend:<7} {r.dtype:<7} {_verdict(r.ok):<4} "
                    f"{err:>10} {tol:>10}  {r.size}")
            print(line + (f"  {r.message}" if r.message else ""))
        skipped = sum(r.ok is None for r in results)
        print(f"\n{len(results) - len(failed) - skipped} of {len(results)} cells ok, {len(failed)} failed, "
              f"{skipped} unavailable "
              f"(sizes {','.join(map(str, args.sizes))}; max_error is relative, see kernels/verify.py;\n"
              "numpy rows: the reference run twice agrees bitwise).")
    return 1 if failed else 0


def _report(args) -> int:
    """``deepprop report``: the results/ regeneration, or with --sweep DIR a sweep's tables."""
    if args.sweep is not None:
        from kernels import sweep

        return sweep.report_main(args)
    from kernels import report

    return report.main(args)


def build_parser() -> argparse.ArgumentParser:
    from kernels import verify

    parser = argparse.ArgumentParser(
        prog="deepprop", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="the kernel x backend matrix with availability")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check", help="verify every kernel x backend x dtype against the reference",
                       epilog=EPILOG_CHECK, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("numpy", "numba", "c"),
                   help="check one backend (default: all; the numpy row checks the reference is deterministic)")
    p.add_argument("--kernel", action="append", metavar="NAME", help="check only this kernel (repeatable)")
    p.add_argument("--sizes", type=parse_sizes, default=verify.QUICK_SIZES, metavar="N,N,...",
                   help="awkward sizes the inputs are built from (default: %(default)s; the test suite "
                        f"uses {','.join(map(str, verify.SIZES))})")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    p.set_defaults(func=cmd_check)

    from kernels import machine

    p = sub.add_parser("info", help="the CPU, its measured limits (FMA peak, bandwidth), BLAS, threads, versions",
                       description=machine.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    machine.add_arguments(p)
    p.set_defaults(func=machine.main)

    from kernels import bench

    p = sub.add_parser("bench", help="time kernels: numpy vs numba vs c vs torch, against the machine's limits",
                       description=bench.__doc__, epilog=bench.EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(p)
    p.set_defaults(func=bench.main)

    from kernels import report

    p = sub.add_parser("report", help="regenerate results/: speed.csv, speed.md, plots (and the depth results)",
                       description=report.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_arguments(p)
    g = p.add_argument_group("sweep (deepprop report --sweep DIR: the depth tables of a sweep's shards instead)")
    g.add_argument("--sweep", metavar="DIR", default=None,
                   help="aggregate the Parquet shards of `deepprop sweep` in DIR into the depth table "
                   "(geometric mean over seeds) and print it; nothing is measured")
    g.add_argument("--format", choices=("table", "csv", "json", "markdown"), default="table",
                   help="with --sweep: the table's format, as for deepprop depth (default: table)")
    g.add_argument("--sweep-outdir", metavar="OUT", default=None,
                   help="with --sweep: also write table.csv, table.md, errors.csv and table.png to OUT")
    p.set_defaults(func=_report)

    try:
        from kernels import depth
    except ImportError:
        depth = None
    if depth is not None:
        p = sub.add_parser("depth", help="depth-vs-gradient-norm tables (the default command)",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        depth.add_arguments(p)
        p.set_defaults(func=depth.main)

        from kernels import sweep

        p = sub.add_parser("sweep", help="a grid of depth configurations on Dask, checkpointed and resumable",
                           description=sweep.__doc__)
        sweep.add_arguments(p)
        p.set_defaults(func=sweep.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # the main job on its defaults
        argv = ["depth"] if "depth" in parser._subparsers._group_actions[0].choices else ["check"]
    args = parser.parse_args(argv)
    args.command_line = "deepprop " + shlex.join(argv)  # stamped into result files
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
