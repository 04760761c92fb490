"""How far a stage has moved the model from the base: in its weights (parameter drift) and in
what it says (output drift, the KL divergence to the base on given prompts).

Output drift here is the *reverse* KL, KL(pi_t || pi_0), with responses from the stage's model.
It is not RL's Razor's predictor (Shenfeld et al. 2025, arXiv 2509.04259), which is the forward
KL(pi_0 || pi_t) on the new task's inputs, with responses sampled from the base; that direction
is not measured yet (issue 25). Estimator, per prompt x: one response y sampled from
the stage's model pi_t (temperature 1, no top-k/top-p and none of the checkpoint's generation-config
processors, never a placeholder token, at most `max_new_tokens`, through the first
end-of-sequence token), and log pi_t(y|x) - log pi_0(y|x) summed over y's tokens, an
unbiased Monte Carlo estimate of the sequence-level KL(pi_t(.|x) || pi_0(.|x)). The reported
value is the mean over `samples` prompts drawn with a fixed seed, with its standard error
(sample standard deviation / sqrt(samples)), and the same sum divided by the tokens (per token).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@torch.no_grad()
def param_drift(model, base_path: str | Path) -> float:
    """||theta - theta_0||_2 over every parameter saved in the base checkpoint.

    Reads the base weights tensor by tensor from its safetensors files, so it never holds a
    second copy of the model in memory. A hub id is read from the local hub cache (where
    loading the model put it). Parameter names are matched both as the model names them and
    in the checkpoint's own layout (transformers renames e.g. Qwen2.5-VL's weights on load and
    back on save).
    """
    from safetensors import safe_open

    folder = Path(base_path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(base_path), allow_patterns=["*.safetensors"]))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {base_path}")
    current = dict(model.named_parameters())
    by_saved_name = {**_saved_names(model, current), **current}
    total, matched = 0.0, 0
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - a safetensors file, not a dict
                if name in by_saved_name:
                    p = by_saved_name[name].detach()
                    diff = p.float() - f.get_tensor(name).to(p.device).float()
                    total += float(diff.pow(2).sum())
                    matched += 1
    if not matched:
        log.warning("param_drift: no parameter of %s matched a tensor in %s", type(model).__name__, base_path)
        return float("nan")
    return total ** 0.5


def _saved_names(model, params: dict) -> dict:
    """The model's parameters under the names save_pretrained would write them with."""
    try:
        from transformers.core_model_loading import revert_weight_conversion

        saved = revert_weight_conversion(model, {name: p.detach() for name, p in params.items()})
    except Exception:  # noqa: BLE001 - a private transformers API: fall back to the plain names
        return {}
    return {name: t for name, t in dict(saved).items() if isinstance(t, torch.Tensor)}


@dataclass
class OutputDrift:
    kl: float  # mean over prompts of the sequence-level estimate (nats)
    kl_se: float  # its standard error
    kl_per_token: float  # the summed estimate over all sampled tokens
    samples: int


def _extend(value, prompt_shape, new_tokens: int):
    """A per-token input of the prompt (e.g. a VLM's multimodal token types) extended over the
    response's tokens as text (0); pixel inputs and the like pass through unchanged."""
    if torch.is_tensor(value) and value.dim() >= 2 and tuple(value.shape[:2]) == tuple(prompt_shape):
        return torch.cat([value, value.new_zeros((value.shape[0], new_tokens, *value.shape[2:]))], 1)
    return value


LOGIT_CHUNK = 2**26  # logits (rows x positions x vocabulary) scored at once: 256 MiB in float32


