"""Parent processes for tests/test_processes.py, each started as a script, which start
children the way the stages do and print ``ready`` once every child is past its start (not
a test module).

    python tests/parents.py torchrun CONFIG SUMMARY_DIR   # lib.generation.launch's torchrun
    python tests/parents.py pool                           # lib.sweep's process pool
    python tests/parents.py kernel                         # a kernel as lib.runner starts it
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def torchrun(cfg_file: str, summary_dir: str) -> None:
    """Two generation workers under torchrun, launched as the generate stage launches them."""
    from lib.generation.launch import _stream, torchrun_command

    print("ready", flush=True)  # the test waits for the workers themselves
    _stream(torchrun_command(2, Path(cfg_file), Path(summary_dir)), dict(os.environ),
            Path.cwd())


def pool() -> None:
    """The sweep's pool of two workers, both busy for a minute."""
    from lib.sweep import worker_pool

    with worker_pool(2) as workers:
        # Two tasks that outlast a worker's start: each worker ran its initializer.
        pids = {f.result() for f in [workers.submit(_pid_after, 0.5) for _ in range(2)]}
        assert len(pids) == 2, pids
        busy = [workers.submit(time.sleep, 60) for _ in range(2)]
        print("ready", flush=True)
        for f in busy:
            f.result()


def kernel() -> None:
    """A child in its own session that imports a stage, as lib.runner's kernel does."""
    from lib.processes import RUNNER_ENV

    env = {**os.environ, RUNNER_ENV: str(os.getpid())}
    code = "import lib.stages, time; print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    print("ready", flush=True)
    child.wait()


if __name__ == "__main__":
    {"torchrun": torchrun, "pool": pool, "kernel": kernel}[sys.argv[1]](*sys.argv[2:])
