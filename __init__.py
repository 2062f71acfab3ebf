"""TokenFocus: make diffusion transformers attend to the words of the prompt they tend to ignore.

ComfyUI loads this folder as a custom node pack. Nothing from ComfyUI is imported at module level, so the
pure math under `core/` can be imported and tested without ComfyUI.
"""

WEB_DIRECTORY = "./js"


async def comfy_entrypoint():
    from .nodes.extension import TokenFocusExtension

    return TokenFocusExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
