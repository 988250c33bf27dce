"""The pread-based safetensors reader matches the safetensors library and rejects what it rejects."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from tiesmerge.adapters.safetensors_file import SafetensorsFile, SafetensorsFormatError

pytestmark = pytest.mark.core


@pytest.fixture()
def sample(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(3, 5, generator=gen), "b": torch.randn(7, generator=gen).to(torch.bfloat16),
               "c": torch.randn(2, 2, generator=gen).half(), "empty": torch.zeros(0, 4)}
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def test_reads_what_safetensors_reads(sample):
    f = SafetensorsFile(sample)
    want = load_file(sample)
    assert sorted(f.keys()) == sorted(want) and f.metadata == {"format": "pt"}
    for key, tensor in want.items():
        got = f.get_tensor(key)
        assert got.dtype == tensor.dtype and got.shape == tensor.shape and torch.equal(got, tensor)
        assert f.shape(key) == tuple(tensor.shape)


@pytest.mark.parametrize("cut", [1, 8, 20, 100])
def test_truncated_files_are_rejected(sample, cut):
    data = sample.read_bytes()
    sample.write_bytes(data[: len(data) - cut])
    with pytest.raises(SafetensorsFormatError):
        SafetensorsFile(sample)


def test_trailing_garbage_and_bad_header_are_rejected(sample, tmp_path):
    sample.write_bytes(sample.read_bytes() + b"xx")
    with pytest.raises(SafetensorsFormatError, match="incomplete"):
        SafetensorsFile(sample)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((10).to_bytes(8, "little") + b"{not json!")
    with pytest.raises(SafetensorsFormatError, match="JSON"):
        SafetensorsFile(bad)
