"""Token weight tables live in ComfyUI's token_weights model folder: Save Token Weights writes one, Token
Importance lists and reads them, and a workflow's value never opens a file outside the folder (an old
workflow's stored path included): every refusal is the same kind of message, naming no path."""
import os

import pytest
import torch
from safetensors.torch import save_file

import queue_env

PROMPT = "a man in a red hat holds a sunflower"


@pytest.fixture
def folder(comfy, tmp_path):
    with queue_env.model_folders(tmp_path / "comfy") as models:
        yield models / "token_weights"


@pytest.fixture(scope="module")
def clip(comfy):
    """A whole, tiny Flux CLIP: Token Importance tokenizes the prompt and encodes it once."""
    import types

    import comfy.sd
    import comfy.text_encoders.flux as flux

    tiny = {"clip_l_model_config": {"num_hidden_layers": 3, "hidden_size": 8, "intermediate_size": 8,
                                    "num_attention_heads": 1, "projection_dim": 8},
            "t5xxl_model_config": {"num_layers": 1, "d_ff": 8, "num_heads": 1, "d_kv": 8, "d_model": 8}}
    target = types.SimpleNamespace(params={}, clip=flux.flux_clip(), tokenizer=flux.FluxTokenizer)
    return comfy.sd.CLIP(target=target, model_options=tiny)


@pytest.fixture(scope="module")
def nodes(comfy):
    from tokenfocus.nodes.dare import TokenImportanceNode
    from tokenfocus.nodes.save_token_weights import SaveTokenWeightsNode

    return TokenImportanceNode, SaveTokenWeightsNode


def listed(importance):
    return next(i for i in importance.define_schema().inputs if i.id == "table").options


def test_saved_weights_are_listed_and_reused(folder, clip, nodes):
    importance, save = nodes
    made, _ = importance.execute(clip, PROMPT, "sunflower:2, red hat:1.5", False).args
    output = save.execute(made, "red hat")
    assert output.args == ("red hat_00001.safetensors",)
    assert "red hat_00001.safetensors" in output.ui.as_dict()["text"][0]
    assert save.execute(made, "red hat").args == ("red hat_00002.safetensors",), "never overwrites"
    assert sorted(os.listdir(folder)) == ["red hat_00001.safetensors", "red hat_00002.safetensors"]
    assert listed(importance) == ["none", "red hat_00001.safetensors", "red hat_00002.safetensors"]
    assert importance.validate_inputs(words="", table="red hat_00001.safetensors") is True

    again, text = importance.execute(clip, PROMPT, "", False, table="red hat_00001.safetensors").args
    assert again.weights == made.weights and again.labels == made.labels
    doubled, _ = importance.execute(clip, PROMPT, "sunflower:2", False, table="red hat_00001.safetensors").args
    assert max(doubled.weights) == 4.0, "a table is one more factor"
    with pytest.raises(ValueError, match="does not match this prompt|rows"):
        importance.execute(clip, "a blue car", "", False, table="red hat_00001.safetensors")


@pytest.mark.parametrize("value", ["", "none"])
def test_no_table_is_none_or_the_empty_value_old_workflows_stored(folder, clip, nodes, value):
    importance, _ = nodes
    assert importance.validate_inputs(words="", table=value) is True
    weights, _ = importance.execute(clip, PROMPT, "", False, table=value).args
    assert weights.is_neutral()


def test_a_value_outside_the_folder_is_never_opened_and_gives_one_message(folder, clip, nodes, tmp_path, monkeypatch):
    importance, save = nodes
    made, _ = importance.execute(clip, PROMPT, "hat:2", False).args
    name = save.execute(made, "kept").args[0]
    outside = tmp_path / "outside.safetensors"          # a valid table, but not in the folder
    outside.write_bytes((folder / name).read_bytes())
    values = ["/etc/passwd", "/etc/shadow", "/root", "/nonexistent/t.safetensors", "../../../../etc/passwd",
              f"../../{outside.name}", str(outside), str(folder / name), f"./{name}", f"sub/../{name}"]
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    messages = set()
    for value in values:
        refused = importance.validate_inputs(words="", table=value)
        with pytest.raises(ValueError) as caught:
            importance.execute(clip, PROMPT, "", False, table=value)
        assert refused == str(caught.value)
        messages.add(refused)
    assert opened == [], "nothing was opened for a value that is not a table of the list"
    assert len(messages) == 1, messages
    message = messages.pop()
    assert "not one of the tables" in message and "/" not in message.split(":")[0]
    assert str(tmp_path) not in message and "etc" not in message


def test_only_regular_tables_inside_the_folder_are_listed(folder, clip, nodes, tmp_path):
    importance, save = nodes
    made, _ = importance.execute(clip, PROMPT, "hat:2", False).args
    good = save.execute(made, "good").args[0]
    os.mkfifo(folder / "pipe.safetensors")               # reading it would wait for a writer forever
    (folder / "dir.safetensors").mkdir()
    (folder / "notes.txt").write_text("not a table")
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes((folder / good).read_bytes())
    (folder / "escape.safetensors").symlink_to(outside)  # a link out of the folder
    (folder / "sub").mkdir()
    (folder / "sub" / "inner.safetensors").write_bytes((folder / good).read_bytes())
    (folder / "alias.safetensors").symlink_to(folder / "sub" / "inner.safetensors")   # a link that stays inside
    save_file({"model.weight": torch.ones(4, 4)}, str(folder / "model.safetensors"))
    (folder / "big.safetensors").write_bytes(b"\0" * (5 * 2 ** 20))
    assert listed(importance) == ["none", "alias.safetensors", "big.safetensors", good, "model.safetensors",
                                  "sub/inner.safetensors"]
    assert importance.execute(clip, PROMPT, "", False, table="sub/inner.safetensors").args[0].weights == made.weights
    assert importance.execute(clip, PROMPT, "", False, table="alias.safetensors").args[0].weights == made.weights
    for name, why in [("model.safetensors", "not a TokenFocus token-weight table"), ("big.safetensors", "larger than"),
                      ("pipe.safetensors", "not one of the tables"), ("escape.safetensors", "not one of the tables")]:
        with pytest.raises(ValueError, match=why) as caught:
            importance.execute(clip, PROMPT, "", False, table=name)
        assert str(caught.value).startswith("table '") and str(tmp_path) not in str(caught.value)
