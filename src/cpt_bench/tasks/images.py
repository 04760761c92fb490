"""Lazily loaded images of multimodal examples.

An `Example.images` entry is a small reference: nothing is decoded until `.load()`, so a task
of thousands of items costs a few bytes per image until a batch actually needs its pixels.
`.problem()` opens only the header (PIL reads the format and size, not the pixels), which is
how loaders skip, and count by reason, items whose image is missing or not an image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

IMAGE_MISSING, IMAGE_UNREADABLE = "image missing", "image unreadable"  # skip reasons


def _open_rgb(source: Any) -> Image.Image:
    with Image.open(source) as im:
        return im.convert("RGB")  # decodes the pixels and lets go of the file


def _header_ok(source: Any) -> bool:
    try:
        with Image.open(source):
            return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _header_size(source: Any) -> tuple[int, int]:
    with Image.open(source) as im:
        return im.size


def _path_problem(path: Path) -> tuple[str, str] | None:
    if not path.is_file():
        return IMAGE_MISSING, str(path)
    return None if _header_ok(path) else (IMAGE_UNREADABLE, str(path))


def _is_dir(folder: Path, dirs: dict[Path, bool] | None) -> bool:
    if dirs is None:
        return folder.is_dir()
    if folder not in dirs:
        dirs[folder] = folder.is_dir()
    return dirs[folder]


def resolve_image(path: str | Path, root: str | Path | None, dirs: dict[Path, bool] | None = None) -> Path | None:
    """Where an image path of a data file points on this machine; None when nowhere.

    The rule, first hit wins: an absolute path as written; a relative one under `root`; then
    under `root` by the path's trailing components, longest first, so that
    `/home/someone/data/VizWiz/val/1.jpg` written on another machine is found at
    `<root>/VizWiz/val/1.jpg` (or `<root>/val/1.jpg`, or `<root>/1.jpg`). With no root, a
    relative path is taken from the working directory. `dirs` caches which folders exist:
    the rows of one file share a few folders, so a missing image costs dictionary look-ups,
    not a stat per candidate.
    """
    p = Path(path)
    if p.is_absolute() or root is None:
        if p.is_file():
            return p
        if root is None:
            return None
    parts = p.parts[1:] if p.is_absolute() else p.parts  # an absolute path without its anchor
    for i in range(len(parts)):
        candidate = Path(root, *parts[i:])
        if _is_dir(candidate.parent, dirs) and candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class PathImage:
    """An image file on disk."""

    path: Path

    def load(self) -> Image.Image:
        return _open_rgb(self.path)

    def size(self) -> tuple[int, int]:
        return _header_size(self.path)

    def problem(self) -> tuple[str, str] | None:
        """(skip reason, the offending path) when the image cannot be used; reads the header only."""
        return _path_problem(self.path)

    def readable(self) -> bool:
        return self.problem() is None


@dataclass(frozen=True)
class MissingImage:
    """An image the source names but does not have (e.g. an id with no image row)."""

    what: str

    def load(self) -> Image.Image:
        raise FileNotFoundError(f"image {self.what} is missing")

    def problem(self) -> tuple[str, str] | None:
        return IMAGE_MISSING, self.what

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
        path = resolve_image(cell, self.root)
        if path is None:
            raise FileNotFoundError(cell)  # the path as written: what a user looks for
        return path

    def load(self) -> Image.Image:
        return _open_rgb(self._source())

    def size(self) -> tuple[int, int]:
        return _header_size(self._source())

    def problem(self) -> tuple[str, str] | None:
        """(skip reason, the offending path or cell) when the image cannot be used; header only."""
        try:
            source = self._source()
        except FileNotFoundError as e:
            return IMAGE_MISSING, str(e)
        if isinstance(source, Path):
            return _path_problem(source)
        return None if _header_ok(source) else (IMAGE_UNREADABLE, f"row {self.row} of column {self.column!r}")

    def readable(self) -> bool:
        return self.problem() is None


def image_size(ref) -> tuple[int, int]:
    """(width, height) of an image reference, reading only its header where it can."""
    if isinstance(ref, Image.Image):
        return ref.size
    size = getattr(ref, "size", None)
    return size() if callable(size) else ref.load().size


def load_images(refs) -> list[Image.Image]:
    """An item's images as PIL images: lazy references (`.load()`) are loaded, PIL images pass."""
    return [ref if isinstance(ref, Image.Image) else ref.load() for ref in refs]
