"""Round-trip a real offline W&B run through tests/wandb_offline.py."""

import json
import struct
import zlib

import numpy as np
import pytest
import wandb
from wandb.proto import wandb_internal_pb2 as pb

from wandb_offline import find_offline_runs, iter_records, read_offline_run

BIG = 80 * 1024  # one record larger than two 32 KiB blocks (FIRST/MIDDLE/LAST chunks)


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_offline_run_round_trip(tmp_path, monkeypatch):
    wandb_home = tmp_path / "wandb_home"  # keep artifact staging / cache out of ~
    for var, value in {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_SILENT": "true",
        "WANDB_DATA_DIR": str(wandb_home / "data"),
        "WANDB_CACHE_DIR": str(wandb_home / "cache"),
        "WANDB_CONFIG_DIR": str(wandb_home / "config"),
    }.items():
        monkeypatch.setenv(var, value)

    config = {"lr": 3e-4, "model": {"name": "tiny", "layers": 2}}
    run = wandb.init(
        mode="offline", dir=tmp_path, project="cpt-bench", group="g1", name="rt", config=config
    )
    run.define_metric("cpt/stage")
    run.define_metric("cpt/*", step_metric="cpt/stage")
    for stage in range(5):
        run.log({"cpt/stage": stage, "cpt/loss": 1.0 / (stage + 1), "note": f"s{stage}" * 2000})
    run.log({"blob": "z" * BIG, "nested": {"a": [1, 2], "ok": True, "none": None}})
    table = wandb.Table(columns=["task", "acc"], data=[["a", 0.5], ["b", 0.75]])
    image = wandb.Image(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    run.log({"results": table, "sample": image})
    run.summary["best_acc"] = 0.75
    run_id = run.id
    run.finish()
    wandb.teardown()  # finish() returns before wandb-core has flushed/closed the .wandb file

    [run_dir] = find_offline_runs(tmp_path)
    assert (run_dir / f"run-{run_id}.wandb").stat().st_size > 3 * 32 * 1024
    got = read_offline_run(run_dir)
    assert got.exit_code == 0

    assert (got.run_id, got.name, got.group) == (run_id, "rt", "g1")
    assert {k: got.config[k] for k in config} == config

    assert {"glob_name": "cpt/*", "step_metric": "cpt/stage"}.items() <= got.metric_defs[-1].items()

    assert [row["_step"] for row in got.history] == list(range(7))
    stages = [row for row in got.history if "cpt/stage" in row]
    assert [r["cpt/stage"] for r in stages] == list(range(5))
    assert [r["cpt/loss"] for r in stages] == [1.0 / (s + 1) for s in range(5)]
    assert [r["note"] for r in stages] == [f"s{s}" * 2000 for s in range(5)]
    assert got.history[5]["blob"] == "z" * BIG
    assert got.history[5]["nested"] == {"a": [1, 2], "ok": True, "none": None}

    media = got.history[6]
    assert media["results"]["_type"] == "table-file"
    assert media["sample"]["_type"] == "image-file"
    table_path, image_path = (run_dir / "files" / media[k]["path"] for k in ("results", "sample"))
    assert {table_path, image_path} <= set(got.media_files)
    assert json.loads(table_path.read_text())["data"] == [["a", 0.5], ["b", 0.75]]
    assert image_path.suffix == ".png" and image_path.stat().st_size > 0

    assert got.summary["best_acc"] == 0.75
    assert got.summary["cpt/stage"] == 4


def _write_log(path, payloads, block=32 * 1024):
    """Minimal writer mirroring wandb-core's leveldb.Writer (header lives in block 0)."""
    out = bytearray(b":W&B\xe1\xbe\x00")
    for payload in payloads:
        first = True
        while first or payload:
            left = block - len(out) % block
            if left < 7:  # no room for a chunk header: zero-pad to the next block
                out += bytes(left)
                continue
            chunk, payload = payload[: left - 7], payload[left - 7 :]
            kind = (1 if not payload else 2) if first else (4 if not payload else 3)
            out += struct.pack("<IHB", zlib.crc32(bytes([kind]) + chunk), len(chunk), kind) + chunk
            first = False
    path.write_bytes(bytes(out))
    return len(out)


def _history(text):
    rec = pb.Record()
    rec.history.item.add(key="t", value_json=json.dumps(text))
    return rec


def test_iter_records_block_padding_and_multi_block_records(tmp_path):
    # First record ends 3 bytes short of the 32 KiB boundary, forcing a zero trailer.
    n = 32 * 1024 - 7 - 7 - 3  # block 0 minus file header, chunk header and 3 spare bytes
    overhead = _history("a" * 30_000).ByteSize() - 30_000
    first = _history("a" * (n - overhead))
    assert first.ByteSize() == n
    records = [first, _history("b" * 70_000), _history("c")]
    size = _write_log(tmp_path / "run-x.wandb", [r.SerializeToString() for r in records])
    assert size > 3 * 32 * 1024
    assert list(iter_records(tmp_path / "run-x.wandb")) == records


@pytest.mark.slow
def test_online_without_a_key_warns_once_goes_offline_and_a_resumed_run_keeps_its_wandb_id(model_cache, tmp_path):
    """No key (and no network here): the run goes on offline; killed and resumed, it logs
    into the same W&B run id (kept in the run directory), not a second one."""
    import signal

    from cpt_bench.faults import ENV

    from conftest import run_cli

    run_dir = tmp_path / "run"
    args = ["order.tasks=[max,shift]", "benchmark.train_size=48", "benchmark.test_size=20", "paradigm.epochs=1",
            "logger.mode=online", "logger.init_timeout=5", f"model.cache_dir={model_cache}", f"hydra.run.dir={run_dir}"]
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": ""}
    killed = run_cli(*args, env={**env, ENV: "evaluation@2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (killed.stdout + killed.stderr).count("W&B online is unavailable") == 1, killed.stdout[-2000:]
    run_id = (run_dir / "wandb" / "run_id").read_text().strip()
    resumed = run_cli(*args, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run_dir / "wandb" / "run_id").read_text().strip() == run_id
    offline = sorted(run_dir.glob("wandb/offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(f"-{run_id}") for p in offline)
    assert (run_dir / "matrix.csv").exists() and (run_dir / "metrics.json").exists()
