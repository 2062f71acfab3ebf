"""Every TokenFocus node on the Wan 2.2 variants, each a tiny random-weight instance of ComfyUI's own class with
the conditioning its ComfyUI nodes add: VACE (VaceWanModel), Fun camera (CameraWanModel: Wan 2.1's i2v layout and
Wan 2.2's t2v one), HuMo (HumoWanModel), Animate (AnimateWanModel), Fun control with a reference image (ref_conv), S2V (WanModel_S2V, where its blocks get
transformer_options), the ti2v 5B model and (for the basic guarantees) one i2v A14B expert; the A14B two-expert
graph is in test_wan22_experts.py.

These variants make attention calls of their own next to the prompt's text cross-attention: VACE blocks after
some main blocks, HuMo's audio cross-attention inside each block, Animate's face adapters and S2V's audio
injectors after blocks, and the i2v layout's CLIP image rows (257) in front of the text. The text-side nodes must
act on the prompt's text cross-attention and rows only, and leave every other call untouched.
"""
import dataclasses

import pytest
import torch

import tiny_models as tm
from foreign_packs import CountingKernel, kjnodes_style_sage
from recorders import AttentionRecorder, BlockInputRecorder, Call, scaled_by

STEPS = 2
GAMMA = 1.35
VARIANTS = ["wan_vace", "wan_camera", "wan22_camera", "wan_humo", "wan_animate", "wan_fun_control", "wan_s2v", "wan22_ti2v_5b"]
WEIGHTED_ROWS = (1, 3)


def sample_with(model, patcher, **kw):
    kw.setdefault("steps", STEPS)
    return tm.sample(dataclasses.replace(model, patcher=patcher), **kw)


def token_weights(model, weight=3.0, rows=None):
    from tokenfocus.core.importance import TokenWeights
    from tokenfocus.families import detect

    n = model.text_len if rows is None else rows
    return TokenWeights(labels=tuple(f"t{i}" for i in range(n)),
                        weights=tuple(weight if i in WEIGHTED_ROWS else 1.0 for i in range(n)),
                        real=tuple(i < model.real_tokens for i in range(n)), encoder=detect(model.patcher).encoder,
                        prompt="a test prompt")


@pytest.fixture(scope="module")
def nodes(comfy):
    return node_classes()


def node_classes():
    from tokenfocus.nodes.attention_temperature import AttentionTemperatureNode
    from tokenfocus.nodes.dare import ImportanceGuidanceNode, TokenReweightNode
    from tokenfocus.nodes.inspector import AttentionInspectorNode
    from tokenfocus.nodes.tora import ResidualAlignmentNode, TokenSpacingNode

    return dict(temperature=AttentionTemperatureNode, spacing=TokenSpacingNode, alignment=ResidualAlignmentNode,
                reweighting=TokenReweightNode, guidance=ImportanceGuidanceNode, inspector=AttentionInspectorNode)


def apply(nodes, node, model, patcher, neutral=False, **kw):
    """The node on `patcher` with acting settings, or with its neutral ones; returns the patched model (and, for
    the Inspector, its handle)."""
    ranges = dict(start_percent=0.0, end_percent=1.0)
    if node == "temperature":
        args = dict(gamma=1.0 if neutral else GAMMA, blocks="all", **ranges)
    elif node == "spacing":
        args = dict(sigma=1.0 if neutral else 1.3, k_mode="fixed", fixed_k=2, blocks="all", **ranges)
    elif node == "alignment":
        args = dict(strength=0.0 if neutral else 1.0, k_mode="fixed", fixed_k=2, blocks="all", **ranges)
    elif node == "reweighting":
        args = dict(token_weights=token_weights(model, 1.0 if neutral else 3.0), strength=1.0, blocks="all", **ranges)
    elif node == "guidance":
        args = dict(token_weights=token_weights(model), scale=0.0 if neutral else 1.5, **ranges)
    else:
        args = dict(blocks="all", queries=16, heatmaps=True, prompt="positive", **ranges)
    args.update(kw)
    out = nodes[node].execute(patcher, **args).args
    return (out[0], out[1]) if node == "inspector" else (out[0], None)


