"""The pack loads the way ComfyUI loads a custom node folder, and every node declares a usable schema."""
import asyncio
import sys

import pytest

from comfy_env import REPO_ROOT

NODE_IDS = {
    "TokenFocus_AttentionTemperature", "TokenFocus_TokenSpacing", "TokenFocus_ResidualAlignment",
    "TokenFocus_TokenImportance", "TokenFocus_TokenReweight", "TokenFocus_ImportanceGuidance",
    "TokenFocus_AttentionInspector", "TokenFocus_AttentionInspectorView", "TokenFocus_SaveTokenWeights",
}


@pytest.fixture(scope="module")
def loaded(comfy):
    nodes = comfy.nodes
    assert asyncio.run(nodes.load_custom_node(str(REPO_ROOT))) is True
    return nodes


def test_every_node_is_registered_in_the_tokenfocus_category(loaded):
    registered = {k for k in loaded.NODE_CLASS_MAPPINGS if k.startswith("TokenFocus_")}
    assert NODE_IDS <= registered
    for node_id in registered:
        schema = loaded.NODE_CLASS_MAPPINGS[node_id].GET_SCHEMA()
        assert schema.category == "TokenFocus"
        assert len(schema.description) > 80, f"{node_id} needs a description that says where it comes from"
        for item in schema.inputs:
            assert item.tooltip, f"{node_id}.{item.id} has no tooltip"


def test_the_frontend_folder_is_served(loaded):
    served = [path for path in loaded.EXTENSION_WEB_DIRS.values() if str(REPO_ROOT) in str(path)]
    assert served and all(path.endswith("js") for path in served)


def test_the_loaded_node_patches_a_model(loaded, tiny):
    import torch
    import tiny_models

    model = tiny("wan21_t2v")
    node = loaded.NODE_CLASS_MAPPINGS["TokenFocus_AttentionTemperature"]
    patched, _ = node.execute(model.patcher, gamma=1.35, blocks="all", start_percent=0.0, end_percent=1.0).args
    base = tiny_models.sample(model, steps=2)
    model.patcher = patched
    assert not torch.equal(tiny_models.sample(model, steps=2), base)
    assert not any(name == "nodes" or name.startswith("nodes.") for name in sys.modules if "tokenfocus" in name.lower())
