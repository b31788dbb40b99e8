"""A parent that has run a threaded kernel, then a spawned and a forked child: the one runner behind the
fork-safety tests (libgomp's pool does not survive fork; csrc/team.c)."""

import os
import pathlib
import subprocess
import sys

import kernels

ROOT = pathlib.Path(kernels.__file__).resolve().parent.parent


def spawn_and_fork(child, timeout=60):
    """In the script's __main__: run child(q) in a spawned and then a forked process and print
    "<method> <exit code> <what it put on q, if it exited 0>", or "<method> hung" after timeout s."""
    import multiprocessing as mp

    for method in ("spawn", "fork"):
        ctx = mp.get_context(method)
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,))
        p.start()
        p.join(timeout)
        if p.is_alive():
            p.kill()
            print(method, "hung", flush=True)
            continue
        print(method, p.exitcode, *(q.get(timeout=5) if p.exitcode == 0 else ()), flush=True)


def run_script_lines(tmp_path, text: str, *args, timeout=200, **env) -> list[str]:
    """Run `text` as a script file (spawn re-imports the child function from it) with the repository on
    PYTHONPATH and `env` added; its printed lines."""
    script = tmp_path / "fork_child.py"
    script.write_text(text)
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                    OPENBLAS_NUM_THREADS="1", OMP_WAIT_POLICY="passive", **env)
    proc = subprocess.run([sys.executable, str(script), *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def run_script(tmp_path, text: str, *args, **env) -> dict[str, str]:
    """run_script_lines, the lines as {first word: the rest}."""
    return dict(line.split(" ", 1) for line in run_script_lines(tmp_path, text, *args, **env))
