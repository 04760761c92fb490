"""Loading models and tokenizers, and building the embedded base model.

`load_model_and_tokenizer` is the one place a model enters cpt-bench: a local folder or a
hub id, loaded through the Auto classes. `build_tiny_base` makes the embedded default:
a small Llama-architecture LM with a tokenizer trained here and pre-trained here on a
mixture of the toy tasks, so no download is ever needed. It is built once into a cache
folder keyed by its recipe and reused afterwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
RECIPE_VERSION = 2  # bump when the recipe below changes in a way the cache key cannot see


@dataclass
class TinyRecipe:
    """Everything that determines the embedded base model (and so its cache key)."""

    seed: int = 0
    vocab_size: int = 160
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 64
    items_per_task: int = 3000
    cot_share: float = 0.5  # share of items in CoT format (<think> ... </think> \boxed{})
    easy_share_cpt: float = 1.0  # share of easy items in the CPT tasks' pre-training mixture
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3

    def key(self, corpus: list[str]) -> str:
        """Hash of the recipe and of the corpus itself, so edited task code rebuilds."""
        h = hashlib.sha256(json.dumps({**asdict(self), "v": RECIPE_VERSION}, sort_keys=True).encode())
        for text in corpus:
            h.update(text.encode() + b"\n")
        return h.hexdigest()[:12]


def default_cache_dir() -> Path:
    return Path(os.environ.get("CPT_BENCH_CACHE", Path.home() / ".cache" / "cpt-bench"))


def format_prompt(tokenizer, text: str) -> str:
    """The exact string a model is conditioned on, shared by every paradigm and evaluation.

    Models with a chat template get the user turn plus the generation prompt; the built-in
    model has none and sees the raw task prompt.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text


def completion_text(tokenizer, answer: str) -> str:
    """The target continuation for SFT: the answer, ended by the EOS token."""
    if getattr(tokenizer, "chat_template", None):
        return answer + tokenizer.eos_token
    return " " + answer + tokenizer.eos_token


def load_model_and_tokenizer(path: str | Path, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.padding_side = "left"  # batched generation must pad on the left
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model, tokenizer


# --- the embedded base model -------------------------------------------------------------


def _pretraining_corpus(recipe: TinyRecipe) -> list[str]:
    from cpt_bench.prompts import PromptStyle
    from cpt_bench.tasks.toy import COT_INSTRUCTION, DIRECT_INSTRUCTION, GENERAL_SUITE, toy_tasks

    # both answer formats, so that the chain-of-thought ablation compares two known formats
    styles = [PromptStyle(cot, COT_INSTRUCTION, DIRECT_INSTRUCTION) for cot in (False, True)]
    rng = random.Random(recipe.seed)
    texts = []
    for name, task in toy_tasks(seed=recipe.seed).items():
        hard_share = 0.5 if name in GENERAL_SUITE else 1.0 - recipe.easy_share_cpt
        for ex in task.pretrain(recipe.items_per_task, hard_fraction=hard_share):
            style = styles[rng.random() < recipe.cot_share]
            texts.append(f"{style.user_text(ex)} {style.target(ex)}")
    rng.shuffle(texts)
    return texts


def train_tokenizer(texts: list[str], vocab_size: int):
    """A BPE tokenizer trained on the corpus: whole words for verbs, single digits and letters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK])
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, padding_side="left"
    )


def _pretrain(model, tokenizer, texts: list[str], recipe: TinyRecipe) -> list[float]:
    """Plain next-token pre-training on the mixture (one process, fixed seed)."""
    ids = tokenizer([t + EOS for t in texts], add_special_tokens=False)["input_ids"]
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.lr, total_steps=recipe.steps, pct_start=0.05
    )
    gen = torch.Generator().manual_seed(recipe.seed)
    pad = tokenizer.pad_token_id
    losses = []
    model.train()
    for step in range(recipe.steps):
        batch = [ids[i] for i in torch.randint(len(ids), (recipe.batch_size,), generator=gen)]
        width = max(map(len, batch))
        x = torch.full((len(batch), width), pad)
        for row, seq in enumerate(batch):
            x[row, : len(seq)] = torch.tensor(seq)
        labels = x.masked_fill(x == pad, -100)
        loss = model(input_ids=x, attention_mask=(x != pad).long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 250 == 0 or step == recipe.steps - 1:
            log.info("pre-training the tiny base model: step %d/%d loss %.3f", step + 1, recipe.steps, loss.item())
    model.eval()
    return losses


def build_tiny_base(recipe: TinyRecipe, cache_dir: str | Path | None = None) -> Path:
    """Return the folder of the embedded base model, building it on first use.

    The folder name is the recipe's hash, so a changed recipe never reuses a stale model;
    a build writes to a temporary folder and renames it, so an interrupted build is redone.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    root = Path(cache_dir) if cache_dir else default_cache_dir()
    texts = _pretraining_corpus(recipe)
    key = recipe.key(texts)
    target = root / f"tiny-{key}"
    if (target / "build.json").exists():
        return target
    log.info("building the embedded base model into %s (once)", target)
    start = time.time()
    torch.manual_seed(recipe.seed)
    tokenizer = train_tokenizer(texts, recipe.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=recipe.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    with torch.random.fork_rng():
        losses = _pretrain(model, tokenizer, texts, recipe)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    tmp = root / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "build.json").write_text(
        json.dumps(
            {
                "recipe": asdict(recipe),
                "parameters": sum(p.numel() for p in model.parameters()),
                "pretraining_items": len(texts),
                "final_loss": sum(losses[-50:]) / len(losses[-50:]),
                "build_seconds": round(time.time() - start, 1),
            },
            indent=2,
        )
    )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log.info("built the embedded base model in %.0f s", time.time() - start)
    return target


@torch.no_grad()
def param_drift(model, base_path: str | Path) -> float:
    """||theta - theta_0||_2 over every parameter saved in the base checkpoint.

    Reads the base weights tensor by tensor from its safetensors files, so it never holds a
    second copy of the model in memory.
    """
    from safetensors import safe_open

    files = sorted(Path(base_path).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {base_path}")
    current = dict(model.named_parameters())
    total = 0.0
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                if name in current:
                    diff = current[name].detach().float().cpu() - f.get_tensor(name).float()
                    total += float(diff.pow(2).sum())
    return total ** 0.5
