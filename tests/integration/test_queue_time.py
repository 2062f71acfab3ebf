"""Bad input is refused when the prompt is queued: ComfyUI's own validation (what POST /prompt runs, answering
400 with node_errors when it fails) gives the node's message before any node executes or any model loads.
The loaders point at empty files: validation only lists them, and a loader that ran would fail on one."""
import asyncio
import json
import math

import pytest

import queue_env
from comfy_env import REPO_ROOT

NAN = float("nan")


@pytest.fixture(scope="module")
def nodes(comfy):
    assert asyncio.run(comfy.nodes.load_custom_node(str(REPO_ROOT))) is True
    return comfy.nodes


@pytest.fixture
def folders(tmp_path):
    with queue_env.model_folders(tmp_path) as models:
        queue_env.touch(models / "diffusion_models" / "tiny_model.safetensors")
        queue_env.touch(models / "text_encoders" / "tiny_clip.safetensors")
        yield models


def workflow(nodes, save_branch=False, **changes):
    """Every TokenFocus node, chained as a user would, after a UNET and a CLIP loader, into one output (the
    preview), or with save_branch=True the Token Importance -> Save Token Weights branch alone; `changes` maps a
    node id to the inputs to change. One output: ComfyUI answers 400 when no output of a prompt is valid
    (a prompt with a valid output runs that one and reports the others)."""
    n = lambda class_type, **inputs: queue_env.node(nodes, class_type, **inputs)  # noqa: E731
    prompt = {
        "unet": n("UNETLoader", unet_name="tiny_model.safetensors"),
        "clip": n("CLIPLoader", clip_name="tiny_clip.safetensors"),
        "importance": n("TokenFocus_TokenImportance", clip=["clip", 0], text="a red hat", words="hat:2"),
        "save": n("TokenFocus_SaveTokenWeights", token_weights=["importance", 0]),
        "temperature": n("TokenFocus_AttentionTemperature", model=["unet", 0]),
        "spacing": n("TokenFocus_TokenSpacing", model=["temperature", 0]),
        "alignment": n("TokenFocus_ResidualAlignment", model=["spacing", 0]),
        "reweight": n("TokenFocus_TokenReweight", model=["alignment", 0], token_weights=["importance", 0]),
        "guidance": n("TokenFocus_ImportanceGuidance", model=["reweight", 0], token_weights=["importance", 0]),
        "inspector": n("TokenFocus_AttentionInspector", model=["guidance", 0]),
        "view": n("TokenFocus_AttentionInspectorView", inspector=["inspector", 1], tokens="hat, 2-4"),
        "preview": n("PreviewImage", images=["view", 0]),
    }
    keep = {"clip", "importance", "save"} if save_branch else set(prompt) - {"save"}
    prompt = {node_id: entry for node_id, entry in prompt.items() if node_id in keep}
    for node_id, inputs in changes.items():
        prompt[node_id]["inputs"].update(inputs)
    return prompt


@pytest.mark.parametrize("save", [False, True])
def test_a_good_workflow_passes_validation(nodes, folders, save):
    valid, error, outputs, node_errors = queue_env.validate_prompt(nodes, workflow(nodes, save))
    assert valid is True, (error, node_errors)
    assert list(outputs) == (["save"] if save else ["preview"])


