"""`cpt-bench ... preflight.enabled=true`: what a run will need of the node it gets, before it
gets it. The config is composed and planned as a run would (node checks left out: it plans
for the node described, `preflight.gpus` x `preflight.gpu_memory_gb`), the model's shape is
built on the meta device, and per GPU the training step's memory (memory.py), the evaluation
step's, the disk for the checkpoints and the packages it imports are given a verdict each, with
the settings that would make a step fit. Printed and written to preflight.json; no weights are
built, no run.json or stages/ written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from cpt_bench.choices import LauncherName, Schedule
from cpt_bench.outputs.rundir import write_json
from cpt_bench.preflight.memory import FITS, GIB, NO_FIT, RUNTIME_GIB, Estimate, Fix, Item, estimate, verdict
from cpt_bench.preflight.node import (
    PROMPT_TEXT_TOKENS,
    Disk,
    Node,
    Ready,
    check_disk,
    describe_node,
    readiness,
    step_of,
)
from cpt_bench.preflight.shapes import ModelShape, model_shape

PREFLIGHT_JSON = "preflight.json"


@dataclass
class Preflight:
    model: ModelShape
    node: Node
    ranks: str  # the verdict on launcher.nproc_per_node against the node's GPUs
    training: Estimate | None  # None: schedule=evaluate trains nothing
    evaluation: Estimate
    disk: Disk
    installs: list[Ready] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        steps = [e for e in (self.training, self.evaluation) if e is not None]
        return self.ranks == FITS and self.disk.verdict != NO_FIT and all(e.verdict != NO_FIT for e in steps)


def evaluation_estimate(config, shape: ModelShape, node: Node, dtype: int) -> Estimate:
    """An evaluation step: each rank a whole replica and the KV cache of one generation batch;
    where it does not fit, the largest `eval.batch_size` that does (and a smaller image, for a
    vision model whose prompts are mostly image tokens)."""
    prompt = (config.model.max_pixels // shape.pixels_per_token if shape.vision and config.model.max_pixels else 0)
    per_sequence = prompt + PROMPT_TEXT_TOKENS + config.eval.max_new_tokens
    kv_per_token = shape.text.layers * 2 * shape.text.kv_dim * dtype
    fixed = [Item("weights (a whole replica)", dtype * shape.total_params / GIB),
             Item("runtime allowance", RUNTIME_GIB)]

    def at(batch: int) -> Estimate:
        kv = Item("KV cache", batch * per_sequence * kv_per_token / GIB,
                  f"eval.batch_size {batch} x {per_sequence} tokens")
        items = [fixed[0], kv, fixed[1]]
        total = sum(i.gib for i in items)
        return Estimate(items, total, node.gpu_gib, verdict(total, node.gpu_gib))

    out = at(config.eval.batch_size)
    if out.verdict != FITS:
        room = 0.9 * node.gpu_gib - sum(i.gib for i in fixed)  # what "fits" leaves for the KV cache
        largest = int(room * GIB // (per_sequence * kv_per_token)) if room > 0 else 0
        if 0 < largest < config.eval.batch_size:
            got = at(largest)
            out.fixes = [Fix(f"eval.batch_size={largest}", got.total_gib, got.verdict)]
    return out


def run_preflight(cfg, run_dir: Path) -> Preflight:
    """The preflight of a composed config (DictConfig or Config) for the node it describes."""
    from cpt_bench.run.plan import plan

    planned = plan(cfg, here=False)
    config = planned.config
    config.preflight.validate()
    node = describe_node(config)
    shape = model_shape(config.model)
    ranks_per_node = config.launcher.nproc_per_node if config.launcher.name == LauncherName.torchrun else 1
    ranks = FITS if ranks_per_node <= node.gpus else NO_FIT
    step = step_of(config, shape, node)
    training = estimate(shape, step) if config.schedule != Schedule.evaluate else None
    stages = 1 if config.schedule == Schedule.joint else len(planned.order)
    return Preflight(shape, node, ranks, training, evaluation_estimate(config, shape, node, step.dtype_bytes),
                     check_disk(config, shape, run_dir, stages), readiness(config))


def render_estimate(title: str, e: Estimate) -> list[str]:
    lines = [f"{title}: {e.total_gib:.1f} of {e.gpu_gib:.1f} GiB per GPU -> {e.verdict}"]
    lines += [f"  {i.name:<32} {i.gib:7.1f} GiB  {i.note}" for i in e.items]
    if e.cpu_gib:
        lines.append(f"  (CPU memory per node for the model states: {e.cpu_gib:.1f} GiB, DeepSpeed's estimate)")
    if e.vllm_verdict:
        lines.append(f"  vLLM KV cache: {e.vllm_kv_tokens} tokens -> {e.vllm_verdict}")
    if e.fixes:
        lines.append("  what would change it (one setting each):")
    lines += [f"    {f.setting}: {f.total_gib:.1f} GiB -> {f.verdict}" for f in e.fixes[:4]]
    return lines


def render(p: Preflight) -> str:
    m, n, d = p.model, p.node, p.disk
    lines = [f"preflight: {m.name}, {m.total_params / 1e9:.2f} B parameters (largest layer "
             f"{m.largest_layer_params / 1e6:.0f} M; {m.source})",
             f"node: {n.gpus} GPU(s) of {n.gpu_gib:.1f} GiB ({n.source}); ranks per node -> {p.ranks}"]
    if p.training is not None:
        lines += render_estimate("training step", p.training)
    lines += render_estimate("evaluation step", p.evaluation)
    lines.append(f"disk: {d.stages} checkpoint(s) of {d.checkpoint_gib:.1f} GiB with checkpoint.keep={d.keep} need "
                 f"{d.need_gib:.1f} GiB, {d.free_gib:.1f} GiB free in {d.where} -> {d.verdict}")
    lines += [f"install: {r.name:<12} {'ready' if r.ready else 'missing'}  {r.note}" for r in p.installs]
    lines.append(verdict_line(p))
    return "\n".join(lines)


def verdict_line(p: Preflight) -> str:
    """The verdict, naming each part that does not fit, by how much, and the first fix listed."""
    if p.fits:
        return "verdict: the run fits this node"
    causes = []
    if p.ranks != FITS:
        causes.append(f"launcher.nproc_per_node is more than the node's {p.node.gpus} GPU(s)")
    for name, e in (("training step", p.training), ("evaluation step", p.evaluation)):
        if e is not None and e.verdict == NO_FIT:
            fix = f"; {e.fixes[0].setting} -> {e.fixes[0].verdict}" if e.fixes else ""
            causes.append(f"the {name} needs {e.total_gib:.1f} of {e.gpu_gib:.1f} GiB per GPU "
                          f"({e.total_gib - e.gpu_gib:.1f} over{fix})")
    d = p.disk
    if d.verdict == NO_FIT:
        keep = "; checkpoint.keep=last holds two" if d.keep == "all" and d.stages > 2 else ""
        causes.append(f"the checkpoints need {d.need_gib:.1f} GiB of disk, {d.free_gib:.1f} free in {d.where}{keep}")
    return "verdict: the run does not fit this node: " + "; ".join(causes)


def preflight_main(cfg, run_dir: Path) -> Preflight:
    """Print the preflight and write preflight.json into `run_dir` (nothing else)."""
    result = run_preflight(cfg, run_dir)
    print(render(result), flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / PREFLIGHT_JSON, {**asdict(result), "fits": result.fits})
    return result
