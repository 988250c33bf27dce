"""The one atomic file writer: the file appears whole or not at all, the old content survives a failed write, a
disk fault is one line (BadInputError), and no temp file is left behind."""

from __future__ import annotations

import errno
import os

import pytest

from tiesmerge.atomic import replace_file, write_file
from tiesmerge.errors import BadInputError

pytestmark = pytest.mark.core


def test_write_file_replaces_whole_and_leaves_nothing_on_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "recipe.yaml"
    write_file(target, "old: 1\n")
    assert target.read_text() == "old: 1\n"
    write_file(target, "new: 2\n")
    assert target.read_text() == "new: 2\n"

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(BadInputError, match="no space|No space|full") as err:
        write_file(target, "lost: 3\n")
    assert "\n" not in str(err.value)
    assert target.read_text() == "new: 2\n"  # the old content survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]  # no temp file


def test_a_failing_writer_leaves_no_temp_file(tmp_path):
    def broken(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        replace_file(tmp_path / "x.bin", broken)
    assert list(tmp_path.iterdir()) == []
