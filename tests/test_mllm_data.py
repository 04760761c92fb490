"""benchmark=mllm_cl7: every task adapter on small local data in its real source schema.

Fixtures are written here: the authors' LLaMA-Factory ShareGPT JSON (prompts as in their files),
EasyR1 parquet, and hub-layout dataset folders read through the same `load_dataset` call as a
hub id. Images are tiny generated PNGs, each of its own colour so a test can tell them apart.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import datasets
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict
from PIL import Image, ImageFile

from cpt_bench.config import validate
from cpt_bench.configstore import register_configs
from cpt_bench.errors import DataError
from cpt_bench.model.prompts import PromptStyle
from cpt_bench.tasks import ConfigError, build_benchmark, resolve_order
from cpt_bench.tasks.grading import choice_letter, grade_choice, grade_short_answer, parse_choices
from cpt_bench.tasks.images import ArrowImage, PathImage, resolve_image
from cpt_bench.tasks.mllm import (
    CLEVR_HINT,
    COT_INSTRUCTION,
    DEFAULT_ORDER,
    GENERAL_SUITE,
    OPTION_LETTER,
    SHORT_ANSWER,
    UNANSWERABLE,
    split_instruction,
    strip_image_tokens,
)

register_configs()
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (9, 9, 9)]


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """`load_dataset` converts data files into its cache: keep that out of the user's home."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def png(path: Path, colour=COLOURS[0]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return str(path)


def png_bytes(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, "PNG")
    return buf.getvalue()


def benchmark(*overrides: str):
    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["benchmark=mllm_cl7", *overrides])
    return build_benchmark(cfg.benchmark)


def colour_of(ref) -> tuple:
    return ref.load().getpixel((0, 0))


# --- the authors' ShareGPT files (data_dir) for the seven CPT tasks ----------------------------
# (file, image folder, user turns as in the authors' files, answers); the stored user turn
# always ends with the direct-answer line, which must come back exactly once without CoT
AUTHORS = {
    "scienceqa": ("ScienceQA", [
        ("<image>\nWhat is the capital of Wyoming?\nA. Phoenix\nB. Baton Rouge\nC. Honolulu\nD. Cheyenne\n"
         + OPTION_LETTER, "D"),
        ("<image>\nWhich material is this path made of?\nA. plastic\nB. brick\n" + OPTION_LETTER, "B"),
    ]),
    "textvqa": ("TextVQA", [
        ("<image>\nwhat is the brand of this camera?\nReference OCR token:DAKOTA,DIGITAL,Single-Use\n"
         + SHORT_ANSWER, "dakota"),
        ("<image>\nwhat brand of watch is that?\nReference OCR token:N,u,g0\n" + SHORT_ANSWER, "unanswerable"),
    ]),
    "vizwiz": ("VizWiz", [
        (f"<image>\nWhat is the title of this book? \n{UNANSWERABLE}\n{SHORT_ANSWER}", "dog years"),
        (f"<image>\nWhat does the arrow say?\n{UNANSWERABLE}\n{SHORT_ANSWER}", "unanswerable"),
    ]),
    "gqa": ("GQA", [
        ("<image>\nIs the sky dark?\n" + SHORT_ANSWER, "yes"),
        ("<image>\nWhat is the man wearing?\n" + SHORT_ANSWER, "shirt"),
    ]),
    "geometry3k": ("geo", [
        ("<image>Find x. Round to the nearest tenth.\n" + SHORT_ANSWER, "52.5"),
        ("<image>Find x.\n" + SHORT_ANSWER, "5 \\sqrt { 3 }"),
    ]),
    "pathvqa": ("path-vqa", [
        ("<image>\nWhat is present?\n" + SHORT_ANSWER, "inflammation"),
        ("<image>\nIs there an abscess?\n" + SHORT_ANSWER, "yes"),
    ]),
    "clevr": ("clevr", [
        (f"<image>\n{CLEVR_HINT}\nQuestion: How many bicycles are there in the image?\n{SHORT_ANSWER}", "2"),
        (f"<image>\n{CLEVR_HINT}\nQuestion: What is the color of the large bicycle?\n{SHORT_ANSWER}", "Cyan"),
    ]),
}
FILES = {"scienceqa": "ScienceQA", "textvqa": "TextVQA", "vizwiz": "VizWiz", "gqa": "GQA",
         "geometry3k": "geo", "pathvqa": "path-vqa", "clevr": "clevr"}


def write_authors_file(data_dir: Path, task: str, split: str = "test", extra: list[dict] = ()) -> list[dict]:
    folder, items = AUTHORS[task]
    records = []
    for k, (user, answer) in enumerate(items):
        rel = f"{folder}/{split}_images/{k}.png"
        png(data_dir / rel, COLOURS[k])
        records.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
                        "images": [rel]})
    records += list(extra)
    (data_dir / f"{FILES[task]}_{split}.json").write_text(json.dumps(records, indent=2))
    return records