BAD = [
    ("temperature", dict(blocks="0-3,x"), "'x' is not a block index"),
    ("temperature", dict(blocks="7-2"), "runs backwards"),
    ("temperature", dict(start_percent=0.6, end_percent=0.2), "is after end_percent"),
    ("temperature", dict(preset="AlignVid fan fiction"), "preset must be one of"),
    ("temperature", dict(gamma=NAN), "gamma must be a finite number"),
    ("temperature", dict(start_percent=NAN), "start_percent must be a finite number"),
    ("spacing", dict(sigma=NAN), "sigma must be a finite number"),
    ("spacing", dict(sigma=7.0), "sigma must be between 0.5 and 3"),
    ("spacing", dict(k_mode="most"), "k_mode must be one of"),
    ("alignment", dict(strength=NAN), "strength must be a finite number"),
    ("alignment", dict(end_percent=NAN), "end_percent must be a finite number"),
    ("reweight", dict(strength=NAN), "strength must be a finite number"),
    ("reweight", dict(blocks="s"), "is not a block index"),
    ("guidance", dict(scale=NAN), "scale must be a finite number"),
    ("guidance", dict(start_percent=0.9, end_percent=0.1), "is after end_percent"),
    ("inspector", dict(blocks="all,"), "empty item"),
    ("importance", dict(words="sunflower:lots"), "is not a number"),
    ("importance", dict(words="sunflower:nan"), "finite number"),
    ("importance", dict(table="/etc/passwd"), "not one of the tables"),
    ("importance", dict(table="../../../../etc/passwd"), "not one of the tables"),
    ("view", dict(tokens="0-511"), "at most 16 tokens"),
    ("view", dict(tokens="9-3"), "runs backwards"),
    ("save", dict(filename_prefix="../../escape"), "letters, digits"),
]


@pytest.mark.parametrize("node_id, change, message", BAD, ids=[f"{n}-{m[:24]}" for n, _, m in BAD])
def test_bad_input_is_refused_at_queue_time_with_the_nodes_message(nodes, folders, node_id, change, message):
    valid, error, outputs, node_errors = queue_env.validate_prompt(nodes, workflow(nodes, node_id == "save", **{node_id: change}))
    assert valid is False and error["type"] == "prompt_outputs_failed_validation"       # HTTP 400
    assert set(node_errors) == {node_id}, f"only the node with the bad input is refused: {sorted(node_errors)}"
    details = [e.get("details", "") for e in node_errors[node_id]["errors"]]
    assert any(message in d for d in details), details
    # Plain messages from the node's own validation: no exception type, no server path for the client.
    text = json.dumps(node_errors[node_id], default=str)
    assert "exception_type" not in text and str(REPO_ROOT) not in text


def test_every_float_input_is_checked_for_nan(nodes, folders):
    """Any float widget of any TokenFocus node: NaN is refused at queue time (ComfyUI's range check lets it
    through, since every comparison with NaN is false)."""
    checked = 0
    for node_id, entry in workflow(nodes).items():
        cls = nodes.NODE_CLASS_MAPPINGS[entry["class_type"]]
        if not entry["class_type"].startswith("TokenFocus_"):
            continue
        for item in cls.GET_SCHEMA().inputs:
            if item.get_io_type() != "FLOAT":
                continue
            valid, _, _, node_errors = queue_env.validate_prompt(nodes, workflow(nodes, False, **{node_id: {item.id: NAN}}))
            assert valid is False and node_id in node_errors, f"{entry['class_type']}.{item.id} = NaN was accepted"
            checked += 1
    assert checked >= 12


def test_an_execution_error_names_a_plain_type(nodes, tiny):
    """An error only the model can reveal (a block past its depth, a model the pack does not support) comes
    when the node runs; ComfyUI reports its type by module path, which must not be the server's folder."""
    full_type_name = queue_env.execution().full_type_name
    temperature = nodes.NODE_CLASS_MAPPINGS["TokenFocus_AttentionTemperature"]
    model = tiny("wan21_t2v")
    with pytest.raises(Exception) as caught:
        temperature.execute(model.patcher, gamma=1.35, blocks="0-99", start_percent=0.0, end_percent=0.3)
    assert full_type_name(type(caught.value)) == "ValueError" and "past the model's depth" in str(caught.value)
    with pytest.raises(Exception) as caught:
        temperature.execute(model.patcher, gamma=1.35, blocks="all", start_percent=0.0, end_percent=0.3,
                            preset="AlignVid official Wan2.1 i2v code")
    assert full_type_name(type(caught.value)) == "ValueError"
    with pytest.raises(Exception) as caught:
        temperature.execute(model.patcher, gamma=math.nan, blocks="all", start_percent=0.0, end_percent=0.3)
    assert full_type_name(type(caught.value)) == "ValueError" and "finite" in str(caught.value)
