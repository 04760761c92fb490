"""Lazily loaded images of multimodal examples.

An `Example.images` entry is a small reference: nothing is decoded until `.load()`, so a task
of thousands of items costs a few bytes per image until a batch actually needs its pixels.
`.readable()` opens only the header (PIL reads the format and size, not the pixels), which is
how loaders skip items whose image is missing or not an image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image


def _open_rgb(source: Any) -> Image.Image:
    with Image.open(source) as im:
        return im.convert("RGB")  # decodes the pixels and lets go of the file


def _header_ok(source: Any) -> bool:
    try:
        with Image.open(source):
            return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def resolve_image_path(path: str, root: str | Path | None) -> Path:
    """Where an image path of a data file points.

    Relative paths are under `root`. An absolute path that does not exist here (a file written
    on another machine, as the authors' VizWiz file is) is re-rooted: the longest tail of it
    that exists under `root` wins. Returns the path as given when nothing exists.
    """
    p = Path(path)
    if not p.is_absolute():
        return Path(root, p) if root is not None else p
    if p.exists() or root is None:
        return p
    parts = p.parts[1:]
    for i in range(len(parts)):
        candidate = Path(root, *parts[i:])
        if candidate.exists():
            return candidate
    return p


@dataclass(frozen=True)
class PathImage:
    """An image file on disk."""

    path: Path

    def load(self) -> Image.Image:
        return _open_rgb(self.path)

    def readable(self) -> bool:
        return _header_ok(self.path)


@dataclass(frozen=True)
class MissingImage:
    """An image the source names but does not have (e.g. an id with no image row)."""

    what: str

    def load(self) -> Image.Image:
        raise FileNotFoundError(f"image {self.what} is missing")

    def readable(self) -> bool:
        return False


@dataclass(frozen=True)
class ArrowImage:
    """One image cell of an Arrow table, read only when needed.

    `table` is a `datasets` table, memory-mapped for anything loaded from disk or the hub (and
    pickled as a file reference, not as data). The cell holds what Hugging Face datasets store
    for an `Image` feature, `{"bytes": ..., "path": ...}`, or a plain path string; `index` picks
    an element of a list-of-images cell. Paths are resolved against `root`.
    """

    table: Any
    column: str
    row: int
    index: int | None = None
    root: str | None = None

    def _cell(self) -> Any:
        cell = self.table.column(self.column)[self.row]
        if self.index is not None:
            cell = cell.values[self.index]
        return cell.as_py()

    def _source(self) -> Any:
        cell = self._cell()
        if isinstance(cell, dict):
            if cell.get("bytes"):
                return io.BytesIO(cell["bytes"])
            cell = cell.get("path")
        if not cell:
            raise FileNotFoundError(f"row {self.row} of column {self.column!r} has no image")
        return resolve_image_path(cell, self.root)

    def load(self) -> Image.Image:
        return _open_rgb(self._source())

    def readable(self) -> bool:
        try:
            source = self._source()
        except FileNotFoundError:
            return False
        return _header_ok(source)


def load_images(refs) -> list[Image.Image]:
    """An item's images as PIL images: lazy references (`.load()`) are loaded, PIL images pass."""
    return [ref if isinstance(ref, Image.Image) else ref.load() for ref in refs]