def response_logprobs(model, ids, attention, extras: dict, prompt_len: int, text_only: bool):
    """log p(token) of every response token (positions prompt_len..) under `model`.

    Only the response's positions reach the output head, a slice of positions at a time
    (`LOGIT_CHUNK`), so memory holds one hidden state per token and one slice of logits rather
    than full-vocabulary float logits for every position (about 20 GB per copy for a 7B model
    with a 152k vocabulary at batch 32 x 2k tokens). Models whose head is not a plain linear
    layer on the decoder's output (logit soft-capping or scaling) are scored through their own
    forward, on the response positions only."""
    kwargs = dict(extras)
    if text_only:  # left padding: positions count from each row's first real token, as generate did
        kwargs["position_ids"] = (attention.cumsum(-1) - 1).clamp(min=0)
    targets = ids[:, prompt_len:]
    head, decoder = model.get_output_embeddings(), getattr(model, "model", None)
    plain_head = not any(getattr(model.config, k, None) for k in ("final_logit_softcapping", "logit_scale"))
    if decoder is None or head is None or not plain_head:
        logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=targets.shape[1] + 1,
                       **kwargs).logits[:, :-1].float()
        return torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    hidden = decoder(input_ids=ids, attention_mask=attention, **kwargs).last_hidden_state[:, prompt_len - 1 : -1]
    step = max(1, LOGIT_CHUNK // (ids.shape[0] * head.weight.shape[0]))
    parts = []
    for start in range(0, hidden.shape[1], step):
        logits = head(hidden[:, start : start + step]).float()
        parts.append(torch.log_softmax(logits, -1).gather(-1, targets[:, start : start + step, None]).squeeze(-1))
    return torch.cat(parts, 1)


def placeholder_tokens(config) -> list[int]:
    """A vision-language model's image/video placeholder ids: a response must never contain
    them (scoring it would ask the model for pixels that do not exist)."""
    keys = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return sorted({v for k in keys if isinstance(v := getattr(config, k, None), int)})


def sample_responses(model, enc: dict, tok, *, max_new_tokens: int, temperature: float = 1.0):
    """Responses sampled from the model's own distribution at `temperature` (no top-k or top-p),
    with none of the checkpoint's generation-config processors (repetition penalty, n-gram
    bans, ...), which would make the samples come from another distribution than the one the
    estimator scores; placeholder tokens are never sampled."""
    from transformers import GenerationConfig

    own = model.generation_config
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               bos_token_id=own.bos_token_id)
    try:
        return model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                              max_new_tokens=max_new_tokens, suppress_tokens=placeholder_tokens(model.config) or None)
    finally:
        model.generation_config = own


@torch.inference_mode()
def output_kl(model, base, processing_class, prompts: list[str], images: list[list] | None = None, *,
              samples: int, max_new_tokens: int, seed: int, batch_size: int = 32) -> OutputDrift:
    """KL(model || base) on `prompts` (formatted, as evaluation renders them): see the module doc."""
    from cpt_bench.model.loading import is_vision_language
    from cpt_bench.model.processing import text_tokenizer
    from cpt_bench.model.prompts import encode_prompts

    tok = text_tokenizer(processing_class)
    chosen = random.Random(seed).sample(range(len(prompts)), min(samples, len(prompts)))
    text_only = not is_vision_language(model.config)
    per_seq: list[float] = []
    tokens = 0
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):  # the run's own random state is left as it was
        torch.manual_seed(seed)
        for start in range(0, len(chosen), batch_size):
            idx = chosen[start : start + batch_size]
            batch_images = [images[i] for i in idx] if images is not None and any(images[i] for i in idx) else None
            enc = encode_prompts(processing_class, [prompts[i] for i in idx], batch_images, model.device)
            out = sample_responses(model, enc, tok, max_new_tokens=max_new_tokens)
            prompt_len = enc["input_ids"].shape[1]
            is_eos = out[:, prompt_len:] == tok.eos_token_id
            mask = (is_eos.long().cumsum(-1) - is_eos.long()) == 0  # up to and including the first EOS
            attention = torch.cat([enc["attention_mask"], mask.long()], -1)
            extras = {k: _extend(v, enc["input_ids"].shape, out.shape[1] - prompt_len)
                      for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
            ratio = (response_logprobs(model, out, attention, extras, prompt_len, text_only)
                     - response_logprobs(base, out, attention, extras, prompt_len, text_only)) * mask
            per_seq += ratio.sum(-1).tolist()
            tokens += int(mask.sum())
    n = len(per_seq)
    mean = sum(per_seq) / n if n else float("nan")
    var = sum((x - mean) ** 2 for x in per_seq) / (n - 1) if n > 1 else float("nan")
    return OutputDrift(kl=mean, kl_se=math.sqrt(var / n) if n > 1 else float("nan"),
                       kl_per_token=sum(per_seq) / tokens if tokens else float("nan"), samples=n)
