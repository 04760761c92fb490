"""How far a stage has moved the model from the base: in its weights (parameter drift) and in
what it says (output drift, the KL divergence between it and the base on given prompts), in
both directions.

Output drift is measured on the same prompts in two directions, each a sequence-level KL
averaged over prompts x (`samples` of them, drawn with a fixed seed), with its standard error
(sample standard deviation / sqrt(samples)) and per token (the same sum divided by the tokens):

* **reverse** KL(pi_t || pi_0) (`output_kl`, the record's `kl_to_base_*`): one response y per
  prompt sampled from the stage's model pi_t, scored log pi_t(y|x) - log pi_0(y|x).
* **forward** KL(pi_0 || pi_t) (`forward_kl`, the record's `forward_kl_*`): one response y per
  prompt sampled from the base pi_0, scored log pi_0(y|x) - log pi_t(y|x). This is RL's Razor's
  predictor of forgetting (Shenfeld et al. 2025, arXiv 2509.04259: E_{x~tau}[KL(pi_0 || pi)],
  x from the new task tau, responses from the base). The base's responses and its own
  log-probabilities of them depend only on the base, the prompts and the settings, so they are
  drawn once per set of prompts (`sample_base`) and each stage's model only scores them
  (`score_responses`); with a cache folder (`base_draw`) they are kept there, one file per draw
  named by a hash of what it depends on. They come from a random stream of their own
  (`FORWARD_STREAM`), so the two directions' estimates have independent errors.

Each sum over y's tokens is an unbiased Monte Carlo estimate of the sequence-level KL in its
direction. Sampling rules, the same in both: temperature 1, no top-k/top-p and none of the
checkpoint's generation-config processors, never a placeholder token, at most
`max_new_tokens` tokens, through the first end-of-sequence token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from dataclasses import asdict, dataclass
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


def _chosen(count: int, samples: int, seed: int) -> list[int]:
    """The indices of the `samples` prompts (of `count`) the estimate uses, drawn with `seed`."""
    return random.Random(seed).sample(range(count), min(samples, count))


def _encode(processing_class, prompts: list[str], images: list[list] | None, idx: list[int], device):
    from cpt_bench.model.prompts import encode_prompts

    batch_images = [images[i] for i in idx] if images is not None and any(images[i] for i in idx) else None
    return encode_prompts(processing_class, [prompts[i] for i in idx], batch_images, device)


def _through_eos(responses, eos_token_id: int):
    """True on each response token up to and including the row's first end-of-sequence token."""
    is_eos = (responses == eos_token_id).long()
    return (is_eos.cumsum(-1) - is_eos) == 0


