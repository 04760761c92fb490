"""Where the items of a real benchmark come from: local files or the Hugging Face Hub.

Three kinds of source, each read into `Row`s (text fields plus lazy image references):

* LLaMA-Factory ShareGPT JSON/JSONL (the authors' SFT data): `{"messages": [user, assistant],
  "images": ["TextVQA/train_images/x.jpg"]}`, image paths relative to an image root;
* EasyR1 parquet (the authors' RFT data): columns `images` (a list of images, as Hugging Face
  stores them or as paths), `problem` (text with `<image>`) and `answer`;
* any dataset `datasets.load_dataset` reads: a hub id, or a local folder of data files or one
  written by `save_to_disk`. Its own columns ("native" format) are read by the task adapter.

Arrow-backed datasets stay memory-mapped: a row's text is read when the row is drawn and its
images when they are loaded. `draw` picks a task's items (a seeded subset when capped) and
skips, counting them by reason, those whose image is missing or unreadable or whose answer is
empty; `Drawn.shortfall` says when too few survive for the task to be trusted. Image paths are
resolved by `images.resolve_image` (as written, under the image root, or by their trailing
components under it).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from cpt_bench.choices import SourceFormat
from cpt_bench.tasks.base import ConfigError, Example
from cpt_bench.tasks.images import ArrowImage, MissingImage, PathImage, resolve_image

# lmms-lab's GQA keeps images in a config of their own, one row per image id
JOIN_KEY, JOIN_ID, JOIN_IMAGE = "imageId", "id", "image"
EMPTY_ANSWER = "empty answer"  # a skip reason, beside images.IMAGE_MISSING / IMAGE_UNREADABLE


class Skip(Exception):
    """Raised by a row adapter for a row that should be an item but cannot be one (e.g. no
    reference answer): `draw` skips and counts it by `reason`, naming the first offender."""

    def __init__(self, reason: str, what: str | None = None):
        super().__init__(reason)
        self.reason, self.what = reason, what


@dataclass(frozen=True)
class SourceSpec:
    """Where one split of one task comes from: a local `path` or a hub `hf_id`."""

    task: str
    split: str  # train | test: the benchmark's split this source feeds
    key: str  # the config node that configures it, named in errors
    path: str | None = None
    setting: str = ""  # the setting that gave `path` (a data_dir file or an explicit path)
    hf_id: str | None = None
    hf_config: str | None = None
    images_hf_config: str | None = None  # images in another config, joined on JOIN_KEY
    hf_split: str | None = None
    format: str = SourceFormat.auto
    image_root: str | None = None  # default: the data file's folder

    def describe(self) -> str:
        if self.path:
            return self.path
        config = f"/{self.hf_config}" if self.hf_config else ""
        return f"{self.hf_id}{config}@{self.hf_split}"


@dataclass(frozen=True)
class Row:
    format: str  # sharegpt | easyr1 | native
    fields: dict  # the row's text columns
    images: tuple  # lazy image references, in order


# --- pure parsing ------------------------------------------------------------------------


def detect_format(columns: Iterable[str]) -> str:
    cols = set(columns)
    if cols & {"messages", "conversations"}:
        return "sharegpt"
    if {"problem", "answer"} <= cols:
        return "easyr1"
    return "native"


def sharegpt_turns(fields: dict) -> tuple[str, str]:
    """(first user turn, the assistant turn after it) of a ShareGPT record; the answer is ""
    when the assistant turn is missing or empty (a row to skip, not a malformed file).

    Accepts LLaMA-Factory's `messages` with role/content and LLaVA's `conversations` with
    from/value (human/gpt).
    """
    turns = fields.get("messages") or fields.get("conversations") or []
    user = answer = None
    for turn in turns:
        role = turn.get("role", turn.get("from"))
        text = turn.get("content", turn.get("value"))
        if user is None and role in ("user", "human"):
            user = text
        elif user is not None and role in ("assistant", "gpt"):
            answer = text
            break
    if user is None:
        raise ValueError("a ShareGPT record needs a user turn")
    return user, answer or ""


def prompt_and_answer(row: Row) -> tuple[str, str]:
    """The stored prompt text and reference answer of a ShareGPT or EasyR1 row."""
    if row.format == "sharegpt":
        return sharegpt_turns(row.fields)
    return row.fields["problem"], row.fields["answer"]


# --- reading -----------------------------------------------------------------------------


def _batched(xs: Iterable[int], n: int) -> Iterator[list[int]]:
    it = iter(xs)
    while chunk := list(islice(it, n)):
        yield chunk


class JsonRows:
    """Records of a JSON list or JSON-lines file; image paths resolved against `root`
    (`resolve_image`); one that resolves nowhere is a `MissingImage` named as written."""

    def __init__(self, records: list[dict], fmt: str, root: str | Path | None):
        self.records, self.root = records, root
        self.format = detect_format(records[0]) if fmt == SourceFormat.auto and records else fmt
        self._dirs: dict[Path, bool] = {}  # which folders exist, shared by all rows' look-ups

    def __len__(self) -> int:
        return len(self.records)

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(k for rec in self.records for k in rec))

    def _image(self, path: str) -> PathImage | MissingImage:
        found = resolve_image(path, self.root, self._dirs)
        return PathImage(found) if found is not None else MissingImage(str(path))

    def read(self, indices: Iterable[int]) -> Iterator[tuple[int, Row]]:
        for i in indices:
            rec = self.records[i]
            paths = rec.get("images", rec.get("image")) or []
            paths = [paths] if isinstance(paths, str) else paths
            images = tuple(self._image(p) for p in paths)
            fields = {k: v for k, v in rec.items() if k not in ("images", "image")}
            yield i, Row(self.format, fields, images)


def _is_image_feature(feature: Any) -> bool:
    from datasets import Image

    inner = getattr(feature, "feature", None)  # List / Sequence of images
    return isinstance(feature, Image) or isinstance(inner, Image)


@dataclass(frozen=True)
class ImageJoin:
    """Images kept in a table of their own, one row per id (lmms-lab's GQA layout)."""

    table: Any
    row_of: dict  # id -> row


class ArrowRows:
    """Rows of a `datasets.Dataset`, text read per drawn row, images left in the table."""

    def __init__(self, ds: Any, fmt: str, root: str | None, join: ImageJoin | None = None):
        if getattr(ds, "_indices", None) is not None:  # a selection: make rows = table rows
            ds = ds.flatten_indices()
        self.ds, self.root, self.join = ds, root, join
        self.format = detect_format(ds.column_names) if fmt == SourceFormat.auto else fmt
        self.image_columns = [
            c for c in ds.column_names if c in ("images", "image") or _is_image_feature(ds.features[c])
        ]
        self.text_columns = [c for c in ds.column_names if c not in self.image_columns]
        self._counts: dict[str, tuple[bool, list[int]]] = {}

    def __len__(self) -> int:
        return len(self.ds)

    @property
    def columns(self) -> list[str]:
        return list(self.ds.column_names)

    def _images_per_row(self, column: str) -> tuple[bool, list[int]]:
        """Whether `column` holds lists of images, and how many each row has.

        Read from list offsets and validity bitmaps only: no image bytes are touched.
        """
        if column not in self._counts:
            import pyarrow as pa
            import pyarrow.compute as pc

            col = self.ds.data.column(column)
            listed = pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
            counts = pc.list_value_length(col).to_pylist() if listed else col.is_valid().to_pylist()
            self._counts[column] = (listed, [int(c or 0) for c in counts])
        return self._counts[column]

    def _images(self, i: int, fields: dict) -> tuple:
        refs: list = []
        for col in self.image_columns:
            listed, counts = self._images_per_row(col)
            if listed:
                refs += [ArrowImage(self.ds.data, col, i, k, self.root) for k in range(counts[i])]
            elif counts[i]:
                refs.append(ArrowImage(self.ds.data, col, i, None, self.root))
        if self.join is not None and fields.get(JOIN_KEY) is not None:
            row = self.join.row_of.get(fields[JOIN_KEY])
            refs.append(
                MissingImage(f"{JOIN_KEY}={fields[JOIN_KEY]}") if row is None
                else ArrowImage(self.join.table, JOIN_IMAGE, row)
            )
        return tuple(refs)

    def read(self, indices: Iterable[int]) -> Iterator[tuple[int, Row]]:
        text = self.ds.data.table.select(self.text_columns)
        for chunk in _batched(indices, 256):
            for i, fields in zip(chunk, text.take(chunk).to_pylist(), strict=True):
                yield i, Row(self.format, fields, self._images(i, fields))


def _one_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _hub_dataset(spec: SourceSpec, config: str | None) -> Any:
    import datasets

    try:
        return datasets.load_dataset(spec.hf_id, config, split=spec.hf_split)
    except (ConnectionError, FileNotFoundError) as e:  # offline, unreachable or unknown id
        raise ConfigError(
            f"task {spec.task!r}: cannot load {spec.hf_id!r} from the Hugging Face Hub ({_one_line(e)}); "
            f"download it and point the task at local files, e.g. "
            f"{spec.key}.path=/data/{spec.task}_{spec.split}.parquet"
        ) from None
    except ValueError as e:  # e.g. an unknown split or config
        raise ConfigError(f"task {spec.task!r}: {spec.describe()}: {_one_line(e)}") from None


def _local_dataset(spec: SourceSpec, path: Path) -> Any:
    import datasets

    if path.is_dir() and (path / "dataset_dict.json").exists():
        dd = datasets.load_from_disk(str(path))
        split = spec.hf_split or spec.split
        if split not in dd:
            raise ConfigError(f"task {spec.task!r}: {path} has no split {split!r}; set {spec.key}.split")
        return dd[split]
    if path.is_dir() and (path / "state.json").exists():
        return datasets.load_from_disk(str(path))
    if path.is_dir():  # a folder laid out as a hub dataset (data files named by split)
        return datasets.load_dataset(str(path), spec.hf_config, split=spec.hf_split or spec.split)
    return datasets.load_dataset("parquet", data_files=str(path), split="train")


def _read_json(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    records = json.loads(text)
    if not isinstance(records, list):
        raise ValueError("expected a JSON list of records")
    return records


def open_rows(spec: SourceSpec) -> JsonRows | ArrowRows:
    """Open a source for reading; every failure is a one-line ConfigError naming the setting."""
    if spec.path:
        path = Path(spec.path).expanduser()
        if not path.exists():
            raise ConfigError(
                f"task {spec.task!r}: {spec.split} data {path} does not exist (from {spec.setting}); "
                f"point {spec.key}.path at a ShareGPT JSON, a parquet file or a dataset folder"
            )
        root = spec.image_root or str(path if path.is_dir() else path.parent)
        try:
            if path.suffix in (".json", ".jsonl"):
                return JsonRows(_read_json(path), spec.format, root)
            if not (path.is_dir() or path.suffix == ".parquet"):
                raise ValueError("expected .json, .jsonl, .parquet or a dataset folder")
            return ArrowRows(_local_dataset(spec, path), spec.format, root)
        except ConfigError:
            raise
        except (ValueError, OSError) as e:
            raise ConfigError(f"task {spec.task!r}: cannot read {path}: {_one_line(e)}") from None
    ds = _hub_dataset(spec, spec.hf_config)
    join = None
    if spec.images_hf_config:
        images = _hub_dataset(spec, spec.images_hf_config)
        ids = images.data.column(JOIN_ID).to_pylist()
        join = ImageJoin(images.data, {v: r for r, v in enumerate(ids)})
    return ArrowRows(ds, spec.format, spec.image_root, join)


# --- drawing a task's items ----------------------------------------------------------------


@dataclass(frozen=True)
class Drawn:
    examples: list[Example]
    skips: Counter  # reason -> rows skipped for it (among the rows looked at)
    first_skip: str | None  # the first offending image path (or row) met
    excluded: int  # rows that are not items of the task, e.g. text-only ScienceQA questions

    @property
    def skipped(self) -> int:
        return sum(self.skips.values())

    def shortfall(self, min_items: int, max_skipped_fraction: float) -> str | None:
        """Why these items cannot be trusted, or None: fewer than `min_items`, or more than
        `max_skipped_fraction` of the rows looked at (items and skipped rows) skipped."""
        looked = len(self.examples) + self.skipped
        if len(self.examples) >= min_items and self.skipped <= max_skipped_fraction * looked:
            return None
        reasons = ", ".join(f"{r}: {n}" for r, n in self.skips.most_common()) or "none"
        first = f"; first offending: {self.first_skip}" if self.first_skip else ""
        excluded = f"; {self.excluded} rows without an image excluded" if self.excluded else ""
        return (f"{len(self.examples)} items, {self.skipped} of {looked} rows skipped ({reasons}){first}{excluded}; "
                f"needs >= {min_items} items (benchmark.min_items) and <= {max_skipped_fraction * 100:g}% "
                f"skipped (benchmark.max_skipped_fraction)")


def draw(rows: JsonRows | ArrowRows, to_example: Callable[[Row], Example | None],
         limit: int | None, seed: int) -> Drawn:
    """All items of a source, or `limit` of them drawn at random by `seed`, in source order.

    `to_example` returns None for a row that is no item and raises `Skip` for one to skip.
    A capped draw walks a seeded permutation and stops once `limit` items are usable, so only
    the rows it looks at are read and have their image headers checked.
    """
    order = list(range(len(rows)))
    if limit is not None and limit < len(order):
        random.Random(seed).shuffle(order)
    kept: list[tuple[int, Example]] = []
    skips: Counter = Counter()
    first: str | None = None
    excluded = 0
    for i, row in rows.read(order):
        try:
            ex = to_example(row)
        except Skip as skip:
            problem: tuple[str, str] | None = (skip.reason, skip.what or f"row {i}")
        else:
            if ex is None:
                excluded += 1
                continue
            problem = next((p for im in ex.images if (p := im.problem()) is not None), None)
        if problem is not None:
            skips[problem[0]] += 1
            first = first or f"{problem[1]} ({problem[0]})"
            continue
        kept.append((i, ex))
        if len(kept) == limit:
            break
    kept.sort(key=lambda pair: pair[0])
    return Drawn([ex for _, ex in kept], skips, first, excluded)
