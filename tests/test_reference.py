"""Which pinned matrix a CPU kind is held to (tests/reference.py): never a skip."""

from __future__ import annotations

import json

import pytest

from reference import expected_matrix, kind_folder


def keep(root, cpu: str, text: str) -> None:
    folder = root / kind_folder(cpu).name
    folder.mkdir()
    (folder / "m.csv").write_text(text)
    (folder / "cpu.json").write_text(json.dumps({"cpu": cpu}))


def test_a_kind_is_held_to_its_own_reference_first(tmp_path):
    keep(tmp_path, "A [avx2]", "a")
    keep(tmp_path, "B [avx2]", "b")
    assert expected_matrix("m", "B [avx2]", tmp_path)[0] == "b"


def test_a_new_kind_is_held_to_the_reference_every_kept_kind_agrees_on(tmp_path):
    keep(tmp_path, "A [avx2]", "same")
    keep(tmp_path, "B [avx2 avx512f]", "same")
    expected, source = expected_matrix("m", "C [avx2]", tmp_path)
    assert expected == "same" and "A [avx2]; B [avx2 avx512f]" in source


def test_a_new_kind_fails_where_the_kept_kinds_differ_or_none_is_kept(tmp_path):
    with pytest.raises(AssertionError, match="on any CPU kind"):
        expected_matrix("m", "C [avx2]", tmp_path)
    keep(tmp_path, "A [avx2]", "a")
    keep(tmp_path, "B [avx2]", "b")
    with pytest.raises(AssertionError, match="kept kinds differ"):
        expected_matrix("m", "C [avx2]", tmp_path)