def _token_logprobs(model, enc: dict, responses, mask, text_only: bool):
    """log model(token) of each `mask`ed response token (0 elsewhere), the responses following
    the encoded prompts `enc` (left-padded) in one batch."""
    prompt_len = enc["input_ids"].shape[1]
    ids = torch.cat([enc["input_ids"], responses], -1)
    attention = torch.cat([enc["attention_mask"], mask.long()], -1)
    extras = {k: _extend(v, enc["input_ids"].shape, responses.shape[1])
              for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
    return response_logprobs(model, ids, attention, extras, prompt_len, text_only) * mask


def _estimate(per_seq: list[float], tokens: int) -> OutputDrift:
    """Mean, standard error and per-token value of per-prompt sequence-level estimates."""
    n = len(per_seq)
    mean = sum(per_seq) / n if n else float("nan")
    var = sum((x - mean) ** 2 for x in per_seq) / (n - 1) if n > 1 else float("nan")
    return OutputDrift(kl=mean, kl_se=math.sqrt(var / n) if n > 1 else float("nan"),
                       kl_per_token=sum(per_seq) / tokens if tokens else float("nan"), samples=n)


def _rng_devices() -> list[int]:
    return [torch.cuda.current_device()] if torch.cuda.is_available() else []


@torch.inference_mode()
def output_kl(model, base, processing_class, prompts: list[str], images: list[list] | None = None, *,
              samples: int, max_new_tokens: int, seed: int, batch_size: int = 32) -> OutputDrift:
    """The reverse KL(model || base) on `prompts` (formatted, as evaluation renders them):
    responses sampled from `model` (see the module doc)."""
    from cpt_bench.model.loading import is_vision_language
    from cpt_bench.model.processing import text_tokenizer

    tok = text_tokenizer(processing_class)
    chosen = _chosen(len(prompts), samples, seed)
    text_only = not is_vision_language(model.config)
    per_seq: list[float] = []
    tokens = 0
    with torch.random.fork_rng(devices=_rng_devices()):  # the run's own random state is left as it was
        torch.manual_seed(seed)
        for start in range(0, len(chosen), batch_size):
            enc = _encode(processing_class, prompts, images, chosen[start : start + batch_size], model.device)
            responses = sample_responses(model, enc, tok, max_new_tokens=max_new_tokens)[:, enc["input_ids"].shape[1]:]
            mask = _through_eos(responses, tok.eos_token_id)
            ratio = (_token_logprobs(model, enc, responses, mask, text_only)
                     - _token_logprobs(base, enc, responses, mask, text_only))
            per_seq += ratio.sum(-1).tolist()
            tokens += int(mask.sum())
    return _estimate(per_seq, tokens)


# --- the forward direction: a draw from the base, scored by each stage's model ----------------

FORWARD_ESTIMATOR = 1  # part of a draw's key: a change to how draws are made makes old ones stale
# The base's responses come from their own random stream (the seed plus this), not the reverse
# estimator's: with the same stream, a stage's model close to the base would sample the very same
# responses, and each forward term would be minus a reverse one (the two estimates' errors coupled).
FORWARD_STREAM = 1_000_003


@dataclass
class BaseSamples:
    """The forward KL's draw from the base: for each chosen prompt (its index into the prompts),
    one response sampled from the base (token ids through the first end-of-sequence token) and
    the base's log-probability of it, log pi_0(y|x) summed over its tokens."""

    key: str  # a hash of everything the draw depends on (`draw_key`); its cache file's name
    chosen: list[int]
    responses: list[list[int]]
    base_logprobs: list[float]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BaseSamples:
        return cls(data["key"], data["chosen"], data["responses"], data["base_logprobs"])


def draw_key(base, prompts: list[str], images: list[list] | None, *, samples: int, max_new_tokens: int, seed: int,
             batch_size: int) -> str:
    """What a draw from the base depends on, hashed: the base (its path and dtype), the prompts
    (and their images' pixels), the settings, and the batch size (it orders the random draws)."""
    digest = hashlib.sha256(json.dumps({
        "estimator": FORWARD_ESTIMATOR, "base": str(getattr(base, "name_or_path", "")),
        "dtype": str(next(base.parameters()).dtype), "prompts": prompts, "samples": samples,
        "max_new_tokens": max_new_tokens, "seed": seed, "batch_size": batch_size}).encode())
    for row in images or []:
        for image in row or []:
            digest.update(f"{image.mode}{image.size}".encode())
            digest.update(image.tobytes())
    return digest.hexdigest()[:24]


def score_responses(model, processing_class, prompts: list[str], images: list[list] | None, drawn: BaseSamples, *,
                    batch_size: int = 32) -> list[float]:
    """log model(y|x) summed over each drawn response's tokens, in the draw's order. The base's
    own scores (`sample_base`) come from this function too, so a model scores a draw exactly as
    the base did when it is the base."""
    from cpt_bench.model.loading import is_vision_language
    from cpt_bench.model.processing import text_tokenizer

    tok = text_tokenizer(processing_class)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    text_only = not is_vision_language(model.config)
    sums: list[float] = []
    for start in range(0, len(drawn.chosen), batch_size):
        rows = drawn.responses[start : start + batch_size]
        enc = _encode(processing_class, prompts, images, drawn.chosen[start : start + batch_size], model.device)
        width = max(1, *map(len, rows))
        responses = torch.full((len(rows), width), pad, dtype=enc["input_ids"].dtype, device=model.device)
        mask = torch.zeros((len(rows), width), dtype=torch.bool, device=model.device)
        for i, row in enumerate(rows):
            responses[i, : len(row)] = torch.tensor(row, dtype=responses.dtype)
            mask[i, : len(row)] = True
        sums += _token_logprobs(model, enc, responses, mask, text_only).sum(-1).tolist()
    return sums


@torch.inference_mode()
def sample_base(base, processing_class, prompts: list[str], images: list[list] | None = None, *, samples: int,
                max_new_tokens: int, seed: int, batch_size: int = 32) -> BaseSamples:
    """One response from `base` for each of `samples` prompts drawn with `seed` (the reverse
    estimator's prompts and sampling rules; responses from their own stream, `FORWARD_STREAM`),
    scored by the base."""
    from cpt_bench.model.processing import text_tokenizer

    tok = text_tokenizer(processing_class)
    chosen = _chosen(len(prompts), samples, seed)
    responses: list[list[int]] = []
    with torch.random.fork_rng(devices=_rng_devices()):  # the run's own random state is left as it was
        torch.manual_seed(seed + FORWARD_STREAM)
        for start in range(0, len(chosen), batch_size):
            enc = _encode(processing_class, prompts, images, chosen[start : start + batch_size], base.device)
            out = sample_responses(base, enc, tok, max_new_tokens=max_new_tokens)[:, enc["input_ids"].shape[1]:]
            lengths = _through_eos(out, tok.eos_token_id).sum(-1).tolist()
            responses += [row[:n] for row, n in zip(out.tolist(), lengths)]
    key = draw_key(base, prompts, images, samples=samples, max_new_tokens=max_new_tokens, seed=seed,
                   batch_size=batch_size)
    drawn = BaseSamples(key, chosen, responses, [])
    drawn.base_logprobs = score_responses(base, processing_class, prompts, images, drawn, batch_size=batch_size)
    return drawn


def base_draw(base, processing_class, prompts: list[str], images: list[list] | None = None, *, samples: int,
              max_new_tokens: int, seed: int, batch_size: int = 32, cache: Path | None = None) -> BaseSamples:
    """The base's draw on `prompts`: read from the folder `cache` when a draw with the same key
    is there (`<cache>/<key>.json`), else sampled (`sample_base`) and, with a cache, written
    there atomically (a temporary file, then a rename)."""
    from cpt_bench.outputs.rundir import read_json, write_json

    settings = dict(samples=samples, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size)
    path = Path(cache) / f"{draw_key(base, prompts, images, **settings)}.json" if cache is not None else None
    if path is not None and path.exists():
        drawn = BaseSamples.from_json(read_json(path))
        if drawn.key == path.stem and len(drawn.responses) == len(drawn.chosen) == len(drawn.base_logprobs):
            return drawn
        log.warning("forward KL: %s does not hold a complete draw; drawing again", path)
    drawn = sample_base(base, processing_class, prompts, images, **settings)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, drawn.to_json())
    return drawn


@torch.inference_mode()
def forward_kl(model, base, processing_class, prompts: list[str], images: list[list] | None = None, *,
               samples: int, max_new_tokens: int, seed: int, batch_size: int = 32,
               cache: Path | None = None) -> OutputDrift:
    """The forward KL(base || model) on `prompts`, RL's Razor's direction: responses sampled
    from `base` (once; `base_draw`, cached in the folder `cache`), scored by both."""
    drawn = base_draw(base, processing_class, prompts, images, samples=samples, max_new_tokens=max_new_tokens,
                      seed=seed, batch_size=batch_size, cache=cache)
    scored = score_responses(model, processing_class, prompts, images, drawn, batch_size=batch_size)
    return _estimate([b - m for b, m in zip(drawn.base_logprobs, scored)], sum(map(len, drawn.responses)))