NODES = ["temperature", "spacing", "alignment", "reweighting", "guidance", "inspector"]


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("variant", VARIANTS + ["wan22_i2v_a14b_expert"])
def test_acts_neutral_is_bit_identical_input_untouched_and_deterministic(tiny, nodes, variant, node):
    model = tiny(variant)
    base = sample_with(model, model.patcher)
    neutral, _ = apply(nodes, node, model, model.patcher, neutral=True)
    assert torch.equal(sample_with(model, neutral), base), "neutral settings are bit-identical"
    patched, handle = apply(nodes, node, model, model.patcher)
    out = sample_with(model, patched)
    if node == "inspector":
        assert torch.equal(out, base), "the Inspector changes nothing"
        records = handle.snapshot().records
        assert records and {r.kind for r in records} == {"cross_text"}
        assert {r.keys for r in records} == {model.text_len}, "it records the prompt's text cross-attention only"
    else:
        assert not torch.equal(out, base), "acting settings change the output"
    assert torch.equal(sample_with(model, patched), out), "the same graph twice gives the same output"
    assert torch.equal(sample_with(model, model.patcher), base), "the input model is untouched"


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_an_attention_override_placed_after_the_node_keeps_both_acting(tiny, nodes, variant, node):
    model = tiny(variant)
    foreign_only = sample_with(model, kjnodes_style_sage(model.patcher, CountingKernel()))
    kernel = CountingKernel()
    patched, handle = apply(nodes, node, model, model.patcher)
    out = sample_with(model, kjnodes_style_sage(patched, kernel))
    assert kernel.calls, "the foreign override still runs"
    if node == "inspector":
        assert torch.equal(out, foreign_only) and handle.snapshot().records
    else:
        assert (out - foreign_only).abs().max() > 1e-4, "TokenFocus still acts"


BAD_SETTINGS = {
    "temperature": (dict(blocks="7"), "past the model's depth"),
    "spacing": (dict(blocks="7"), "past the model's depth"),
    "alignment": (dict(blocks="0-9"), "past the model's depth"),
    "inspector": (dict(blocks="s0"), "single-block indices"),
}


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("variant", ["wan_vace", "wan_humo", "wan_s2v"])
def test_bad_input_is_a_clear_error_before_the_first_step(tiny, nodes, variant, node):
    import comfy.patcher_extension as ext

    model = tiny(variant)
    if node in BAD_SETTINGS:
        settings, message = BAD_SETTINGS[node]
        with pytest.raises(ValueError, match=message):
            apply(nodes, node, model, model.patcher, **settings)
        return
    # Weights built for another prompt's rows: refused when sampling starts, before the model runs once.
    patched, _ = apply(nodes, node, model, model.patcher, token_weights=token_weights(model, rows=77))
    calls = []
    patched.add_wrapper_with_key(ext.WrappersMP.APPLY_MODEL, "test-counter",
                                 lambda executor, *a, **k: calls.append(1) or executor(*a, **k))
    with pytest.raises(ValueError, match="positive conditioning has 512"):
        sample_with(model, patched)
    assert not calls


# ----------------------------------------------------------------------- the prompt's text, and nothing else


class CallLog(AttentionRecorder):
    """AttentionRecorder, keeping every attention call that carries transformer_options, also those outside the
    main blocks (block None: a VACE block), placed by the main block it runs in and never by the block index the
    model sets (ComfyUI 0.12 leaves it set after the block, where a VACE block runs)."""

    def _override(self, where, previous):
        def override(func, *args, **kwargs):
            block, index = self.block, None
            if block is not None:
                index = self.counters[where]
                self.counters[where] += 1
            sigmas = (kwargs.get("transformer_options") or {}).get("sigmas")
            self.records[where].append(Call(block, index, None if sigmas is None else float(sigmas.reshape(-1)[0]),
                                            args[0].detach().clone(), args[1].detach().clone(), ""))
            return previous(func, *args, **kwargs) if previous is not None else func(*args, **kwargs)
        return override


def has_clip_rows(model):
    return len(model.txt_layout) > 1


def text_call(model):
    """Place of the text cross-attention in a main block: after self-attention and (i2v) the CLIP image call."""
    return 2 if has_clip_rows(model) else 1


