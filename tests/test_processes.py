"""A killed stage takes its children with it (lib.processes): torchrun and its generation
workers (each in its own session), the sweep's pool workers, and the runner's kernel.

Each test starts a parent (tests/parents.py) that starts its children the way the stages do,
kills the parent (its process group, or the parent alone), and checks that no descendant is
left 3 seconds later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
PARENTS = Path(__file__).with_name("parents.py")
GRACE_S = 3.0

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG is Linux's")


def _start(*args: str) -> subprocess.Popen:
    """``tests/parents.py ARGS`` in a new session (its own process group), once ready."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(PARENTS), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "ready", f"parent did not start (exit {proc.poll()}): {line!r}"
    return proc


def _alive(procs: list[psutil.Process]) -> list[str]:
    """The processes of ``procs`` still running (zombies count as gone)."""
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return left


def _assert_gone_soon(procs: list[psutil.Process]) -> None:
    deadline = time.monotonic() + GRACE_S
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _alive(procs)
    for p in procs:  # never leave strays behind, whatever the outcome
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    assert not left, f"still running {GRACE_S} s after the kill: {left}"


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` holds ``path`` open (psutil lists regular files only)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:
            pass
    return False


def _wait_for(predicate, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow  # torchrun and two workers importing torch: seconds
@pytest.mark.timeout(300)
def test_killing_the_launcher_group_ends_torchrun_and_its_workers(tmp_path):
    # The workers' config is a FIFO this test holds open for writing and never writes:
    # each worker (the real `python -m lib.generation`) stays blocked reading it, alive,
    # with the FIFO among its open files once it is past its start.
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    hold = os.open(fifo, os.O_RDWR)
    family: list[psutil.Process] = []
    try:
        parent = _start("torchrun", str(fifo), str(tmp_path))
        root = psutil.Process(parent.pid)
        family = [root]

        def workers() -> list[psutil.Process]:
            return [p for p in root.children(recursive=True) if _has_open(p.pid, fifo)]

        _wait_for(lambda: len(workers()) == 2, "two workers reading their config")
        family = [root, *root.children(recursive=True)]
        assert len(family) == 4, family  # this parent, torchrun, two workers
        assert all(os.getsid(w.pid) != os.getsid(parent.pid) for w in workers())
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
        _assert_gone_soon(family)
    finally:
        for p in family:  # on a failure before the kill, leave no strays
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        os.close(hold)


@pytest.mark.timeout(120)
def test_killing_the_sweep_ends_its_pool_workers():
    parent = _start("pool")
    family = psutil.Process(parent.pid).children(recursive=True)
    assert len(family) >= 2
    os.kill(parent.pid, signal.SIGKILL)  # the parent alone: its group lives on
    parent.wait()
    _assert_gone_soon(family)


@pytest.mark.timeout(120)
def test_a_kernel_of_the_runner_dies_with_it():
    parent = _start("kernel")
    family = psutil.Process(parent.pid).children(recursive=True)
    assert len(family) == 1 and os.getsid(family[0].pid) == family[0].pid  # its own session
    os.killpg(parent.pid, signal.SIGKILL)  # the runner's group: not the kernel's session
    parent.wait()
    _assert_gone_soon(family)


def test_only_the_runners_own_kernel_is_tied_to_it(monkeypatch):
    from lib import processes

    monkeypatch.delenv(processes.RUNNER_ENV, raising=False)
    assert processes.die_with_runner() is False  # JupyterLab's kernels are left alone
    monkeypatch.setenv(processes.RUNNER_ENV, str(os.getppid() + 100000))
    assert processes.die_with_runner() is False  # another process's runner
    monkeypatch.delenv(processes.TORCHRUN_ENV, raising=False)
    assert processes.die_with_launcher() is False  # `python -m`, srun, nohup: left alone
