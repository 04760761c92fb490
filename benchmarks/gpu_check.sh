#!/usr/bin/env bash
# The GPU check of the cluster path, for a lent single-GPU machine (one call, at most 10 min).
# First an SFT stage and an RFT stage of cpt-bench itself (the product path), then the three
# checks of the largest risks of the paper's setting (benchmarks/gpu_risks.py,
# a random Qwen2.5-VL-7B built on the GPU in bf16, memory capped to an 80 GB card's share):
# output drift between two 7B models, HF evaluation at batch 64 x 1024 tokens with and
# without the pixel cap, one GRPO step with the KL reference and the vLLM share held back.
# The two stages run in bf16 under DeepSpeed ZeRO-3 through launcher=torchrun, on a model with
# Qwen2.5-0.5B's architecture and random weights (built there: such weights
# can be neither downloaded nor carried, and throughput does not need them). Each part has its
# own time limit; a part that runs out or out of memory is recorded as such. Records step
# time, tokens per second and peak GPU memory, summarised in $OUT/gpu_check.json; every log
# and record goes into $OUT/gpu_check.tgz, packed again after each part (the device tool
# returns at most 8 files, and a part that runs out of time must not lose the earlier ones).
# $OUT is bench-results/ when run by hand.
#
#   here:   bash benchmarks/fetch_gpu_wheels.sh
#   there:  device run, carry [".whl"], command "bash benchmarks/gpu_check.sh [PART...]", timeout_s 590
#
# PARTs (default: all): sft rft (150 s each) kl (100 s) eval (220 s) grpo (120 s). All of them
# take about 760 s, more than one device call's 600 s: BUDGET (540 s, the call's 590 s less the
# install and the preflight) bounds the parts' limits together: a part whose limit is more than
# what is left is skipped and recorded as such, so the limits of the parts that run always add up
# to less than the call's. Name the ones docs/cluster.md says are still unmeasured first. The model
# is built only for sft and rft. Before the parts, the preflight's predictions for each
# (benchmarks/gpu_preflight.py, no model) are written beside them; gpu_summary.py puts the
# predicted per-GPU total next to each measured peak.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-results}
mkdir -p "$OUT"
RES=$(mktemp -d)  # every part's files; packed into $OUT after each part
pack() { tar czf "$OUT/gpu_check.tgz" -C "$RES" . && cp "$RES/summary.txt" "$OUT/" 2>/dev/null; true; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
export PATH=/tmp/site/bin:$PATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RES/gpu.txt"
PARTS=" ${*:-sft rft kl eval grpo} "
BUDGET=${BUDGET:-540}  # seconds from the script's start (install included) to its last part's limit
# want NAME [LIMIT]: the part was asked for and (with a limit) that limit fits what is left of BUDGET
want() {
    [[ $PARTS == *" $1 "* ]] || return 1
    [ -z "${2:-}" ] && return 0
    local left=$((BUDGET - SECONDS))
    if [ "$2" -gt "$left" ]; then
        echo "$1 skipped: its ${2} s limit is more than the ${left} s left of BUDGET=${BUDGET}" | tee -a "$RES/summary.txt"
        return 1
    fi
}
timeout 60 python3 benchmarks/gpu_preflight.py "$RES" > "$RES/preflight.log" 2>&1 \
    || echo "preflight exit $? (see preflight.log)" | tee -a "$RES/summary.txt"
pack
if want sft || want rft; then
    python3 benchmarks/gpu_model.py /tmp/qwen-0.5b-random > "$RES/model.log" 2>&1 \
        || { cat "$RES/model.log"; pack; exit 1; }
fi
common=(model.path=/tmp/qwen-0.5b-random model.builtin=null model.dtype=bf16 launcher=torchrun
        launcher.nproc_per_node=1 deepspeed=zero3 logger=none "order.tasks=[add]" benchmark.train_size=256
        benchmark.test_size=64 eval.general=false eval.batch_size=64)
run() {  # name, extra overrides...
    local name=$1; shift
    want "$name" 150 || return 0
    timeout 150 python3 -m cpt_bench.cli "${common[@]}" "$@" hydra.run.dir=/tmp/gpu-$name \
        > "$RES/$name.log" 2>&1
    local rc=$?
    echo "$name exit $rc" | tee -a "$RES/summary.txt"
    [ $rc = 0 ] || tail -n 15 "$RES/$name.log"
    cp /tmp/gpu-$name/run.json "$RES/$name-run.json" 2>/dev/null
    cp /tmp/gpu-$name/stages/01-add/stage.json "$RES/$name-stage.json" 2>/dev/null
    cp /tmp/gpu-$name/stages/01-add/train.log "$RES/$name-train.log" 2>/dev/null
    cp /tmp/gpu-$name/stages/01-add/train_log.jsonl "$RES/$name-train_log.jsonl" 2>/dev/null
    pack
}
run sft paradigm=sft paradigm.per_device_batch_size=8 paradigm.epochs=1 paradigm.max_length=128
run rft paradigm=rft paradigm.per_device_batch_size=64 paradigm.max_steps=8 paradigm.max_completion_length=32
for check in kl:100 eval:220 grpo:120; do  # name:seconds
    want "${check%%:*}" "${check#*:}" || continue
    timeout "${check#*:}" python3 benchmarks/gpu_risks.py "${check%%:*}" "$RES/risk-${check%%:*}.json" \
        > "$RES/risk-${check%%:*}.log" 2>&1
    rc=$?
    echo "risk ${check%%:*} exit $rc" | tee -a "$RES/summary.txt"
    [ $rc = 0 ] || tail -n 15 "$RES/risk-${check%%:*}.log"
    pack
done
python3 benchmarks/gpu_summary.py "$RES" | tee -a "$RES/summary.txt"
cp "$RES/gpu_check.json" "$OUT/"
pack
