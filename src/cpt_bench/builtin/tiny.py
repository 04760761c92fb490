"""The embedded base model (`model=tiny`): a small Llama-architecture LM built here.

A tokenizer trained here and next-token pre-training here on a mixture of the toy tasks, so
no download is ever needed. The build is deterministic on one CPU but not across CPU models
(float kernels differ), so the build made for the README ships inside the package
(`tiny_base/`, 2.6 MB) and is what every machine loads while the recipe matches it; another
recipe (or `model.shipped=false`) builds into a cache folder keyed by recipe and corpus.

    python -m cpt_bench.builtin.tiny          # rebuild the shipped base on this machine (make tiny-base)
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from cpt_bench.builtin.cache import cache_root, publish_build
from cpt_bench.config import TinyRecipe
from cpt_bench.errors import ModelLoadError
from cpt_bench.outputs.provenance import cpu_fingerprint, package_versions

log = logging.getLogger(__name__)

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def _pretraining_corpus(recipe: TinyRecipe) -> list[str]:
    from cpt_bench.model.prompts import PromptStyle
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


SHIPPED = Path(__file__).parent / "tiny_base"
WEIGHTS = "model.safetensors"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shipped_build() -> dict:
    """The shipped base's build record: recipe key, weights checksum, CPU, base accuracies."""
    return json.loads((SHIPPED / "build.json").read_text())


def _verified_shipped() -> Path:
    if sha256(SHIPPED / WEIGHTS) != shipped_build()["sha256"]:
        raise ModelLoadError(f"the shipped base model in {SHIPPED} does not match its checksum "
                             "(a damaged install): reinstall cpt-bench, or rebuild it with `make tiny-base`")
    return SHIPPED


RECIPE_VERSION = 2  # bump when the recipe changes in a way the cache key cannot see


def recipe_key(recipe: TinyRecipe, corpus: list[str]) -> str:
    """The cache key of a build: a hash of the recipe and of the corpus itself, so edited task
    code rebuilds."""
    h = hashlib.sha256(json.dumps({**asdict(recipe), "v": RECIPE_VERSION}, sort_keys=True).encode())
    for text in corpus:
        h.update(text.encode() + b"\n")
    return h.hexdigest()[:12]


def build_tiny_base(recipe: TinyRecipe, cache_dir: str | Path | None = None, shipped: bool = True) -> Path:
    """Return the folder of the embedded base model: the shipped one when the recipe (and the
    toy tasks' corpus) match it, else a build from the recipe, made on first use.

    A build's folder name is the recipe's hash, so a changed recipe never reuses a stale model;
    a build writes to a temporary folder and renames it, so an interrupted build is redone.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    texts = _pretraining_corpus(recipe)
    key = recipe_key(recipe, texts)
    if shipped and shipped_build()["key"] == key:
        return _verified_shipped()
    target = cache_root(cache_dir) / f"tiny-{key}"
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
    publish_build(target, model, tokenizer, {
        "recipe": asdict(recipe),
        "key": key,
        "parameters": sum(p.numel() for p in model.parameters()),
        "pretraining_items": len(texts),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "build_seconds": round(time.time() - start, 1),
    })
    log.info("built the embedded base model in %.0f s", time.time() - start)
    return target


def base_accuracies(path: str | Path) -> dict[str, float]:
    """Direct-prompt accuracy (%) of a base model on the toy benchmark's default test sets:
    the base row of every default run (the README's table of base accuracies)."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    from cpt_bench.model.evaluation import accuracy, evaluate_tasks
    from cpt_bench.model.loading import load_checkpoint
    from cpt_bench.model.prompts import PromptStyle
    from cpt_bench.tasks import build_benchmark

    cfg = OmegaConf.load(files("cpt_bench.conf") / "benchmark" / "toy.yaml")
    benchmark = build_benchmark(cfg)
    model, tok = load_checkpoint(path)
    records = evaluate_tasks(model, tok, benchmark.tasks, benchmark.test_sets(benchmark.order, benchmark.general),
                             PromptStyle.for_benchmark(benchmark, cot=False))
    return {task: round(100 * accuracy(recs), 1) for task, recs in records.items()}


def ship(recipe: TinyRecipe, target: Path = SHIPPED) -> dict:
    """Build the base from `recipe` on this machine (no cache) and write it to `target` with
    its build record: the weights' checksum, this CPU and the base accuracies."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        built = build_tiny_base(recipe, tmp, shipped=False)
        build = json.loads((built / "build.json").read_text())
        build.update(sha256=sha256(built / WEIGHTS), cpu=cpu_fingerprint(),
                     versions={k: package_versions()[k] for k in ("torch", "transformers", "tokenizers")},
                     base_accuracy=base_accuracies(built))
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(built, target)
    (target / "build.json").write_text(json.dumps(build, indent=2) + "\n")
    return build


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(ship(TinyRecipe()), indent=2))