@pytest.mark.parametrize("task", DEFAULT_ORDER)
def test_authors_sharegpt_files_round_trip_for_every_cpt_task(tmp_path, task):
    records = write_authors_file(tmp_path, task)
    b = benchmark(f"benchmark.data_dir={tmp_path}")
    items = b.tasks[task].test()
    direct, cot = PromptStyle.for_benchmark(b, False), PromptStyle.for_benchmark(b, True)
    assert len(items) == len(records)
    for ex, rec in zip(items, records, strict=True):
        user, answer = rec["messages"][0]["content"], rec["messages"][1]["content"]
        assert ex.answer == answer and "<image>" not in ex.prompt
        # without CoT the model sees exactly the authors' text (minus the image placeholder)
        assert direct.user_text(ex) == user.removeprefix("<image>").removeprefix("\n")
        # with CoT the paper's think-then-box instruction replaces the direct-answer line
        assert cot.user_text(ex) == f"{ex.prompt}\n{COT_INSTRUCTION}"
        assert SHORT_ANSWER not in cot.user_text(ex) and OPTION_LETTER not in cot.user_text(ex)
        assert isinstance(ex.images[0], PathImage) and len(ex.images) == 1
    assert [colour_of(ex.images[0]) for ex in items] == COLOURS[: len(items)]
    assert b.tasks[task].skipped == {"test": 0}


def test_task_lines_stay_once_and_are_added_where_a_source_lacks_them(tmp_path):
    write_authors_file(tmp_path, "vizwiz")
    write_authors_file(tmp_path, "clevr")
    write_authors_file(tmp_path, "textvqa")
    b = benchmark(f"benchmark.data_dir={tmp_path}")
    viz, clevr, text = b.tasks["vizwiz"].test(), b.tasks["clevr"].test(), b.tasks["textvqa"].test()
    assert all(ex.prompt.count(UNANSWERABLE) == 1 and ex.prompt.endswith(UNANSWERABLE) for ex in viz)
    assert all(ex.prompt.startswith(CLEVR_HINT + "\nQuestion: ") and ex.prompt.count("Hint:") == 1 for ex in clevr)
    assert text[0].prompt == "what is the brand of this camera?\nReference OCR token:DAKOTA,DIGITAL,Single-Use"
    write_authors_file(tmp_path / "sci", "scienceqa")
    sci = benchmark(f"benchmark.data_dir={tmp_path / 'sci'}").tasks["scienceqa"].test()[0]
    assert sci.direct_instruction == OPTION_LETTER and sci.meta["choices"]["D"] == "Cheyenne"


def test_prompt_cleaning():
    assert strip_image_tokens("<image>\nQ?") == strip_image_tokens("<image>Q?") == "Q?"
    assert strip_image_tokens("Compare <image> and <image 2>.") == "Compare and image 2."
    assert strip_image_tokens("A\n<image>\nB") == "A\nB"
    assert split_instruction(f"Q?\n{SHORT_ANSWER}") == ("Q?", SHORT_ANSWER)
    assert split_instruction(f"Q? {OPTION_LETTER}") == ("Q?", OPTION_LETTER)
    assert split_instruction(f"Q?\n{SHORT_ANSWER}\n{SHORT_ANSWER}") == ("Q?", SHORT_ANSWER)
    assert split_instruction("Q?") == ("Q?", None)


def test_missing_and_unreadable_images_are_skipped_and_counted(tmp_path, caplog):
    extra = [
        {"messages": [{"role": "user", "content": "<image>\nQ?"}, {"role": "assistant", "content": "a"}],
         "images": ["GQA/nowhere.png"]},
        {"messages": [{"role": "user", "content": "<image>\nQ?"}, {"role": "assistant", "content": "a"}],
         "images": ["GQA/broken.png"]},
        {"messages": [{"role": "user", "content": "Q without image?"}, {"role": "assistant", "content": "a"}],
         "images": []},
    ]
    (tmp_path / "GQA").mkdir()
    (tmp_path / "GQA" / "broken.png").write_bytes(b"not an image")
    write_authors_file(tmp_path, "gqa", extra=extra)
    task = benchmark(f"benchmark.data_dir={tmp_path}", "benchmark.max_skipped_fraction=0.5").tasks["gqa"]
    with caplog.at_level(logging.INFO, logger="cpt_bench"):
        assert len(task.test()) == 2
    assert task.skipped["test"] == 2 and task.excluded["test"] == 1
    assert "gqa test: 2 items" in caplog.text and "2 rows skipped (1 image missing, 1 image unreadable; first: " \
"GQA/nowhere.png (image missing))" in caplog.text
    assert caplog.records[-1].levelno == logging.WARNING, "skipped rows are a warning"


