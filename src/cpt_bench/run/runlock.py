"""One controller per run directory.

The controller holds an exclusive OS lock (`filelock`, fcntl's flock on Linux) on
`<run dir>/.cpt/controller.lock` for its whole life. A second `cpt-bench` aimed at the same
directory (a duplicated command, a requeued job while the first still runs) is refused in one
line naming the holder, before anything is built: two controllers would race on the same
stage folders. The kernel drops the lock when its holder dies, however it dies, so a lock
left by a killed controller never blocks a resume or a SLURM requeue; the holder's pid and
host are kept beside it only to name them.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from cpt_bench.errors import ConfigError, RunDirInUse
from cpt_bench.outputs.rundir import read_json, write_json

LOCK_FILE = ".cpt/controller.lock"
HOLDER_FILE = ".cpt/controller.json"


class RunDirLock:
    """`with RunDirLock(run_dir):` the controller's hold on its run directory."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        try:
            (run_dir / LOCK_FILE).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only or vanished folder: one line, not a traceback
            raise ConfigError(f"{run_dir} cannot be written ({exc.strerror}); pick another hydra.run.dir, or "
                              "make it writable") from None
        self.lock = FileLock(run_dir / LOCK_FILE, thread_local=False)

    def holder(self) -> str:
        try:
            info = read_json(self.run_dir / HOLDER_FILE)
        except (OSError, ValueError):
            return "another process"
        if not isinstance(info, dict):
            return "another process"
        return f"pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}"

    def __enter__(self) -> RunDirLock:
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise RunDirInUse(f"{self.run_dir} is in use by another cpt-bench controller ({self.holder()}); wait "
                              "for it to end, or stop it first") from None
        except OSError as exc:  # e.g. a lock file left read-only (Timeout is an OSError too: caught first)
            raise ConfigError(f"{self.run_dir / LOCK_FILE} cannot be locked ({exc.strerror}); make it writable, "
                              "or delete it when no cpt-bench runs in this folder") from None
        write_json(self.run_dir / HOLDER_FILE, {"pid": os.getpid(), "host": socket.gethostname(),
                                                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return self

    def __exit__(self, *exc) -> None:
        (self.run_dir / HOLDER_FILE).unlink(missing_ok=True)
        self.lock.release()
