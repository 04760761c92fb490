"""Read back what an offline W&B run wrote to disk (wandb 0.31 has no public reader).

``run-<id>.wandb`` = 7-byte header (``:W&B``, magic 0xBEE1 LE, version 0), then
LevelDB-log framing: 32 KiB blocks counted from file offset 0 (the header sits
inside block 0), chunks of crc32-IEEE(type+payload) u32 LE | length u16 LE |
type u8 (1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST); a block tail < 7 bytes is zero
padding. Each reassembled payload is one serialized ``wandb_internal.Record``.

wandb-core only writes whole 32 KiB blocks until it closes the file, which happens
*after* ``run.finish()`` returns: call ``wandb.teardown()`` before reading, and
check ``exit_code`` (None = no exit record yet, i.e. unfinished or not flushed).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from wandb.proto import wandb_internal_pb2 as pb

_BLOCK, _HDR = 32 * 1024, 7


@dataclass
class OfflineRun:
    run_id: str | None = None
    name: str | None = None
    exit_code: int | None = None
    group: str | None = None
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    metric_defs: list[dict] = field(default_factory=list)
    media_files: list[Path] = field(default_factory=list)


def find_offline_runs(root) -> list[Path]:
    return sorted(p for p in Path(root).rglob("offline-run-*") if p.is_dir() and not p.is_symlink())


def iter_records(path):
    """Yield each Record; an incomplete record at the end of the file is ignored."""
    data = Path(path).read_bytes()
    if data[:6] != b":W&B\xe1\xbe":
        raise ValueError(f"{path}: not a W&B transaction log")
    pos, buf = _HDR, b""
    while pos + _HDR <= len(data):
        if _BLOCK - pos % _BLOCK < _HDR:  # zero-padded block trailer
            pos += _BLOCK - pos % _BLOCK
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        chunk = data[pos + _HDR : pos + _HDR + length]
        if len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) != crc:
            raise ValueError(f"{path}: corrupt chunk at offset {pos}")
        pos, buf = pos + _HDR + length, buf + chunk
        if kind in (1, 4):  # FULL or LAST completes a record
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def _apply(target: dict, items, remove=False) -> dict:
    """Apply Config/Summary/History items; a value's path is ``key`` or ``nested_key``."""
    for item in items:
        *parents, leaf = list(item.nested_key) or [item.key]
        node = target
        for k in parents:
            node = node.setdefault(k, {})
        if remove:
            node.pop(leaf, None)
        else:
            node[leaf] = json.loads(item.value_json)
    return target


def _unwrap(v):
    return v["value"] if isinstance(v, dict) and set(v) in ({"value"}, {"value", "desc"}) else v


def read_offline_run(run_dir) -> OfflineRun:
    run_dir = Path(run_dir)
    media = sorted(p for p in (run_dir / "files" / "media").rglob("*") if p.is_file())
    out = OfflineRun(media_files=media)
    for rec in iter_records(next(run_dir.glob("run-*.wandb"))):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            out.run_id, out.name, out.group = r.run_id, r.display_name or None, r.run_group or None
            _apply(out.config, r.config.update)
        elif kind in ("config", "summary"):  # deltas, applied in order
            msg, target = getattr(rec, kind), getattr(out, kind)
            _apply(target, msg.update)
            _apply(target, msg.remove, remove=True)
        elif kind == "history":
            out.history.append(_apply({}, rec.history.item))
        elif kind == "exit":
            out.exit_code = rec.exit.exit_code
        elif kind == "metric":
            out.metric_defs.append(MessageToDict(rec.metric, preserving_proto_field_name=True))
    out.config = {k: _unwrap(v) for k, v in out.config.items()}
    return out