def test_images_stay_undecoded_until_load(tmp_path, monkeypatch):
    write_authors_file(tmp_path, "pathvqa")
    write_easyr1(tmp_path / "geo.parquet")
    decoded = []
    real = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1) or real(self))
    b = benchmark(f"benchmark.data_dir={tmp_path}",
                  f"benchmark.sources.geometry3k.test.path={tmp_path / 'geo.parquet'}")
    items = b.tasks["pathvqa"].test() + b.tasks["geometry3k"].test()
    assert decoded == [], "reading a task decodes no image"
    assert items[0].images[0].load().size == (8, 8) and decoded


# --- EasyR1 parquet ------------------------------------------------------------------------


def write_easyr1(path: Path, n: int = 3, image_dir: Path | None = None) -> None:
    feats = datasets.Features({"images": datasets.List(datasets.Image()), "problem": datasets.Value("string"),
                               "answer": datasets.Value("string")})
    images = [[{"bytes": png_bytes(COLOURS[k % len(COLOURS)]), "path": None}] for k in range(n)]
    if image_dir is not None:  # a path-only image, relative to the image root
        png(image_dir / "geo" / "p.png", COLOURS[5])
        images[-1] = [{"bytes": None, "path": str(image_dir / "geo" / "p.png")}]
    ds = datasets.Dataset.from_dict(
        {"images": images, "problem": [f"<image>Find x{k}. Round to the nearest tenth." for k in range(n)],
         "answer": [f"{k}.5" for k in range(n)]}, features=feats)
    ds.to_parquet(str(path))


def test_easyr1_parquet(tmp_path):
    write_easyr1(tmp_path / "geo_test.parquet", image_dir=tmp_path)
    b = benchmark(f"benchmark.sources.geometry3k.test.path={tmp_path / 'geo_test.parquet'}")
    items = b.tasks["geometry3k"].test()
    assert [ex.prompt for ex in items] == [f"Find x{k}. Round to the nearest tenth." for k in range(3)]
    assert [ex.answer for ex in items] == ["0.5", "1.5", "2.5"]
    assert all(isinstance(ex.images[0], ArrowImage) for ex in items)
    assert [colour_of(ex.images[0]) for ex in items] == [COLOURS[0], COLOURS[1], COLOURS[5]]
    direct = PromptStyle.for_benchmark(b, False)
    assert direct.user_text(items[0]) == f"Find x0. Round to the nearest tenth.\n{SHORT_ANSWER}"
    assert b.tasks["geometry3k"].grade("1/2", items[0]) == 1.0 and b.tasks["geometry3k"].grade("0.6", items[0]) == 0.0


@pytest.mark.slow  # over a second of CPU: the fast tier stays the one-minute loop
def test_max_train_and_max_test_draw_a_seeded_subset_in_source_order(tmp_path):
    def prompts(*o):
        return [ex.prompt for ex in benchmark(*o).tasks["geometry3k"].train()]

    write_easyr1(tmp_path / "train.parquet", n=12)
    src = f"benchmark.sources.geometry3k.train.path={tmp_path / 'train.parquet'}"
    a, again, other = prompts(src, "benchmark.max_train=5"), prompts(src, "benchmark.max_train=5"), \
        prompts(src, "benchmark.max_train=5", "benchmark.seed=1")
    every = prompts(src)
    assert len(a) == 5 and a == again and a != other
    assert a == [p for p in every if p in a], "a subset keeps the source's order"
    assert len(prompts(src, "benchmark.max_train=5", "benchmark.sources.geometry3k.max_train=2")) == 2
    assert len(every) == 12 and len(prompts(src, "benchmark.max_train=50")) == 12
    tests = benchmark(src.replace("train.path", "test.path"), "benchmark.max_test=3", "benchmark.max_train=1")
    assert len(tests.tasks["geometry3k"].test()) == 3


# --- hub-layout dataset folders (native columns), read as a hub id would be ------------------


def hub_folder(root: Path, splits: dict[str, dict], features: datasets.Features, config: str | None = None):
    """A dataset folder as on the hub: data/<split>-00000-of-00001.parquet (per config)."""
    sub = root / (config or "data")
    for split, columns in splits.items():
        sub.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(columns, features=features).to_parquet(str(sub / f"{split}-00000-of-00001.parquet"))
    return root


IMG = datasets.Image()


def test_scienceqa_hub_schema_keeps_the_image_subset(tmp_path):
    feats = datasets.Features({"image": IMG, "question": datasets.Value("string"), "hint": datasets.Value("string"),
                               "choices": datasets.List(datasets.Value("string")), "answer": datasets.Value("int64")})
    hub_folder(tmp_path / "sqa", {"test": {
        "image": [png_bytes(COLOURS[0]), None, png_bytes(COLOURS[1])],
        "question": ["Which is a bird?", "Text only?", "Capital of Delaware?"],
        "hint": ["Birds have feathers.", "", ""],
        "choices": [["cane toad", "ostrich"], ["x", "y"], ["Montpelier", "Trenton", "Dover"]],
        "answer": [1, 0, 2]}}, feats)
    task = benchmark(f"benchmark.sources.scienceqa.test.hf_id={tmp_path / 'sqa'}").tasks["scienceqa"]
    items = task.test()
    assert [ex.answer for ex in items] == ["B", "C"] and task.excluded["test"] == 1
    assert items[0].prompt == "Birds have feathers.\nWhich is a bird?\nA. cane toad\nB. ostrich"
    assert items[0].direct_instruction == OPTION_LETTER
    assert items[0].meta["choices"] == {"A": "cane toad", "B": "ostrich"}
    assert task.grade("(B)", items[0]) == 1.0 and task.grade("ostrich", items[0]) == 1.0
    assert task.grade("A", items[0]) == 0.0 and colour_of(items[1].images[0]) == COLOURS[1]


