"""LTX-2 (LTXAV, audio-video) on ComfyUI's real class (tiny random weights, CPU): the TokenFocus nodes act on the
video stream and its text, and leave the audio stream, its text and the audio<->video calls exactly as they are.
The generic guarantees (active changes the output, neutral is bit-identical, input untouched, foreign override
kept) run for "ltx2" in test_attention_temperature.py, test_tora.py, test_dare.py and test_inspector.py."""
import dataclasses

import pytest
import torch

from node_kit import all_nodes, prompt_weights, sample_with
from recorders import AttentionRecorder

VIDEO_CALLS = (0, 1)        # the video's self-attention, then its text cross-attention; calls 2-5 are the audio's


@pytest.fixture(scope="module")
def nodes(comfy):
    return all_nodes()



RANGE = dict(blocks="all", start_percent=0.0, end_percent=1.0)
ATTENTION_NODES = {
    "temperature": lambda n, m, p: n["temperature"].execute(p, gamma=1.35, self_attention=True, scale_on="both", **RANGE),
    "reweight": lambda n, m, p: n["reweight"].execute(p, prompt_weights(m), strength=1.0, **RANGE),
    "guidance": lambda n, m, p: n["guidance"].execute(p, prompt_weights(m), scale=1.5, start_percent=0.0, end_percent=1.0),
}
TEXT_NODES = {
    "spacing": lambda n, m, p: n["spacing"].execute(p, sigma=1.3, k_mode="fixed", fixed_k=2, **RANGE),
    "alignment": lambda n, m, p: n["alignment"].execute(p, strength=1.0, k_mode="fixed", fixed_k=2, **RANGE),
}


def test_the_audio_video_class_is_its_own_family_and_ltx_video_stays_served(tiny):
    from tokenfocus.families import detect

    ltx2, ltxv = detect(tiny("ltx2").patcher), detect(tiny("ltxv").patcher)
    assert (ltx2.name, ltx2.n_double, ltx2.encoder) == ("LTX-2", 2, "gemma3_12b")
    assert "audio text is left untouched" in ltx2.profile.padding_note
    assert ltxv.name == "LTX-Video"


@pytest.mark.parametrize("node", list(ATTENTION_NODES))
def test_attention_nodes_change_only_the_video_calls(tiny, nodes, node):
    model = tiny("ltx2")
    recorder = AttentionRecorder(model.double_blocks)
    patched = ATTENTION_NODES[node](nodes, model, recorder.before(model.patcher)).args[0]
    sample_with(model, recorder.after(patched))
    changed = set()
    for outer, inner in recorder.pairs():
        same = torch.equal(outer.q, inner.q) and torch.equal(outer.k, inner.k)
        if not same:
            changed.add(outer.index)
    assert changed and changed <= set(VIDEO_CALLS), changed
    assert {o.index for o, _ in recorder.pairs()} == set(range(6)), "all six calls of an audio-video block ran"


def block_inputs(model, patcher):
    """Every block's (v_context, a_context, video tokens, audio tokens) as ComfyUI hands them over, recorded by a
    block patch placed after TokenFocus's (so it sees what TokenFocus passes on)."""
    seen = []
    recording = patcher.clone()
    existing = recording.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})

    def patch_for(index):
        inner = existing.get(("double_block", index))

        def patch(args, extra):
            def record(a):
                seen.append((index, a["v_context"].clone(), a["a_context"].clone()))
                return extra["original_block"](a)
            return inner(args, {**extra, "original_block": record}) if inner else record(args)
        return patch

    for i in range(model.double_blocks):
        recording.set_model_patch_replace(patch_for(i), "dit", "double_block", i)
    out = sample_with(model, recording)
    return seen, out


@pytest.mark.parametrize("node", list(TEXT_NODES))
def test_text_nodes_edit_the_video_text_and_leave_the_audio_text(tiny, nodes, node):
    model = tiny("ltx2")
    base, base_out = block_inputs(model, model.patcher)
    edited, out = block_inputs(model, TEXT_NODES[node](nodes, model, model.patcher).args[0])
    assert len(base) == len(edited) > 0
    assert not torch.equal(out, base_out)
    assert any(not torch.equal(b[1], e[1]) for b, e in zip(base, edited)), "the video text was edited"
    for b, e in zip(base, edited):
        assert torch.equal(b[2], e[2]), "the audio text stays as it is"


def test_blocks_past_its_depth_and_weights_of_another_length_are_errors_before_sampling(tiny, nodes):
    model = tiny("ltx2")
    for node in ("temperature", "spacing"):
        with pytest.raises(ValueError, match="past the model's depth"):
            settings = dict(gamma=1.35) if node == "temperature" else dict(sigma=1.3, k_mode="fixed", fixed_k=2)
            nodes[node].execute(model.patcher, **settings, blocks="2", start_percent=0.0, end_percent=1.0)
    too_long = dataclasses.replace(prompt_weights(model), labels=("t",) * 1100, weights=(3.0,) * 1100, real=(True,) * 1100)
    patched = nodes["reweight"].execute(model.patcher, too_long, strength=1.0, **RANGE).args[0]
    with pytest.raises(ValueError, match="positive conditioning has 1024"):
        sample_with(model, patched)


def test_blocks_that_skip_the_video_stream_leave_every_call_alone(tiny, nodes):
    # transformer_options["run_vx"] = False: the blocks run the audio stream alone; its first calls are then the
    # audio's, and no node may take them for the video's.
    model = tiny("ltx2")
    audio_only = model.patcher.clone()
    audio_only.model_options["transformer_options"]["run_vx"] = False
    base = sample_with(model, audio_only)
    # Not Importance Guidance: its extra pass is a model evaluation of its own (the cond alone), whose rounding
    # differs from the batched pass even where it suppresses nothing.
    for name, node in {**ATTENTION_NODES, **TEXT_NODES}.items():
        if name == "guidance":
            continue
        assert torch.equal(sample_with(model, node(nodes, model, audio_only).args[0]), base), name
