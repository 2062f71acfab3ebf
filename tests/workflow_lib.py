"""Helpers for the checks of the bundled workflows (tests/test_workflows.py) and the help pages.

Pure JSON work (the UI-format graph, its links, which model a node drives) needs nothing; what needs the
node definitions (widget names, ranges, which types are core nodes) comes from a real ComfyUI through
`registry()`, which imports it once (tests/integration/comfy_env.py), loads ComfyUI's own extra nodes and
this pack the way ComfyUI does, and returns NODE_CLASS_MAPPINGS.
"""
from __future__ import annotations

import asyncio
import json
import re
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_DIR = ROOT / "workflows"
HELP_DIR = ROOT / "js" / "docs"
# The preview's depth table, from the family modules (the same table js/families.js is generated from).
from tokenfocus.families import preview_table  # noqa: E402  (tests/conftest.py loads the pack as `tokenfocus`)

FAMILIES = preview_table()
# Nodes the frontend defines itself (no Python class): notes, reroutes, primitives.
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")


def workflow_paths() -> list[Path]:
    return sorted(WORKFLOW_DIR.glob("*.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def nodes_by_id(workflow: dict) -> dict:
    return {node["id"]: node for node in workflow["nodes"]}


def links_by_id(workflow: dict) -> dict:
    return {link[0]: link for link in workflow["links"]}


def is_tokenfocus(node: dict) -> bool:
    return node["type"].startswith("TokenFocus_")


def guess_family(file_name: str | None) -> dict | None:
    """The preview family a model file belongs to (the rule js/preview.js applies)."""
    name = (file_name or "").lower()
    for family in FAMILIES:
        if any(all(part in name for part in parts) for parts in family["files"]):
            return family
    return None


def model_files(node: dict) -> list[str]:
    return [v for v in node.get("widgets_values") or [] if isinstance(v, str) and v.lower().endswith(MODEL_FILE_SUFFIXES)]


def upstream(workflow: dict, node: dict, input_name: str) -> dict | None:
    """The node feeding `input_name` of `node`, or None."""
    links = links_by_id(workflow)
    for item in node.get("inputs") or []:
        if item["name"] == input_name and item.get("link") is not None:
            return nodes_by_id(workflow)[links[item["link"]][1]]
    return None


def model_loader(workflow: dict, node: dict) -> dict | None:
    """The loader a node's MODEL comes from, following MODEL inputs through patch nodes."""
    current = node
    for _ in range(32):
        model_inputs = [i for i in current.get("inputs") or [] if i["type"] == "MODEL"]
        if not model_inputs:
            return current
        current = upstream(workflow, current, model_inputs[0]["name"])
        if current is None:
            return None
    raise AssertionError("MODEL inputs run in a loop")


def downstream(workflow: dict, node: dict, output_slot: int) -> list[dict]:
    """Every node reached from one output of `node`, following MODEL outputs through patch nodes."""
    nodes, links = nodes_by_id(workflow), links_by_id(workflow)
    found, todo = [], [(node, output_slot)]
    while todo:
        current, slot = todo.pop()
        for link_id in current["outputs"][slot].get("links") or []:
            target = nodes[links[link_id][3]]
            found.append(target)
            todo += [(target, i) for i, out in enumerate(target.get("outputs") or []) if out["type"] == "MODEL"]
    return found


def note_texts(workflow: dict) -> str:
    return "\n".join(str(v) for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote") for v in n.get("widgets_values") or [])


# A workflow for models only a newer ComfyUI has says so in its note, as the user reads it.
NEEDS_COMFYUI = re.compile(r"Needs ComfyUI (\d+)\.(\d+) or later")


def comfyui_needed(workflow: dict) -> tuple[int, int] | None:
    """The oldest ComfyUI (major, minor) the workflow's note says it needs, or None."""
    found = NEEDS_COMFYUI.search(note_texts(workflow))
    return (int(found.group(1)), int(found.group(2))) if found else None


def types_a_newer_host_has(workflow: dict, known_types, host_version: str | None) -> tuple[list[str], str]:
    """(the workflow's node types this host lacks, why) when its note names a newer ComfyUI than this host;
    ([], "") otherwise: then a node type this host lacks is the workflow's mistake, not the host's age."""
    needed = comfyui_needed(workflow)
    try:
        host = tuple(int(part) for part in (host_version or "").split(".")[:2])
    except ValueError:
        host = ()
    if needed is None or len(host) < 2 or host >= needed:
        return [], ""
    missing = sorted({n["type"] for n in workflow["nodes"] if n["type"] not in FRONTEND_ONLY and n["type"] not in known_types})
    return missing, (f"node types {', '.join(missing)} (the workflow needs ComfyUI {needed[0]}.{needed[1]} or later, "
                     f"this is {host_version})") if missing else ""


# --------------------------------------------------------------------------------------- node definitions


def registry_or_skip(what: str) -> dict:
    """registry(), or a loud skip naming `what` was not checked when there is no ComfyUI (a failure instead
    with TOKENFOCUS_REQUIRE_COMFYUI=1, as for tests/integration)."""
    import os

    import pytest

    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import comfy_env

    if comfy_env.find_comfyui() is None:
        where = os.environ.get("COMFYUI_PATH")
        why = f"COMFYUI_PATH={where} is not a ComfyUI tree" if where else "COMFYUI_PATH is not set"
        if os.environ.get("TOKENFOCUS_REQUIRE_COMFYUI") == "1":
            pytest.fail(f"ComfyUI not found ({why}) and TOKENFOCUS_REQUIRE_COMFYUI=1")
        pytest.skip(f"!!! ComfyUI not found ({why}): {what} NOT checked")
    return registry()


@lru_cache(maxsize=1)
def registry() -> dict:
    """NODE_CLASS_MAPPINGS of a real ComfyUI with its extra nodes and this pack loaded (import once)."""
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import comfy_env

    env = comfy_env.import_comfyui()
    nodes = env.nodes
    failed = asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False)) or []
    assert asyncio.run(nodes.load_custom_node(str(ROOT))), "the pack did not load"
    mappings = dict(nodes.NODE_CLASS_MAPPINGS)
    mappings["__import_failed__"] = failed
    return mappings


def is_core(node_class) -> bool:
    module = getattr(node_class, "RELATIVE_PYTHON_MODULE", None) or "nodes"
    return module == "nodes" or module.startswith("comfy_extras.")


def declared_inputs(node_class) -> dict:
    """input name -> (type, options) in the order the frontend creates them (required, then optional)."""
    spec = node_class.INPUT_TYPES()
    out = {}
    for section in ("required", "optional"):
        for name, value in (spec.get(section) or {}).items():
            kind, options = value[0], (value[1] if len(value) > 1 else {}) or {}
            out[name] = ("COMBO", {**options, "options": list(kind)}) if isinstance(kind, (list, tuple)) else (str(kind), options)
    return out


def widget_names(node_class) -> list[str]:
    """The names of the values in a node's `widgets_values`, as the frontend writes them."""
    names = []
    for name, (kind, options) in declared_inputs(node_class).items():
        if kind not in WIDGET_TYPES or options.get("forceInput"):
            continue
        names.append(name)
        if kind == "INT" and options.get("control_after_generate"):
            names.append("control_after_generate")
        if options.get("image_upload"):
            names.append("upload")
    return names


def output_types(node_class) -> list[str]:
    return [str(t) for t in node_class.RETURN_TYPES]


def widget_values(node: dict, node_class) -> dict:
    names = widget_names(node_class)
    values = node.get("widgets_values") or []
    assert len(values) == len(names), f"{node['type']} #{node['id']}: {len(values)} widget values for widgets {names}"
    return dict(zip(names, values))
