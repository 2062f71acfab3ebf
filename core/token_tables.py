"""Token-weight tables as bytes: what a saved table holds, and how one is read without trusting it.

A table is a safetensors file: the weights as a 1-D float tensor 'weights' (float64 when saved, for an
exact round trip) and, as metadata strings, the labels, real flags, encoder and prompt. Reading checks
the size, the header and every metadata field before any tensor is read, and never unpickles.
Pure module: os, json, torch and safetensors only; nothing from ComfyUI (runtime/table_folder.py finds
the files in ComfyUI's token_weights folder).
"""
from __future__ import annotations

import json
import os
import stat

import torch

from .importance import TokenWeights

TABLE_FORMAT = "tokenfocus.token_weights"
TABLE_VERSION = "1"
EXTENSION = ".safetensors"
# The largest table read: a 4096-row prompt with its labels and text takes well under 1 MiB.
MAX_TABLE_BYTES = 4 * 2 ** 20
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
_METADATA_KEYS = ("format", "version", "labels", "real", "encoder", "prompt")


class _NotATable(ValueError):
    """Internal only: always turned into a plain ValueError before it leaves this module."""


def table_bytes(weights: TokenWeights) -> bytes:
    """The safetensors bytes of a table."""
    from safetensors.torch import save

    metadata = {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "labels": json.dumps(list(weights.labels), ensure_ascii=False),
        "real": json.dumps(list(weights.real)),
        "encoder": weights.encoder,
        "prompt": weights.prompt,
    }
    return save({"weights": weights.as_tensor(dtype=torch.float64).contiguous()}, metadata=metadata)


def parse_table(data: bytes) -> TokenWeights:
    """A table from its bytes. The header and metadata are checked before the tensor is decoded; anything
    else is a ValueError that says why (and names no file)."""
    try:
        return _parse(data)
    except _NotATable as why:
        raise ValueError(f"not a TokenFocus token-weight table: {why}") from None


def _parse(data: bytes) -> TokenWeights:
    if len(data) > MAX_TABLE_BYTES:
        raise _NotATable(f"larger than {MAX_TABLE_BYTES // 2 ** 20} MiB")
    if len(data) < 8:
        raise _NotATable("too short for a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise _NotATable("its header is longer than the file")
    try:
        header = json.loads(data[8:8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _NotATable("its header is not safetensors JSON") from None
    if not isinstance(header, dict):
        raise _NotATable("its header is not safetensors JSON")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or metadata.get("format") != TABLE_FORMAT:
        raise _NotATable(f"metadata 'format' is not {TABLE_FORMAT!r}")
    if metadata.get("version") != TABLE_VERSION:
        raise _NotATable(f"metadata 'version' is {metadata.get('version')!r}, this TokenFocus reads {TABLE_VERSION!r}")
    missing = [k for k in _METADATA_KEYS if not isinstance(metadata.get(k), str)]
    if missing:
        raise _NotATable(f"metadata {missing} missing or not text")
    try:
        labels, real = json.loads(metadata["labels"]), json.loads(metadata["real"])
    except json.JSONDecodeError:
        raise _NotATable("metadata 'labels' or 'real' is not JSON") from None
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise _NotATable("metadata 'labels' must be a JSON list of strings")
    if not (isinstance(real, list) and all(isinstance(x, bool) for x in real)):
        raise _NotATable("metadata 'real' must be a JSON list of true/false")
    rows = _check_weights_entry(header, len(data) - 8 - size)
    if not len(labels) == len(real) == rows:
        raise _NotATable(f"{rows} weights for {len(labels)} labels and {len(real)} real flags: it needs one label, "
                         "weight and real flag per row")

    from safetensors.torch import load

    try:
        weights = load(data)["weights"]
    except Exception:  # safetensors' own error types, for what the header check could not see
        raise _NotATable("its tensor data cannot be read") from None
    try:
        return TokenWeights(labels=labels, weights=weights.double().tolist(), real=real,
                            encoder=metadata["encoder"], prompt=metadata["prompt"])
    except ValueError as why:
        raise _NotATable(str(why)) from None


def _check_weights_entry(header: dict, data_bytes: int) -> int:
    """The row count of the one tensor a table holds, after checking its header entry."""
    if set(header) != {"weights"}:
        raise _NotATable("it must hold exactly one tensor, named 'weights'")
    entry = header["weights"]
    if not isinstance(entry, dict) or entry.get("dtype") not in _DTYPE_BYTES:
        raise _NotATable(f"'weights' must be a float tensor ({', '.join(_DTYPE_BYTES)})")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] >= 0):
        raise _NotATable("'weights' must be 1-D")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(x, int) for x in offsets)
            and offsets[0] == 0 and offsets[1] == shape[0] * _DTYPE_BYTES[entry["dtype"]] == data_bytes):
        raise _NotATable("'weights' data does not match its shape")
    return shape[0]


def read_regular_file(path: str, limit: int = MAX_TABLE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. A FIFO, device, directory, symbolic link or
    larger file is refused before a byte is read: the file is opened non-blocking (a FIFO cannot hang the
    caller) and without following a link, and checked again on the open descriptor (a file swapped
    between the two checks is caught). Errors are ValueErrors that name no path."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise ValueError("not a regular file")
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
    except OSError:
        raise ValueError("cannot be read") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > limit:
            raise ValueError(f"larger than {limit // 2 ** 20} MiB")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise ValueError(f"larger than {limit // 2 ** 20} MiB")
        return b"".join(chunks)
    except OSError:
        raise ValueError("cannot be read") from None
    finally:
        os.close(fd)