@pytest.mark.parametrize("variant", VARIANTS + ["wan_animate_face"])
def test_temperature_scales_the_text_cross_attention_and_no_other_call(tiny, nodes, variant):
    model = tiny("wan_animate", face_video=True) if variant == "wan_animate_face" else tiny(variant)
    log = CallLog(model.double_blocks)
    patched, _ = apply(nodes, "temperature", model, log.before(model.patcher), image_cross_attention=False)
    # The face video's motion encoder costs seconds per model call on a CPU: one step, one model call (CFG 1).
    face = dict(steps=1, cfg=1.0) if variant == "wan_animate_face" else {}
    sample_with(model, log.after(patched), **face)
    pairs = log.pairs()
    extra = [o for o, _ in pairs if o.block is None or o.index not in (0, text_call(model))]
    # VACE blocks, HuMo's audio call, the CLIP image call; S2V's audio injectors pass no transformer_options.
    assert bool(extra) == (variant not in ("wan_s2v", "wan22_ti2v_5b", "wan22_camera")), "the variant's extra calls ran"
    scaled = others = 0
    for outer, inner in pairs:
        if outer.block is not None and outer.index == text_call(model):
            assert outer.k.shape[1] == model.text_len and scaled_by(outer.q, inner.q, GAMMA) and torch.equal(outer.k, inner.k)
            scaled += 1
        else:
            assert torch.equal(outer.q, inner.q) and torch.equal(outer.k, inner.k), (outer.block, outer.index, "changed")
            others += 1
    assert scaled and scaled % model.double_blocks == 0 and others >= scaled


@pytest.mark.parametrize("variant", VARIANTS)
def test_reweighting_biases_the_prompt_keys_of_the_text_call_only(tiny, nodes, variant):
    model = tiny(variant)
    log = CallLog(model.double_blocks)
    patched, _ = apply(nodes, "reweighting", model, log.before(model.patcher))
    sample_with(model, log.after(patched))
    biased = 0
    for outer, inner in log.pairs():
        if outer.block is not None and outer.index == text_call(model):
            assert inner.q.shape[-1] > outer.q.shape[-1], "the text call carries the folded key bias"
            biased += 1
        else:
            assert torch.equal(outer.q, inner.q) and torch.equal(outer.k, inner.k), (outer.block, outer.index, "changed")
    assert biased


