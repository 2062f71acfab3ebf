"""Kandinsky 5 on ComfyUI's real class (tiny random weights, CPU): the nodes that act on attention work there,
placed by the model's own block marks; Token Spacing and Residual Alignment refuse it, naming why (no hook
reaches its blocks' text: ComfyUI's block-replace path for it fails). The generic guarantees run for
"kandinsky5" in test_attention_temperature.py, test_dare.py and test_inspector.py."""
import pytest
import torch

from node_kit import all_nodes, prompt_weights, sample_with
from recorders import AttentionRecorder

RANGE = dict(blocks="all", start_percent=0.0, end_percent=1.0)


@pytest.fixture(scope="module")
def nodes(comfy):
    return all_nodes()



def test_it_is_served_as_kandinsky_5_with_its_visual_blocks(tiny):
    from tokenfocus.families import detect

    adapter = detect(tiny("kandinsky5").patcher)
    assert (adapter.name, adapter.profile.variant, adapter.n_double) == ("Kandinsky 5", "Kandinsky 5 (video)", 2)


@pytest.mark.parametrize("node", ["spacing", "alignment"])
def test_text_edits_are_refused_naming_the_node_and_why_before_sampling(tiny, nodes, node):
    model = tiny("kandinsky5")
    settings = dict(sigma=1.3) if node == "spacing" else dict(strength=1.0)
    label = "Token Spacing" if node == "spacing" else "Residual Alignment"
    with pytest.raises(ValueError, match=f"{label} cannot act on Kandinsky 5 .*TypeError"):
        nodes[node].execute(model.patcher, **settings, k_mode="auto", fixed_k=8, **RANGE)


def test_the_block_replace_path_the_refusal_names_is_broken_in_this_comfyui(tiny):
    # What the refusal says: a pass-through block patch, as any pack installs, fails inside ComfyUI. Should a
    # ComfyUI fix it, this fails, and Token Spacing / Residual Alignment can be served there.
    model = tiny("kandinsky5")
    patched = model.patcher.clone()
    patched.set_model_patch_replace(lambda args, extra: extra["original_block"](args), "dit", "double_block", 0)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        sample_with(model, patched)


@pytest.mark.parametrize("node", ["reweight", "guidance"])
def test_token_weights_act_on_the_text_cross_attention_only(tiny, nodes, node):
    model = tiny("kandinsky5")
    recorder = AttentionRecorder(model.double_blocks, block_patches=False)
    if node == "reweight":
        patched = nodes["reweight"].execute(recorder.before(model.patcher), prompt_weights(model), strength=1.0, **RANGE).args[0]
    else:
        patched = nodes["guidance"].execute(recorder.before(model.patcher), prompt_weights(model), scale=1.5,
                                            start_percent=0.0, end_percent=1.0).args[0]
    base = sample_with(model, model.patcher)
    assert not torch.equal(sample_with(model, recorder.after(patched)), base)
    changed = {o.index for o, i in recorder.pairs() if not (torch.equal(o.q, i.q) and torch.equal(o.k, i.k))}
    assert changed == {1}, "the bias is folded into the text cross-attention (call 1), never the self-attention"
    assert recorder.inner_runs > 0, "the override installed before TokenFocus still runs"


def test_bad_blocks_are_an_error_when_the_node_runs(tiny, nodes):
    model = tiny("kandinsky5")
    with pytest.raises(ValueError, match="past the model's depth"):
        nodes["temperature"].execute(model.patcher, gamma=1.35, blocks="2", start_percent=0.0, end_percent=1.0)
