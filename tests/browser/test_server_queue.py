"""A real ComfyUI server on 127.0.0.1 with the pack installed: a prompt with bad TokenFocus input is answered
HTTP 400 by POST /prompt, with the node's own message and no exception type or server path, before anything
runs (the loader points at an empty file, which a loader that ran would fail on).

Needs a ComfyUI tree with a server (upstream's main.py, or a packaged ComfyUI's comfy.cmd.main) and ComfyUI's
server packages; skipped loudly otherwise. No browser is needed."""
import json
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parents[1] / "tests" / "integration"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import queue_env  # noqa: E402
from harness import REPO_ROOT, ComfyServer, comfyui_with_server, missing_server_packages  # noqa: E402

NAN = float("nan")


@pytest.fixture(scope="module")
def server():
    root = comfyui_with_server()
    if root is None:
        pytest.skip("!!! real-server queue check NOT run: no ComfyUI tree with a server (set COMFYUI_PATH)")
    missing = missing_server_packages()
    if missing:
        pytest.skip(f"!!! real-server queue check NOT run: ComfyUI's server packages are missing: {', '.join(missing)}")
    server = ComfyServer(root)
    for folder, name in (("diffusion_models", "tiny_model.safetensors"), ("text_encoders", "tiny_clip.safetensors")):
        (server.base / "models" / folder).mkdir(parents=True)
        (server.base / "models" / folder / name).write_bytes(b"")
    try:
        server.start()
        server.object_info = get(server, "/object_info")
        yield server
    finally:
        server.stop()


def get(server, path):
    with urllib.request.urlopen(server.url + path, timeout=60) as response:
        return json.loads(response.read())


def post_prompt(server, prompt) -> tuple[int, str]:
    body = json.dumps({"prompt": prompt, "client_id": "tokenfocus-test"}).encode()   # NaN goes as the NaN literal
    request = urllib.request.Request(server.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def node(server, class_type, **inputs):
    """Every widget at the default the server itself publishes, then the given inputs."""
    values = queue_env.widget_defaults(server.object_info[class_type]["input"])
    values.update(inputs)
    return {"class_type": class_type, "inputs": values}


def workflow(server, **changes):
    prompt = {
        "unet": node(server, "UNETLoader", unet_name="tiny_model.safetensors"),
        "clip": node(server, "CLIPLoader", clip_name="tiny_clip.safetensors"),
        "importance": node(server, "TokenFocus_TokenImportance", clip=["clip", 0], text="a red hat", words="hat:2"),
        "temperature": node(server, "TokenFocus_AttentionTemperature", model=["unet", 0]),
        "reweight": node(server, "TokenFocus_TokenReweight", model=["temperature", 0], token_weights=["importance", 0]),
        "inspector": node(server, "TokenFocus_AttentionInspector", model=["reweight", 0]),
        "view": node(server, "TokenFocus_AttentionInspectorView", inspector=["inspector", 1]),
        "preview": node(server, "PreviewImage", images=["view", 0]),
    }
    for node_id, inputs in changes.items():
        prompt[node_id]["inputs"].update(inputs)
    return prompt


def test_the_server_lists_the_token_weight_tables_and_the_save_node(server):
    table = server.object_info["TokenFocus_TokenImportance"]["input"]["optional"]["table"]
    options = table[1]["options"] if table[0] == "COMBO" else table[0]
    assert options == ["none"], "an empty models/token_weights: only 'none'"
    assert server.object_info["TokenFocus_SaveTokenWeights"]["output_node"] is True


@pytest.mark.parametrize("node_id, change, message", [
    ("temperature", dict(blocks="0-3,x"), "'x' is not a block index"),
    ("temperature", dict(start_percent=0.7, end_percent=0.2), "is after end_percent"),
    ("temperature", dict(preset="unknown preset"), "preset must be one of"),
    ("temperature", dict(gamma=NAN), "gamma must be a finite number"),
    ("reweight", dict(strength=NAN), "strength must be a finite number"),
    ("importance", dict(table="../../../../etc/passwd"), "not one of the tables"),
    ("importance", dict(words="hat:2:3"), "one ':' per entry"),
    ("view", dict(tokens="0-511"), "at most 16 tokens"),
])
def test_post_prompt_answers_400_with_the_nodes_message(server, node_id, change, message):
    status, body = post_prompt(server, workflow(server, **{node_id: change}))
    assert status == 400, body[:500]
    answer = json.loads(body)
    details = [e.get("details", "") for e in answer["node_errors"][node_id]["errors"]]
    assert any(message in d for d in details), details
    # No class or path of the pack reaches the client. (A packaged ComfyUI adds its own ValidationError and a
    # traceback of its own server to every refusal: the host's, not the pack's.)
    types = re.findall(r'"exception_type": "([^"]*)"', body)
    assert not [t for t in types if t != "ValidationError"], types
    assert str(REPO_ROOT) not in body and "custom_nodes" not in body
    assert "unet" not in answer["node_errors"], "the loaders themselves were fine"