def test_textvqa_and_vizwiz_hub_schemas_take_the_majority_answer(tmp_path):
    feats = datasets.Features({"image": IMG, "question": datasets.Value("string"),
                               "answers": datasets.List(datasets.Value("string")),
                               "ocr_tokens": datasets.List(datasets.Value("string"))})
    hub_folder(tmp_path / "tv", {"validation": {
        "image": [png_bytes(COLOURS[0])], "question": ["what is the time?"],
        "answers": [["5:41", "5:40", "5:41"]], "ocr_tokens": [["N", "u", "g0"]]}}, feats)
    feats_vw = datasets.Features({"image": IMG, "question": datasets.Value("string"),
                                  "answers": datasets.List(datasets.Value("string"))})
    hub_folder(tmp_path / "vw", {"val": {
        "image": [png_bytes(COLOURS[1]), png_bytes(COLOURS[2])], "question": ["What is this?", "Hidden?"],
        "answers": [["unanswerable", "unanswerable", "soup"], []]}}, feats_vw)
    b = benchmark(f"benchmark.sources.textvqa.test.hf_id={tmp_path / 'tv'}",
                  f"benchmark.sources.vizwiz.test.hf_id={tmp_path / 'vw'}", "benchmark.max_skipped_fraction=0.5")
    (tv,), (vw,) = b.tasks["textvqa"].test(), b.tasks["vizwiz"].test()
    assert (tv.prompt, tv.answer) == ("what is the time?\nReference OCR token:N,u,g0", "5:41")
    assert (vw.prompt, vw.answer) == (f"What is this?\n{UNANSWERABLE}", "unanswerable")
    assert b.tasks["vizwiz"].skipped["test"] == 1, "a row without a reference answer is skipped and counted"
    assert b.tasks["vizwiz"].grade("Unanswerable.", vw) == 1.0


def test_gqa_joins_its_separate_image_config(tmp_path):
    root = tmp_path / "gqa"
    q = datasets.Features({"imageId": datasets.Value("string"), "question": datasets.Value("string"),
                           "answer": datasets.Value("string")})
    im = datasets.Features({"id": datasets.Value("string"), "image": IMG})
    hub_folder(root, {"testdev": {"imageId": ["n2", "n1", "gone"], "question": ["Is it red?", "What color?", "Q?"],
                                  "answer": ["no", "blue", "x"]}}, q, "testdev_balanced_instructions")
    hub_folder(root, {"testdev": {"id": ["n1", "n2"], "image": [png_bytes(COLOURS[0]), png_bytes(COLOURS[1])]}},
               im, "testdev_balanced_images")
    (root / "README.md").write_text(
        "---\nconfigs:\n" + "".join(
            f"- config_name: {c}\n  data_files:\n  - split: testdev\n    path: {c}/testdev-*.parquet\n"
            for c in ("testdev_balanced_instructions", "testdev_balanced_images")) + "---\n")
    task = benchmark(f"benchmark.sources.gqa.test.hf_id={root}", "benchmark.max_skipped_fraction=0.5").tasks["gqa"]
    items = task.test()
    assert [(ex.prompt, ex.answer) for ex in items] == [("Is it red?", "no"), ("What color?", "blue")]
    assert [colour_of(ex.images[0]) for ex in items] == [COLOURS[1], COLOURS[0]]
    assert task.skipped["test"] == 1, "an image id with no image row is a missing image"