@pytest.mark.parametrize("node", ["spacing", "alignment"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_token_spacing_and_alignment_edit_the_prompt_rows_only(tiny, nodes, variant, node):
    model = tiny(variant)
    blocks = [("double_block", i) for i in range(model.double_blocks)]
    recorder = BlockInputRecorder(blocks)
    patched, _ = apply(nodes, node, model, recorder.before(model.patcher))
    sample_with(model, recorder.after(patched))
    clip = tm.CLIP_VISION_TOKENS if has_clip_rows(model) else 0
    checked = 0
    for block, sigma, cond_or_uncond, before, after in recorder.pairs():
        assert before.shape[1] == clip + model.text_len
        assert torch.equal(before[:, :clip], after[:, :clip]), "the CLIP image rows are not prompt text"
        for b in range(before.shape[0]):
            uncond = cond_or_uncond[b * len(cond_or_uncond) // before.shape[0]] == 1
            rows = model.prompt_rows(uncond)
            text_before, text_after = before[b, clip:], after[b, clip:]
            pad = torch.ones(model.text_len, dtype=torch.bool)
            pad[rows] = False
            assert torch.equal(text_before[pad], text_after[pad]), "padding rows untouched"
            if node == "alignment" and uncond:      # the negative prompt is what the positive is aligned to
                assert torch.equal(text_before, text_after)
            else:
                assert not torch.equal(text_before[rows], text_after[rows])
                checked += 1
    assert checked


@pytest.mark.parametrize("variant", VARIANTS)
def test_at_cfg_1_every_node_acts_and_alignment_runs_its_negative_reference_pass(tiny, nodes, variant):
    # Distilled Wan 2.2 samples at CFG 1: no uncond pass. Residual Alignment then runs the connected negative
    # prompt once more per step, with the variant's own conds (VACE frames, audio, reference latents) at batch 1.
    model = tiny(variant)
    base = sample_with(model, model.patcher, cfg=1.0)
    for node in ("temperature", "spacing", "alignment", "reweighting", "guidance"):
        extra = dict(negative=model.negative) if node == "alignment" else {}
        patched, _ = apply(nodes, node, model, model.patcher, **extra)
        out = sample_with(model, patched, cfg=1.0)
        assert not torch.equal(out, base), node
        assert torch.equal(sample_with(model, patched, cfg=1.0), out), node


@pytest.mark.parametrize("variant", ["wan_camera", "wan_animate"])
def test_without_clip_vision_the_text_cross_attention_is_still_the_one_acted_on(tiny, nodes, variant):
    # WanAnimateToVideo and the camera nodes take clip_vision_output as optional: without it the image branch of
    # each block attends to the text rows too, but it stays the image branch (its own projections); the text
    # cross-attention is the call after it.
    model = tiny(variant)

    def without_clip(cond):
        return [[cond[0][0], {k: v for k, v in cond[0][1].items() if k != "clip_vision_output"}]]

    model = dataclasses.replace(model, positive=without_clip(model.positive), negative=without_clip(model.negative))
    base = sample_with(model, model.patcher)
    for node in NODES:
        neutral, _ = apply(nodes, node, model, model.patcher, neutral=True)
        assert torch.equal(sample_with(model, neutral), base), node
        patched, handle = apply(nodes, node, model, model.patcher)
        out = sample_with(model, patched)
        assert torch.equal(out, base) if node == "inspector" else not torch.equal(out, base), node
    records = handle.snapshot().records
    assert {r.keys for r in records} == {model.text_len} and len(records) == model.double_blocks * STEPS
    assert not handle.snapshot().notes, "one text cross-attention per block and step, nothing left unrecorded"
    log = CallLog(model.double_blocks)
    patched, _ = apply(nodes, "reweighting", model, log.before(model.patcher))
    sample_with(model, log.after(patched))
    biased = {o.index for o, i in log.pairs() if i.q.shape[-1] > o.q.shape[-1]}
    assert biased == {text_call(model)}


NAMES = {"wan_vace": "Wan VACE", "wan_camera": "Wan Fun camera", "wan22_camera": "Wan Fun camera", "wan_humo": "Wan HuMo", "wan_animate": "Wan 2.2 Animate",
         "wan_fun_control": "Wan Fun with a reference image", "wan_s2v": "Wan 2.2 S2V"}


@pytest.mark.parametrize("variant", list(NAMES))
def test_a_preset_made_for_another_model_is_refused_naming_the_variant(tiny, nodes, variant):
    from tokenfocus.core.presets import OFFICIAL, WAN22_HIGH_NOISE

    model = tiny(variant)
    for preset in (OFFICIAL, WAN22_HIGH_NOISE):
        with pytest.raises(ValueError, match=f"this (model )?is {NAMES[variant]} "):
            apply(nodes, "temperature", model, model.patcher, preset=preset)


def test_the_high_noise_expert_preset_is_for_the_classes_that_come_as_a14b_experts(tiny, nodes):
    from tokenfocus.core.presets import WAN22_HIGH_NOISE

    vace = tiny("wan_vace", layers=40)          # Wan 2.2 VACE Fun A14B: two experts
    _, report = nodes["temperature"].execute(vace.patcher, gamma=GAMMA, blocks="all", start_percent=0.0, end_percent=1.0,
                                             preset=WAN22_HIGH_NOISE).args
    assert "sigma > 0.875" in report
    humo = tiny("wan_humo", layers=40)          # HuMo 17B: one model, no hand-over
    with pytest.raises(ValueError, match="is for Wan 2.2 A14B .*this model is Wan HuMo \\(40 blocks\\)"):
        apply(nodes, "temperature", humo, humo.patcher, preset=WAN22_HIGH_NOISE)


# Where each variant puts tokens of its own next to the video's frame grid (2 latent frames of 4 x 4 patches).
EXTRA_TOKENS = {"wan_humo": ("after", 16), "wan_s2v": ("after", 16), "wan_fun_control": ("before", 16)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_inspector_frame_grid_is_the_videos_tokens(tiny, nodes, variant):
    from tokenfocus.families import detect
    from tokenfocus.runtime.inspector import grid_offset

    model = tiny(variant)
    patched, handle = apply(nodes, "inspector", model, model.patcher)
    sample_with(model, patched)
    data = handle.snapshot()
    grid = (2, 4, 4)
    where, extra = EXTRA_TOKENS.get(variant, (None, 0))
    assert {r.image_queries for r in data.records} == {32 + extra}
    assert grid_offset(detect(model.patcher).profile.grid_layout, 32 + extra, grid) == (extra if where == "before" else 0)
    assert data.heat is not None and data.heat.calls == len(data.records)


# ------------------------------------------------------------------------------------------------- S2V


def test_s2v_is_served_where_its_blocks_get_transformer_options_and_refused_saying_why_where_not(comfy, nodes):
    import inspect

    from comfy.ldm.wan.model import WanModel_S2V
    from tokenfocus.families import detect

    model = tm.build("wan_s2v", any_host=True)
    if 'transformer_options=args["transformer_options"]' in inspect.getsource(WanModel_S2V.forward_orig):
        assert "Wan 2.2 S2V" in detect(model.patcher).profile.variant
        return
    for node in NODES:
        with pytest.raises(ValueError, match="Wan 2.2 S2V is not supported on this ComfyUI: .*transformer_options"):
            apply(nodes, node, model, model.patcher)
