#!/usr/bin/env bash
# Download (or build) the wheels a lent GPU machine lacks, for its Python 3.12, into .whl/
# (git-ignored, < 64 MiB), so `benchmarks/gpu_check.sh` can install them there with
# --no-index --no-deps on top of the machine's own CUDA torch. The machine has torch,
# transformers, accelerate, pandas, pyarrow, safetensors, pytest, but no TRL, Hydra, omegaconf,
# DeepSpeed (nor its pydantic), datasets or W&B, and reaches no registry. Its transformers,
# huggingface_hub, tokenizers and peft are older than the lock's (5.17 against 5.24 in 2026-11),
# so the lock's versions travel too, with the newer hub's own needs (httpx2 and what it imports):
# the check runs the code on the versions it was tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=.whl
rm -rf "$OUT" && mkdir -p "$OUT"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
version() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
# pure-Python wheels and binary ones for CPython 3.12 on x86-64, at the versions installed here
$PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$OUT" \
    "trl==$(version trl)" "datasets==$(version datasets)" "hydra-core==$(version hydra-core)" \
    "omegaconf==$(version omegaconf)" \
    "transformers==$(version transformers)" "huggingface_hub==$(version huggingface_hub)" \
    "tokenizers==$(version tokenizers)" "peft==$(version peft)" \
    "httpx2==$(version httpx2)" "httpcore2==$(version httpcore2)" "truststore==$(version truststore)" \
    "hf-xet==$(version hf-xet)" "click==$(version click)" "anyio==$(version anyio)" "idna==$(version idna)" \
    "typing_extensions==$(version typing_extensions)" "regex==$(version regex)" "fsspec==$(version fsspec)" \
    "dill==$(version dill)" "multiprocess==$(version multiprocess)" "hjson==$(version hjson)" \
    "mathruler==$(version mathruler)" "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" \
    "annotated-types==$(version annotated-types)" "typing-inspection==$(version typing-inspection)"
# source-only on PyPI: built into wheels here (DeepSpeed's ops compile at run time there)
DS_BUILD_OPS=0 $PY -m pip wheel --quiet --no-deps --no-build-isolation -w "$OUT" \
    "pylatexenc==$(version pylatexenc)" "antlr4-python3-runtime==$(version antlr4-python3-runtime)" \
    "deepspeed==$(version deepspeed)"
# cpt-bench itself, from this checkout
$PY -m pip wheel --quiet --no-deps --no-build-isolation -w "$OUT" .
du -sh "$OUT" && ls "$OUT"