def test_pathvqa_pope_and_clevr_native_columns(tmp_path):
    feats = datasets.Features({"image": IMG, "question": datasets.Value("string"), "answer": datasets.Value("string")})
    hub_folder(tmp_path / "clevr", {"test": {"image": [png_bytes(COLOURS[2])], "question": ["How many buses?"],
                                             "answer": ["1"]}}, feats)
    (clevr,) = benchmark(f"benchmark.sources.clevr.test.path={tmp_path / 'clevr'}").tasks["clevr"].test()
    assert clevr.prompt == f"{CLEVR_HINT}\nQuestion: How many buses?" and clevr.answer == "1"
    hub_folder(tmp_path / "pv", {"test": {"image": [png_bytes(COLOURS[0])], "question": ["where are liver stem cells?"],
                                          "answer": ["in the canals of hering"]}}, feats)
    pope_rows = {"image": [png_bytes(COLOURS[1])] * 2, "answer": ["yes", "no"],
                 "question": ["Is there a dog in the image?", "Is there a car in the image?"]}
    hub_folder(tmp_path / "pope", {"test": pope_rows}, feats)
    b = benchmark(f"benchmark.sources.pathvqa.test.hf_id={tmp_path / 'pv'}",
                  f"benchmark.sources.pope.test.hf_id={tmp_path / 'pope'}")
    (pv,), pope = b.tasks["pathvqa"].test(), b.tasks["pope"].test()
    assert PromptStyle.for_benchmark(b, False).user_text(pv) == f"where are liver stem cells?\n{SHORT_ANSWER}"
    assert b.tasks["pathvqa"].grade("In the canals of Hering.", pv) == 1.0
    assert [ex.answer for ex in pope] == ["yes", "no"] and "pope" in b.general
    assert b.tasks["pope"].grade("Yes, there is a dog.", pope[0]) == 1.0
    assert b.tasks["pope"].grade("No", pope[0]) == 0.0 and b.tasks["pope"].grade("no.", pope[1]) == 1.0


def test_mmmu_mixes_multiple_choice_and_open_questions_with_several_images(tmp_path):
    feats = datasets.Features({"question": datasets.Value("string"), "options": datasets.Value("string"),
                               "answer": datasets.Value("string"), "question_type": datasets.Value("string"),
                               "image_1": IMG, "image_2": IMG})
    hub_folder(tmp_path / "mmmu", {"validation": {
        "question": ["Compare <image 1> and <image 2>. Which is larger?", "What is the area in <image 1>?"],
        "options": ["['the first', 'the second']", "[]"], "answer": ["B", "12 cm^2"],
        "question_type": ["multiple-choice", "open"],
        "image_1": [png_bytes(COLOURS[0]), png_bytes(COLOURS[2])], "image_2": [png_bytes(COLOURS[1]), None]}}, feats)
    b = benchmark(f"benchmark.sources.mmmu.test.hf_id={tmp_path / 'mmmu'}")
    mc, open_ = b.tasks["mmmu"].test()
    assert mc.prompt == "Compare image 1 and image 2. Which is larger?\nA. the first\nB. the second"
    assert [colour_of(r) for r in mc.images] == COLOURS[:2] and len(open_.images) == 1
    direct = PromptStyle.for_benchmark(b, False)
    assert direct.user_text(mc).endswith(OPTION_LETTER) and direct.user_text(open_).endswith(SHORT_ANSWER)
    assert b.tasks["mmmu"].grade("B. the second", mc) == 1.0 and b.tasks["mmmu"].grade("12", open_) == 1.0


def test_mmlu_pro_is_text_only_multiple_choice(tmp_path):
    feats = datasets.Features({"question": datasets.Value("string"), "options": datasets.List(datasets.Value("string")),
                               "answer": datasets.Value("string"), "category": datasets.Value("string")})
    opts = [str(v) for v in range(10)]
    hub_folder(tmp_path / "mp", {"test": {"question": ["What is 3 + 4?"], "options": [opts], "answer": ["H"],
                                          "category": ["math"]}}, feats)
    (ex,) = benchmark(f"benchmark.sources.mmlu_pro.test.hf_id={tmp_path / 'mp'}").tasks["mmlu_pro"].test()
    assert ex.images == () and ex.prompt.splitlines()[-1] == "J. 9" and len(parse_choices(ex.prompt)) == 10
    assert ex.direct_instruction == OPTION_LETTER
    task = benchmark(f"benchmark.sources.mmlu_pro.test.hf_id={tmp_path / 'mp'}").tasks["mmlu_pro"]
    assert task.grade("H", ex) == 1.0 and task.grade("The answer is (H).", ex) == 1.0 and task.grade("7", ex) == 1.0


def test_save_to_disk_folders_are_read_too(tmp_path):
    feats = datasets.Features({"image": IMG, "question": datasets.Value("string"), "answer": datasets.Value("string")})
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(
        {"image": [png_bytes(COLOURS[3])], "question": ["Is there a cat?"], "answer": ["yes"]}, features=feats)}
    ).save_to_disk(str(tmp_path / "pope"))
    (ex,) = benchmark(f"benchmark.sources.pope.test.path={tmp_path / 'pope'}").tasks["pope"].test()
    assert ex.answer == "yes" and colour_of(ex.images[0]) == COLOURS[3]


# --- errors and config ---------------------------------------------------------------------------


def test_an_unreachable_hub_id_is_a_one_line_error_naming_the_task_and_a_local_fix(monkeypatch):
    import huggingface_hub.constants

    # offline as under HF_HUB_OFFLINE=1, also when datasets was imported before the env var was set
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    b = benchmark()  # cheap: nothing is read yet
    with pytest.raises(ConfigError) as err:
        b.tasks["pope"].test()
    msg = str(err.value)
    assert "\n" not in msg and "'pope'" in msg and "lmms-lab/POPE" in msg
    assert "benchmark.sources.pope.test.path=" in msg


