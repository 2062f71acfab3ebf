"""Token-weight tables as bytes: round trip, and refusal of anything else before a tensor is read."""
import json
import os
import struct

import pytest
import torch
from safetensors.torch import save

from tokenfocus.core.importance import TokenWeights
from tokenfocus.core.token_tables import MAX_TABLE_BYTES, parse_table, read_regular_file, table_bytes


def sample_weights(**overrides):
    fields = dict(labels=("▁a", "▁red", "▁hat", "</s>", "<pad>"), weights=(0.7, 1.5, 2.0, 1.0, 1.0),
                  real=(True, True, True, False, False), encoder="t5xxl", prompt='a "red" hat — ünïcode')
    fields.update(overrides)
    return TokenWeights(**fields)


def metadata_of(data: bytes) -> dict:
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size])["__metadata__"]


def test_round_trip_is_exact():
    tw = sample_weights(weights=(0.1, 1 / 3, 2.0, 1.0, 1.0))
    assert parse_table(table_bytes(tw)) == tw


@pytest.mark.parametrize("data", [b"", b"short", b"not a safetensors file at all", b"\x80\x04\x95pickle......",
                                  struct.pack("<Q", 2 ** 40) + b"{}"])
def test_non_safetensors_bytes_are_refused(data):
    with pytest.raises(ValueError, match="not a TokenFocus token-weight table"):
        parse_table(data)


def test_a_foreign_safetensors_file_is_refused_before_its_tensors_are_read(monkeypatch):
    import safetensors.torch

    read = []
    monkeypatch.setattr(safetensors.torch, "load", lambda data: read.append(1) or {})
    for tensors, metadata in [({"weights": torch.ones(5)}, None),                      # no metadata
                              ({"weights": torch.ones(5)}, {"format": "other"}),
                              ({"model.weight": torch.ones(4, 4)}, metadata_of(table_bytes(sample_weights())))]:
        with pytest.raises(ValueError, match="not a TokenFocus token-weight table"):
            parse_table(save(tensors, metadata=metadata))
    assert read == [], "a tensor was decoded before the header and metadata were checked"


@pytest.mark.parametrize("field, value, why", [
    ("labels", "[unterminated", "not JSON"),
    ("labels", '["a", 3]', "list of strings"),
    ("real", '[1, 0, 1, 0, 0]', "true/false"),
    ("version", "2", "version"),
])
def test_malformed_metadata_is_refused(field, value, why):
    metadata = dict(metadata_of(table_bytes(sample_weights())), **{field: value})
    with pytest.raises(ValueError, match=why):
        parse_table(save({"weights": torch.ones(5, dtype=torch.float64)}, metadata=metadata))


def test_rows_must_agree():
    metadata = metadata_of(table_bytes(sample_weights()))
    for tensor in (torch.ones(4, dtype=torch.float64), torch.ones(5, 1, dtype=torch.float64), torch.ones(5, dtype=torch.int64)):
        with pytest.raises(ValueError, match="one label|1-D|float tensor"):
            parse_table(save({"weights": tensor}, metadata=metadata))


def test_negative_or_nan_weights_are_refused():
    metadata = metadata_of(table_bytes(sample_weights()))
    for bad in (-1.0, float("nan")):
        weights = torch.tensor([1.0, bad, 1.0, 1.0, 1.0], dtype=torch.float64)
        with pytest.raises(ValueError, match="finite"):
            parse_table(save({"weights": weights}, metadata=metadata))


def test_the_reader_takes_regular_files_only_and_never_blocks(tmp_path):
    table = tmp_path / "t.safetensors"
    table.write_bytes(table_bytes(sample_weights()))
    assert parse_table(read_regular_file(str(table))) == sample_weights()
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)                                   # opened for reading, a FIFO would wait for a writer forever
    link = tmp_path / "link.safetensors"
    link.symlink_to(table)
    big = tmp_path / "big.safetensors"
    big.write_bytes(b"\0" * (MAX_TABLE_BYTES + 1))
    for path, why in [(fifo, "not a regular file"), (tmp_path, "not a regular file"), (link, "not a regular file"),
                      (big, "larger than"), (tmp_path / "absent.safetensors", "cannot be read")]:
        with pytest.raises(ValueError, match=why) as caught:
            read_regular_file(str(path))
        assert str(tmp_path) not in str(caught.value), "the message names no path"
