"""Child processes that die with their parent.

A stage starts processes that outlive a plain kill of the stage otherwise: the papermill
kernel (its own session), torchrun and its workers (each worker in its own session), the
sweep's process pool. SIGKILL to the stage's process group, or to the stage alone, would
leave them running (and writing) for seconds or for good. Every such child asks the Linux
kernel to send it SIGKILL when its parent ends (``prctl(PR_SET_PDEATHSIG)``), so a killed or
interrupted stage takes its children with it, link by link:

* the torchrun launcher: :func:`parent_death_hook` as the ``preexec_fn`` of its ``Popen``
  (:mod:`lib.generation.launch`);
* the generation worker and the training worker under torchrun: :func:`die_with_launcher`
  at their start (:mod:`lib.generation.__main__`, :func:`lib.stages.train.main`);
* the sweep's pool workers: :func:`die_with_parent` as the pool's initializer
  (:mod:`lib.sweep`);
* the notebook kernel of ``python -m lib.runner``: :func:`die_with_runner` when a stage
  module is imported (:mod:`lib.stages`), keyed by :data:`RUNNER_ENV`.

The signal is tied to the parent *thread* that started the child: every caller here starts
its children from a thread that outlives them. Elsewhere than Linux these are no-ops.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Set by torchrun's agent in every worker's environment.
TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"
# Set by lib.runner to its pid for the kernel it starts: only a kernel whose parent is the
# runner ties its life to it (a kernel of JupyterLab is left alone).
RUNNER_ENV = "SYNTHSCALE_RUNNER_PID"


@functools.cache
def _prctl() -> Callable[..., int]:
    """libc's ``prctl``, resolved once (in the parent: a ``preexec_fn`` must not dlopen)."""
    return ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent(parent: int | None = None, sig: int = signal.SIGKILL) -> bool:
    """Ask for ``sig`` when this process's parent ends; True where supported (Linux).

    ``parent``: the pid the caller expects as parent (e.g. ``os.getpid()`` captured before a
    fork); when the parent is already gone by the time the request is made, this process
    sends itself ``sig`` at once rather than run orphaned. Also a process pool's
    ``initializer``; for ``Popen`` use :func:`parent_death_hook`.
    """
    if not sys.platform.startswith("linux"):
        return False
    zero = ctypes.c_ulong(0)  # prctl is variadic: pass its unsigned longs as such
    if _prctl()(PR_SET_PDEATHSIG, ctypes.c_ulong(int(sig)), zero, zero, zero) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)  # the parent died before the request: follow it now
    return True


def parent_death_hook(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child dies with the calling process
    (None elsewhere than Linux). libc is resolved here, before the fork: the hook itself runs
    between fork and exec, where loading a library could deadlock on a lock another thread
    of the parent held."""
    if not sys.platform.startswith("linux"):
        return None
    _prctl()
    parent = os.getpid()

    def hook() -> None:
        die_with_parent(parent, sig)

    return hook


def die_with_runner() -> bool:
    """In a kernel started by ``python -m lib.runner`` (whose pid is in :data:`RUNNER_ENV`
    and is this process's parent), die with the runner; elsewhere do nothing. True if set."""
    runner = os.environ.get(RUNNER_ENV, "")
    if not runner.isdigit() or int(runner) != os.getppid():
        return False
    return die_with_parent(int(runner))


def die_with_launcher() -> bool:
    """In a worker started by torchrun (:data:`TORCHRUN_ENV` set), die with torchrun's agent;
    a worker started otherwise (``python -m``, ``srun``, ``nohup``) is left alone. True if
    set."""
    if not os.environ.get(TORCHRUN_ENV):
        return False
    return die_with_parent()