def test_a_missing_local_file_fails_on_first_use_not_at_construction(tmp_path):
    b = benchmark(f"benchmark.sources.textvqa.test.path={tmp_path / 'TextVQA_test.json'}",
                  f"benchmark.data_dir={tmp_path}")
    with pytest.raises(ConfigError, match=r"^task 'textvqa': test data .*TextVQA_test.json does not exist"):
        b.tasks["textvqa"].test()
    with pytest.raises(ConfigError, match=r"benchmark.data_dir.*benchmark.sources.scienceqa.train.path"):
        b.tasks["scienceqa"].train()
    with pytest.raises(ConfigError, match="no train data.*benchmark.sources.clevr.train.path"):
        benchmark().tasks["clevr"].train()


def test_rows_in_another_schema_are_a_one_line_error(tmp_path):
    feats = datasets.Features({"image": IMG, "question": datasets.Value("string"), "answer": datasets.Value("string")})
    rows = {"image": [png_bytes(COLOURS[0])], "question": ["Q?"], "answer": ["a"]}
    hub_folder(tmp_path / "pv", {"test": rows}, feats)
    task = benchmark(f"benchmark.sources.scienceqa.test.hf_id={tmp_path / 'pv'}").tasks["scienceqa"]
    with pytest.raises(DataError) as err:  # a column the task reads is missing: named up front
        task.test()
    assert str(err.value) == (
        f"task 'scienceqa': test data {tmp_path / 'pv'}@test (native format) has no column 'choices'; its columns: "
        "image, question, answer; point benchmark.sources.scienceqa.test at the task's data or set "
        "benchmark.sources.scienceqa.format")
    # a column present in the schema but not in a row still fails on that row, in one line
    (tmp_path / "sqa.json").write_text(json.dumps([{"image": "x.png", "question": "Q?", "choices": ["a"]},
                                                    {"image": "x.png", "question": "Q?", "answer": 0}]))
    task = benchmark(f"benchmark.sources.scienceqa.test.path={tmp_path / 'sqa.json'}").tasks["scienceqa"]
    with pytest.raises(ConfigError, match=r"^task 'scienceqa': a native row of .* does not fit the task"):
        task.test()


@pytest.mark.parametrize(
    "override,match",
    [("benchmark.tasks=[scienceqa,nope]", "no task 'nope'"),
     ("benchmark.max_test=0", r"benchmark.max_test must be > 0 or null \(every item\), not 0"),
     ("benchmark.sources.gqa.max_train=-1", "benchmark.sources.gqa.max_train must be > 0 or null")],
)
def test_bad_benchmark_settings_are_one_line_config_errors(override, match):
    from cpt_bench.run.plan import plan

    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["benchmark=mllm_cl7", override])
    with pytest.raises(ConfigError, match=match):
        plan(cfg)


def test_an_unknown_source_format_fails_when_the_config_is_composed():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        benchmark("benchmark.sources.gqa.format=csv")
    assert "Invalid value 'csv', expected one of [auto, sharegpt, easyr1, native]" in str(err.value.__cause__)


def test_sources_of_an_unknown_task_are_refused():
    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["benchmark=mllm_cl7"])
    # a YAML (e.g. an experiment preset) can add a task's sources; the CLI fails at compose time
    with open_dict(cfg):
        cfg.benchmark = OmegaConf.merge(cfg.benchmark, {"sources": {"textvq": {"test": {"path": "x.json"}}}})
    with pytest.raises(ConfigError, match="benchmark.sources.textvq: no such task"):
        build_benchmark(cfg.benchmark)


def test_the_benchmark_composes_and_keeps_the_paper_order():
    # (tests/test_config.py also plans a run on every benchmark option)
    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["benchmark=mllm_cl7"])
    b = build_benchmark(cfg.benchmark)
    order = resolve_order(b, cfg.order)
    assert order == ["scienceqa", "textvqa", "vizwiz", "gqa", "geometry3k", "pathvqa", "clevr"] == DEFAULT_ORDER
    assert b.general == GENERAL_SUITE == ["mmmu", "mmlu_pro", "pope"]
    assert OmegaConf.select(cfg, "benchmark.sources.pathvqa.test.hf_id") == "flaviagiammarino/path-vqa"
    assert OmegaConf.select(cfg, "benchmark.sources.geometry3k.train.hf_id") == "hiyouga/geometry3k"


def test_absolute_image_paths_from_another_machine_are_re_rooted(tmp_path):
    local = png(tmp_path / "VizWiz" / "val" / "VizWiz_val_00000000.jpg")
    theirs = "/home/someone/project/mllm_cl/tasks/VizWiz/val/VizWiz_val_00000000.jpg"
    assert resolve_image(theirs, tmp_path) == Path(local)
    assert resolve_image("VizWiz/val/VizWiz_val_00000000.jpg", tmp_path) == Path(local)


# --- data that fails loudly: image resolution, skip reasons, min_items / max_skipped_fraction ------

