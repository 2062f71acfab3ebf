"""What a queued prompt meets in ComfyUI, for the tests, on either host layout: the model folders
(folder_paths) and the validation POST /prompt runs before anything executes (execution.validate_prompt;
the server answers 400 with its node_errors when it fails). Upstream has top-level `folder_paths` and
`execution` modules; the packaged 2026 core has them as `comfy.cmd.*`, with folders kept per execution
context. Imports nothing from ComfyUI until called.
"""
import asyncio
import contextlib
import os
from pathlib import Path


def folder_paths():
    try:
        import folder_paths as registry
    except ImportError:
        from comfy.cmd import folder_paths as registry
    return registry


def execution():
    try:
        import execution as module
    except ImportError:
        from comfy.cmd import execution as module
    return module


MODEL_FOLDERS = ("diffusion_models", "text_encoders", "token_weights")


@contextlib.contextmanager
def model_folders(base: Path):
    """ComfyUI's model folders moved under base/models for the duration (nothing is written to the ComfyUI
    tree); yields base/models. The folders exist and are empty."""
    models = Path(base) / "models"
    for name in MODEL_FOLDERS:
        (models / name).mkdir(parents=True, exist_ok=True)
    registry = folder_paths()
    table = getattr(registry, "folder_names_and_paths", None)
    if isinstance(table, dict):                     # upstream: one module-level dict and a listing cache
        saved = {name: table.get(name) for name in MODEL_FOLDERS}
        cache = getattr(registry, "filename_list_cache", {})
        saved_cache = dict(cache)
        cache.clear()
        for name in MODEL_FOLDERS:
            table[name] = ([str(models / name)], {".safetensors"})
        try:
            yield models
        finally:
            for name, entry in saved.items():
                if entry is None:
                    table.pop(name, None)
                else:
                    table[name] = entry
            cache.clear()
            cache.update(saved_cache)
        return
    from comfy.component_model.folder_path_types import FolderNames
    from comfy.execution_context import context_folder_names_and_paths

    names = FolderNames(base_paths=[Path(base)], is_root=True)
    registry.init_default_paths(names, base_paths_from_configuration=False)
    with context_folder_names_and_paths(names):
        yield models


def validate_prompt(nodes, prompt: dict):
    """(valid, error, outputs, node_errors) as ComfyUI's validate_prompt gives them for POST /prompt."""
    module = execution()

    def run():
        return tuple(asyncio.run(module.validate_prompt("tokenfocus-test", prompt, None)))

    try:
        from comfy.execution_context import context_add_custom_nodes
        from comfy.nodes.package_typing import ExportedNodes
    except ImportError:
        return run()
    # The packaged core looks nodes up in its execution context: add the loaded ones (this pack's included).
    with context_add_custom_nodes(ExportedNodes(NODE_CLASS_MAPPINGS=nodes.NODE_CLASS_MAPPINGS)):
        return run()


def widget_defaults(spec: dict) -> dict:
    """{input: default} of every widget in an input spec: a node's INPUT_TYPES(), or its "input" entry in
    the server's /object_info (combos: the default, else the first option)."""
    values = {}
    for section in ("required", "optional"):
        for name, entry in (spec.get(section) or {}).items():
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            if "default" in options:
                values[name] = options["default"]
            elif isinstance(entry[0], (list, tuple)) and entry[0]:
                values[name] = entry[0][0]
            elif options.get("options"):
                values[name] = options["options"][0]
    return values


def node(nodes, class_type: str, **inputs) -> dict:
    """A prompt entry with every widget at its default, then the given inputs (links as [id, slot])."""
    values = widget_defaults(nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES())
    values.update(inputs)
    return {"class_type": class_type, "inputs": values}


def touch(path: Path) -> str:
    """An empty model file: enough for a loader's list, never read (validation opens nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return os.path.basename(path)
