"""Secrets: tokens and keys from the environment never reach a run's files, logs or W&B."""

from __future__ import annotations

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow

SECRETS = {
    "WANDB_API_KEY": "wandbsecret" + "7" * 29,  # W&B's 40-character key format
    "HF_TOKEN": "hf_cptbenchfaketoken0123456789",
    "HUGGING_FACE_HUB_TOKEN": "hf_cptbenchlegacytoken987654321",
}


def test_tokens_in_the_environment_appear_in_no_file_of_a_run(model_cache, tmp_path):
    # online with a key: the path that handles the key (no network here, so it falls back offline)
    run_dir = tmp_path / "run"
    res = run_cli("order.tasks=[max]", "benchmark.train_size=16", "benchmark.test_size=10", "paradigm.epochs=1",
                  "logger.mode=online", "logger.init_timeout=5", f"model.cache_dir={model_cache}",
                  f"hydra.run.dir={run_dir}", env={"WANDB_MODE": "online", **SECRETS})
    assert res.returncode == 0, res.stderr[-2000:]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and (run_dir / ".hydra" / "config.yaml").exists()
    for path in files:
        data = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"{name} leaked into {path.relative_to(run_dir)}"
    for name, value in SECRETS.items():
        assert value not in res.stdout + res.stderr, f"{name} leaked into the console"
