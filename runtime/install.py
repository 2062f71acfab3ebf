"""Put an intervention on a model clone and make sure the runtime is installed there exactly once."""
from __future__ import annotations

from ..core.blocklist import DOUBLE, SINGLE
from .adapters import MARKED
from .hooks import OVERRIDE_KEY, AttentionHook, BlockHook, PostBlockHook, apply_model_wrapper, outer_sample_wrapper
from .state import CONFIG_KEY, HOOK_KEY, TokenFocusConfig

WRAPPER_KEY = "tokenfocus"


def config_of(model_patcher) -> TokenFocusConfig | None:
    return model_patcher.model_options.get("transformer_options", {}).get(CONFIG_KEY)


def add_intervention(model_patcher, adapter, intervention):
    """A clone of the model with the intervention added; the input model is left as it was."""
    import comfy.patcher_extension as ext

    clone = model_patcher.clone()
    config = (config_of(clone) or TokenFocusConfig(adapter)).with_intervention(intervention)

    for wrapper_type, wrapper in ((ext.WrappersMP.APPLY_MODEL, apply_model_wrapper), (ext.WrappersMP.OUTER_SAMPLE, outer_sample_wrapper)):
        if not clone.get_wrappers(wrapper_type, WRAPPER_KEY):
            clone.add_wrapper_with_key(wrapper_type, WRAPPER_KEY, wrapper)
    if config.adapter.block_access == MARKED:
        _hook_after_blocks(clone, config)
    else:
        for block in _blocks_to_hook(config):
            _hook_block(clone, block)
    # set_model_patch_replace swaps in a new transformer_options dict: fetch it only now.
    options = clone.model_options["transformer_options"]
    options[CONFIG_KEY] = config
    if intervention.acts_on_attention and not isinstance(options.get(OVERRIDE_KEY), AttentionHook):
        options[OVERRIDE_KEY] = AttentionHook(inner=options.get(OVERRIDE_KEY))
    if intervention.acts_on_attention:
        # Kept apart from the override slot, which a later node may take over: the runtime finds it here.
        options[HOOK_KEY] = options[OVERRIDE_KEY]
    return clone


def _blocks_to_hook(config: TokenFocusConfig) -> set:
    blocks = set(config.blocks())
    if any(kind == SINGLE for kind, _ in blocks) and config.adapter.n_double:
        # Single-stream blocks see cat(txt, img) with no hint of the text length: the last double block
        # reports it on the way.
        blocks.add((DOUBLE, config.adapter.n_double - 1))
    return blocks


def _hook_block(clone, block: tuple) -> None:
    existing = clone.model_options["transformer_options"].get("patches_replace", {}).get("dit", {}).get(block)
    if isinstance(existing, BlockHook):
        return
    kind, index = block
    clone.set_model_patch_replace(BlockHook(block, inner=existing), "dit", kind, index)


def _hook_after_blocks(clone, config: TokenFocusConfig) -> None:
    """Models that mark their blocks themselves: one patch after every block (a list ComfyUI calls in turn, so
    other packs' patches there stay), only where some intervention edits block inputs."""
    if not any(iv.acts_on_block_inputs for iv in config.interventions):
        return
    patches = clone.model_options["transformer_options"].get("patches", {}).get("double_block", [])
    if not any(isinstance(p, PostBlockHook) for p in patches):
        clone.set_model_patch(PostBlockHook(), "double_block")
