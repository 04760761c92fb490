"""The cache folder of built models, and publishing a build into it atomically."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def default_cache_dir() -> Path:
    return Path(os.environ.get("CPT_BENCH_CACHE", Path.home() / ".cache" / "cpt-bench"))


def cache_root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir else default_cache_dir()


def publish_build(target: Path, model, tokenizer, build: dict) -> Path:
    """Save a built model into `target` as one step: written to a temporary folder with its
    `build.json` (the completion mark), then renamed, so an interrupted build is simply
    redone and a process that finished the same build first wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "build.json").write_text(json.dumps(build, indent=2))
    if (target / "build.json").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return target
    shutil.rmtree(target, ignore_errors=True)  # a leftover without build.json is incomplete
    try:
        tmp.rename(target)
    except OSError:
        if not (target / "build.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return target
