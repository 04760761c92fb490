"""SLURM's pre-emption and time-limit warning (USR2) under `hydra/launcher=slurm`.

submitit's handler requeues the job, then raises SystemExit wherever the controller happens to
be. Library code can swallow that exit (it was seen once during a trainer's set-up); the job
then runs on beside its requeued copy, both writing one run directory. So the controller wraps
the handler: the signal is remembered, the stage loop and the trainer's log events stop the run
at the next chance (`check`), and a watchdog ends the process outright if it is still alive
`EXIT_GRACE_S` after the signal (SLURM sends it 300 s before the end).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

EXIT_GRACE_S = 120.0
_signalled = False


def guard() -> None:
    """Wrap the USR2 handler submitit installed (nothing to do when none is installed)."""
    if threading.current_thread() is not threading.main_thread():
        return  # a joblib sweep's job thread: no submitit there, and only the main thread may
    previous = signal.getsignal(signal.SIGUSR2)
    if not callable(previous) or getattr(previous, "cpt_bench_guard", False):
        return

    def handler(signum, frame) -> None:
        global _signalled
        if not _signalled:
            _signalled = True
            watchdog = threading.Timer(EXIT_GRACE_S, _force_exit)
            watchdog.daemon = True
            watchdog.start()
        previous(signum, frame)  # requeue, then SystemExit

    handler.cpt_bench_guard = True
    signal.signal(signal.SIGUSR2, handler)


def _force_exit() -> None:
    log.error("still running %.0f s after the requeue signal: exiting now", EXIT_GRACE_S)
    logging.shutdown()
    os._exit(1)


def check() -> None:
    """Stop here if the requeue signal came and its exit was swallowed on the way."""
    if _signalled:
        raise SystemExit("requeued after SIGUSR2: stopping at the next stage or log event")
