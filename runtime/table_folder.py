"""Token-weight tables in ComfyUI's `token_weights` model folder (models/token_weights, or wherever
extra_model_paths.yaml points it): the list Token Importance offers, reading one, saving one.

A workflow names a table; it never gives a path. A name is looked up in the list of files found in the
folder, and only a regular file whose real location lies inside that folder is ever opened. Every failure
is one kind of message, "table '<name>': <why>", that names no path on the server.
"""
from __future__ import annotations

import os
import re

from ..core.importance import TokenWeights
from ..core.token_tables import EXTENSION, MAX_TABLE_BYTES, parse_table, read_regular_file, table_bytes

FOLDER = "token_weights"
NONE = "none"
# A saved table's name: letters, digits, '-', '_', '.', spaces; no folder part.
_PREFIX = re.compile(r"^[\w\- .]{1,100}$")


def _folder_paths():
    """ComfyUI's folder registry: a top-level module upstream, comfy.cmd.folder_paths in packaged forks."""
    try:
        import folder_paths
    except ImportError:
        from comfy.cmd import folder_paths
    return folder_paths


def folders() -> list[str]:
    """The token_weights folders, registered as models/token_weights the first time (ComfyUI's folder
    list is its own registry; nothing is kept here)."""
    registry = _folder_paths()
    try:
        found = list(registry.get_folder_paths(FOLDER))
    except KeyError:
        found = []
    if not found:
        registry.add_model_folder_path(FOLDER, os.path.join(registry.models_dir, FOLDER))
        found = list(registry.get_folder_paths(FOLDER))
    return [str(f) for f in found]


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def tables() -> dict[str, str]:
    """{name: real path} of every table in the folders: .safetensors regular files, symbolic links kept only
    where they stay inside their folder. The first folder wins a name found in two."""
    found: dict[str, str] = {}
    for folder in folders():
        root = os.path.realpath(folder)
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if not filename.lower().endswith(EXTENSION):
                    continue
                real = os.path.realpath(os.path.join(dirpath, filename))
                name = os.path.relpath(os.path.join(dirpath, filename), root).replace(os.sep, "/")
                if name not in found and _inside(real, root) and os.path.isfile(real):
                    found[name] = real
    return found


def table_names() -> list[str]:
    """What Token Importance's `table` list offers: none, then every table by name."""
    return [NONE] + sorted(tables())


def _fail(name: str, why: str, listed: bool) -> ValueError:
    # A name from the list is shown; anything else only as what it is, so the message is the same whatever
    # exists on the server and names no path.
    shown = f"'{name}'" if listed else ("(a path)" if re.search(r"[/\\]", name) else f"'{name[:60]}'")
    return ValueError(f"table {shown}: {why}")


def check_table_name(name: str | None) -> None:
    """The name is none, or a table in the folder (a stored workflow's old path included: it must name one)."""
    if name is None or name in ("", NONE):
        return
    if name not in tables():
        raise _fail(name, f"not one of the tables in ComfyUI's {FOLDER} folder; save one there with Save Token "
                          "Weights (or put a .safetensors table in models/token_weights) and pick it from the list",
                    listed=False)


def load_table(name: str) -> TokenWeights:
    """The table of that name, read and checked; a ValueError naming only the table otherwise."""
    found = tables()
    if name not in found:
        check_table_name(name)
    try:
        return parse_table(read_regular_file(found[name], MAX_TABLE_BYTES))
    except ValueError as why:
        raise _fail(name, str(why), listed=True) from None


def check_prefix(prefix: str | None) -> None:
    if prefix is None:
        return
    if not _PREFIX.match(prefix) or prefix.strip(" .") == "":
        raise ValueError(f"filename_prefix '{prefix[:80]}': use letters, digits, '-', '_', '.' and spaces only "
                         f"(no folder: tables are saved in ComfyUI's {FOLDER} folder)")


def save_table(weights: TokenWeights, prefix: str) -> str:
    """Save as '<prefix>_00001.safetensors' (the next free number) in the first token_weights folder; the
    name to pick in Token Importance's list. Never overwrites."""
    check_prefix(prefix)
    folder = folders()[0]
    os.makedirs(folder, exist_ok=True)
    data = table_bytes(weights)
    pattern = re.compile(re.escape(prefix) + r"_(\d{5,})" + re.escape(EXTENSION) + "$")
    taken = [int(m.group(1)) for m in map(pattern.match, os.listdir(folder)) if m]
    number = max(taken, default=0) + 1
    while True:
        name = f"{prefix}_{number:05d}{EXTENSION}"
        try:
            fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        except FileExistsError:
            number += 1
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return name