THEIRS = "/home/someone/project/mllm_cl/tasks"  # where the authors' files were written


def sharegpt_record(image: str | None, answer: str | None = "yes") -> dict:
    turns = [{"role": "user", "content": "<image>\nIs it red?\n" + SHORT_ANSWER}]
    turns += [{"role": "assistant", "content": answer}] if answer is not None else []
    return {"messages": turns, "images": [image] if image else []}


def write_records(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


def test_resolve_image_rule(tmp_path, monkeypatch):
    root = tmp_path / "root"
    deep, shallow = png(root / "VizWiz" / "val" / "1.png"), png(root / "val" / "2.png")
    png(root / "val" / "1.png")  # a shorter suffix of the same path: the longest existing one wins
    assert resolve_image(deep, root) == Path(deep), "an absolute path that exists is taken as written"
    assert resolve_image("VizWiz/val/1.png", root) == Path(deep), "a relative path is under the root"
    assert resolve_image(f"{THEIRS}/VizWiz/val/1.png", root) == Path(deep)
    assert resolve_image(f"{THEIRS}/VizWiz/val/2.png", root) == Path(shallow)
    assert resolve_image("elsewhere/val/2.png", root) == Path(shallow), "relative paths are re-rooted too"
    assert resolve_image(f"{THEIRS}/VizWiz/val/3.png", root) is None
    assert resolve_image(f"{THEIRS}/VizWiz/val/1.png", None) is None, "no root: as written only"
    assert resolve_image(f"{THEIRS}/VizWiz/val", root) is None, "a folder is no image"
    # a shared folder cache: 200 missing images in one folder cost few folder look-ups
    calls = []
    real = Path.is_dir
    monkeypatch.setattr(Path, "is_dir", lambda self: calls.append(self) or real(self))
    dirs: dict[Path, bool] = {}
    assert all(resolve_image(f"{THEIRS}/GQA/images/{k}.png", root, dirs) is None for k in range(200))
    assert len(calls) == len(dirs) == 8, "one look-up per candidate folder, not per row"


def test_another_machines_absolute_paths_load_when_the_images_are_under_image_root(tmp_path):
    data, images = tmp_path / "data", tmp_path / "images"
    records = []
    for k in range(2):
        png(images / "VizWiz" / "val" / f"{k}.png", COLOURS[k])
        records.append(sharegpt_record(f"{THEIRS}/VizWiz/val/{k}.png"))
    file = write_records(data / "VizWiz_test.json", records)
    task = benchmark(f"benchmark.data_dir={data}", f"benchmark.image_root={images}").tasks["vizwiz"]
    assert [colour_of(ex.images[0]) for ex in task.test()] == COLOURS[:2] and task.skipped == {"test": 0}
    # a per-task root wins over the benchmark's
    task = benchmark(f"benchmark.data_dir={data}", "benchmark.image_root=/nowhere",
                     f"benchmark.sources.vizwiz.image_root={images}").tasks["vizwiz"]
    assert len(task.test()) == 2
    # not there: one line naming the task, the file, the counts by reason, the first path, what to set
    with pytest.raises(DataError) as err:
        benchmark(f"benchmark.data_dir={data}").tasks["vizwiz"].test()
    assert str(err.value) == (
        f"task 'vizwiz': test data {file}: 0 items, 2 of 2 rows skipped (image missing: 2); first offending: "
        f"{THEIRS}/VizWiz/val/0.png (image missing); needs >= 1 items (benchmark.min_items) and <= 5% skipped "
        f"(benchmark.max_skipped_fraction); images are looked up as written, then by their trailing path "
        f"components under {data}: put them there or set benchmark.image_root "
        "(or benchmark.sources.vizwiz.image_root)")


def test_empty_answers_are_skipped_and_counted_against_the_skipped_fraction(tmp_path):
    image = png(tmp_path / "GQA" / "0.png")
    records = [sharegpt_record(image) for _ in range(18)]
    records[3] = sharegpt_record(image, answer=" ")
    records[7] = sharegpt_record(image, answer=None)  # no assistant turn at all
    write_records(tmp_path / "GQA_test.json", records)
    with pytest.raises(DataError, match=r"^task 'gqa': test data .*GQA_test.json: 16 items, 2 of 18 rows skipped "
                                        r"\(empty answer: 2\); first offending: row 3 \(empty answer\); "
                                        r"needs >= 1 items .* and <= 5% skipped [^;]*$"):
        benchmark(f"benchmark.data_dir={tmp_path}").tasks["gqa"].test()
    task = benchmark(f"benchmark.data_dir={tmp_path}", "benchmark.max_skipped_fraction=0.12").tasks["gqa"]
    assert len(task.test()) == 16 and task.skipped == {"test": 2}


def test_min_items_and_max_skipped_fraction_trigger(tmp_path):
    write_authors_file(tmp_path, "pathvqa", extra=[sharegpt_record("path-vqa/gone.png")])  # 2 items, 1 missing

    def items(*o):
        return benchmark(f"benchmark.data_dir={tmp_path}", *o).tasks["pathvqa"].test()

    with pytest.raises(DataError, match=r"2 items, 1 of 3 rows skipped \(image missing: 1\).*<= 5% skipped"):
        items()
    assert len(items("benchmark.max_skipped_fraction=0.34")) == 2
    with pytest.raises(DataError, match=r"needs >= 3 items \(benchmark.min_items\) and <= 50% skipped"):
        items("benchmark.max_skipped_fraction=0.5", "benchmark.min_items=3")
    # a cap below min_items is what was asked for: one item is enough then
    assert len(items("benchmark.max_skipped_fraction=1", "benchmark.min_items=3", "benchmark.max_test=1")) == 1
    write_records(tmp_path / "path-vqa_test.json", [])
    with pytest.raises(DataError, match=r"path-vqa_test.json: 0 items, 0 of 0 rows skipped \(none\); needs >= 1"):
        items()


def test_a_source_without_a_column_the_task_reads_names_its_columns(tmp_path):
    feats = datasets.Features({"images": datasets.List(datasets.Image()), "problem": datasets.Value("string")})
    datasets.Dataset.from_dict({"images": [[{"bytes": png_bytes(COLOURS[0]), "path": None}]],
                                "problem": ["<image>Find x."]}, features=feats).to_parquet(str(tmp_path / "g.parquet"))
    task = benchmark(f"benchmark.sources.geometry3k.test.path={tmp_path / 'g.parquet'}").tasks["geometry3k"]
    with pytest.raises(DataError, match=r"^task 'geometry3k': test data .*g.parquet \(native format\) has no column "
                                        r"'answer' \(or 'answers'\); its columns: images, problem; "):
        task.test()


@pytest.mark.parametrize("override,message", [
    ("benchmark.min_items=0", "benchmark.min_items must be >= 1, not 0"),
    ("benchmark.max_skipped_fraction=1.5", "benchmark.max_skipped_fraction must be in [0, 1], not 1.5"),
])
def test_data_check_settings_are_validated(override, message):
    with initialize_config_module(config_module="cpt_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["benchmark=mllm_cl7", override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value) == message


@pytest.mark.slow
def test_cli_stops_in_one_line_before_any_model_when_images_are_missing(tmp_path):
    from conftest import run_cli

    write_records(tmp_path / "data" / "VizWiz_test.json", [sharegpt_record(f"{THEIRS}/VizWiz/val/0.png")])
    res = run_cli("benchmark=mllm_cl7", f"benchmark.data_dir={tmp_path / 'data'}", "order.tasks=[vizwiz]",
                  "eval.general=false", "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                  f"model.cache_dir={tmp_path / 'cache'}")
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"cpt-bench: error: task 'vizwiz': test data {tmp_path / 'data' / 'VizWiz_test.json'}: "
                           "0 items, 1 of 1 rows skipped (image missing: 1); first offending: "
                           f"{THEIRS}/VizWiz/val/0.png (image missing);")
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "cache").exists(), "no model may be built for a task without data"


# --- graders on the answer styles these tasks produce ---------------------------------------------


@pytest.mark.parametrize(
    "response,answer,ok",
    [("Dakota", "dakota", 1), ("the dog.", "dog", 1), ("Two", "2", 1), ("12 cm", "12", 1), ("3.0", "3", 1),
     ("1/2", "\\frac{1}{2}", 1), ("5\\sqrt{3}", "5 \\sqrt { 3 }", 1), ("48/11", "4 \\frac { 4 } { 11 }", 1),
     ("60°", "60", 1), ("Unanswerable", "unanswerable", 1), ("unanswerable.", "unanswerable", 1),
     ("Yes, there is.", "yes", 1), ("Cyan", "cyan", 1), ("3.82", "3.82", 1), ("10 years", "10 years", 1),
     ("dog", "cat", 0), ("13", "12", 0), ("3.8", "3.82", 0), ("no", "yes", 0), ("", "2", 0),
     ("yes", "unanswerable", 0)],
)
def test_short_answer_grader(response, answer, ok):
    assert grade_short_answer(response, answer) == ok


@pytest.mark.parametrize(
    "response,ok",
    [("B", 1), ("b", 1), ("(B)", 1), ("B.", 1), ("B)", 1), ("B. brick", 1), ("(B) brick", 1), ("The answer is B.", 1),
     ("Answer: (B)", 1), ("\\text{B}", 1), ("brick", 1),
     ("A", 0), ("plastic", 0), ("A. plastic", 0), ("", 0), ("C", 0)],
)
def test_multiple_choice_grader(response, ok):
    assert grade_choice(response, "B", {"A": "plastic", "B": "brick"}) == ok


def test_an_article_is_not_an_option_letter():
    assert choice_letter("The answer is a dog.", {"A": "cat", "B": "dog"}) is None
    assert choice_letter("the answer is (A).", {"A": "cat", "B": "dog"}) == "A"
