"""Attention Temperature on ComfyUI's real model classes (tiny random weights, CPU)."""
import dataclasses

import pytest
import torch

import tiny_models as tm
from recorders import AttentionRecorder, scaled_by

GAMMA = 1.35
STEPS = 4

# family -> (blocks to select, the selected (kind, index) pairs, the attention call index scaled by default)
CASES = {
    "wan21_t2v": ("0,2", {("double_block", 0), ("double_block", 2)}, {1}),          # text cross-attention
    "wan21_i2v": ("1", {("double_block", 1)}, {1, 2}),                              # image and text cross
    "wan22_ti2v_5b": ("0-1", {("double_block", 0), ("double_block", 1)}, {1}),
    "sd3": ("1", {("double_block", 1)}, {0}),                                       # joint
    "sd35_medium": ("0,2", {("double_block", 0), ("double_block", 2)}, {0}),        # joint, not the x self-attn
    "flux": ("1,s0", {("double_block", 1), ("single_block", 0)}, {0}),
    "hunyuan_video": ("0,s1", {("double_block", 0), ("single_block", 1)}, {0}),
    "qwen_image": ("1", {("double_block", 1)}, {0}),                                # joint, [B, L, H*D]
    "chroma": ("0,s1", {("double_block", 0), ("single_block", 1)}, {0}),
    "chroma_radiance": ("0,s1", {("double_block", 0), ("single_block", 1)}, {0}),   # Chroma's blocks on pixels
    "ltxv": ("1", {("double_block", 1)}, {1}),                                      # text cross-attention
    "ltx2": ("1", {("double_block", 1)}, {1}),                   # the video's text cross-attention, not the audio's
    "kandinsky5": ("1", {("double_block", 1)}, {1}),             # marked by the model; self, then text cross
    "z_image": ("1", {("double_block", 1)}, {0}),                                   # marked by the model itself
    "lumina2": ("0", {("double_block", 0)}, {0}),                                   # grouped-query attention
    "flux2": ("0,s1", {("double_block", 0), ("single_block", 1)}, {0}),
    "hunyuan_video_15": ("1,s0", {("double_block", 1), ("single_block", 0)}, {0}),
    "hunyuan_image_21": ("0,s1", {("double_block", 0), ("single_block", 1)}, {0}),
}


@pytest.fixture(scope="module")
def node(comfy):
    from tokenfocus.nodes.attention_temperature import AttentionTemperatureNode
    return AttentionTemperatureNode


def run(node, patcher, **settings):
    args = dict(gamma=GAMMA, blocks="all", start_percent=0.0, end_percent=1.0)
    args.update(settings)
    model, report = node.execute(patcher, **args).args
    return model, report


def sample_with(model, patcher, **kwargs):
    return tm.sample(dataclasses.replace(model, patcher=patcher), steps=STEPS, **kwargs)


def active_sigma_limit(model, end_percent):
    return float(model.patcher.get_model_object("model_sampling").percent_to_sigma(end_percent))


@pytest.mark.parametrize("family", list(CASES))
def test_scales_exactly_the_chosen_blocks_steps_and_calls(tiny, node, family):
    model = tiny(family)
    blocks, selected, scaled_calls = CASES[family]
    recorder = AttentionRecorder(model.double_blocks, model.single_blocks, block_patches=model.block_patches_work)
    patched, report = run(node, recorder.before(model.patcher), blocks=blocks, start_percent=0.0, end_percent=0.5)
    sample_with(model, recorder.after(patched))
    sigma_end = active_sigma_limit(model, 0.5)

    touched, untouched_by_step = set(), 0
    for outer, inner in recorder.pairs():
        expected = outer.block in selected and outer.sigma > sigma_end and outer.index in scaled_calls
        assert inner.backend == outer.backend, "the backend ComfyUI chose must stay in use"
        assert torch.equal(inner.k, outer.k)
        if expected:
            assert scaled_by(outer.q, inner.q, GAMMA), (outer.block, outer.index, outer.sigma)
            touched.add(outer.block)
        else:
            assert torch.equal(inner.q, outer.q), (outer.block, outer.index, outer.sigma)
            untouched_by_step += outer.block in selected and outer.sigma <= sigma_end
    assert touched == selected
    assert untouched_by_step > 0, "the late steps must have run untouched"
    assert recorder.inner_runs > 0, "the override installed before TokenFocus must still run"


@pytest.mark.parametrize("family", list(CASES))
def test_neutral_settings_are_bit_identical_and_active_ones_differ(tiny, node, family):
    model = tiny(family)
    base = sample_with(model, model.patcher)
    for neutral in (dict(gamma=1.0), dict(blocks=""), dict(start_percent=0.4, end_percent=0.4)):
        patched, report = run(node, model.patcher, **neutral)
        assert "unchanged" in report
        assert torch.equal(sample_with(model, patched), base), neutral
    patched, _ = run(node, model.patcher)
    assert not torch.equal(sample_with(model, patched), base)
    assert torch.equal(sample_with(model, model.patcher), base), "the input model must be untouched"


def test_input_model_options_are_left_alone(tiny, node):
    model = tiny("flux")
    before = repr(model.patcher.model_options)
    patched, _ = run(node, model.patcher, blocks="0,s1")
    assert repr(model.patcher.model_options) == before
    assert patched is not model.patcher


def test_same_graph_twice_gives_the_same_result(tiny, node):
    model = tiny("wan21_t2v")
    patched, _ = run(node, model.patcher)
    assert torch.equal(sample_with(model, patched), sample_with(model, patched))


@pytest.mark.parametrize("toggles, scaled_calls", [
    (dict(self_attention=True, text_cross_attention=False, image_cross_attention=False), {0}),
    (dict(text_cross_attention=False), {1}),
    (dict(image_cross_attention=False), {2}),
])
def test_wan_i2v_attention_kinds_are_told_apart(tiny, node, toggles, scaled_calls):
    model = tiny("wan21_i2v")
    recorder = AttentionRecorder(model.double_blocks)
    patched, _ = run(node, recorder.before(model.patcher), **toggles)
    sample_with(model, recorder.after(patched))
    seen = set()
    for outer, inner in recorder.pairs():
        if outer.index == 1:
            assert outer.k.shape[1] == tm.CLIP_VISION_TOKENS, "call 1 is the CLIP image branch"
        if not torch.equal(inner.q, outer.q):
            assert scaled_by(outer.q, inner.q, GAMMA)
            seen.add(outer.index)
    assert seen == scaled_calls


def test_scale_on_key_and_both(tiny, node):
    model = tiny("sd3")
    for scale_on, (qf, kf) in {"key": (1.0, GAMMA), "both": (GAMMA, GAMMA)}.items():
        recorder = AttentionRecorder(model.double_blocks)
        patched, _ = run(node, recorder.before(model.patcher), scale_on=scale_on, blocks="0")
        sample_with(model, recorder.after(patched))
        pairs = [(o, i) for o, i in recorder.pairs() if o.block == ("double_block", 0)]
        assert pairs and all(scaled_by(o.q, i.q, qf) and scaled_by(o.k, i.k, kf) for o, i in pairs)


def test_second_node_joins_the_same_runtime(tiny, node):
    from tokenfocus.runtime.hooks import AttentionHook, BlockHook

    model = tiny("wan21_t2v")
    recorder = AttentionRecorder(model.double_blocks)
    first, _ = run(node, recorder.before(model.patcher), blocks="0-1")
    second, _ = run(node, first, blocks="1-2", gamma=1.2)
    options = second.model_options["transformer_options"]
    hook = options["optimized_attention_override"]
    assert isinstance(hook, AttentionHook) and not isinstance(hook.inner, AttentionHook)
    assert all(not isinstance(p.inner, BlockHook) for p in options["patches_replace"]["dit"].values())
    assert len(options["tokenfocus"].interventions) == 2
    sample_with(model, recorder.after(second))
    expected = {0: GAMMA, 1: GAMMA * 1.2, 2: 1.2}
    for outer, inner in recorder.pairs():
        if outer.index == 1:
            assert scaled_by(outer.q, inner.q, expected[outer.block[1]])


def test_adaptive_mode_changes_the_output_and_is_neutral_at_gamma_one(tiny, node):
    model = tiny("sd3")
    base = sample_with(model, model.patcher)
    adaptive, report = run(node, model.patcher, adaptive=True)
    assert "adaptive" in report
    assert not torch.equal(sample_with(model, adaptive), base)
    neutral, _ = run(node, model.patcher, adaptive=True, gamma=1.0)
    assert torch.equal(sample_with(model, neutral), base)


def test_the_former_paper_label_still_loads_and_means_the_early_window(tiny, node):
    model = tiny("flux")
    patched, report = run(node, model.patcher, preset="AlignVid paper", gamma=2.5, end_percent=1.0, blocks="0")
    iv = patched.model_options["transformer_options"]["tokenfocus"].interventions[0]
    assert iv.factors["joint"] == (2.5, 1.0), "a window preset keeps the user's gamma and switches"
    assert iv.steps.contains(0.95) and not iv.steps.contains(0.9)
    assert "is now called 'AlignVid window: early" in report


@pytest.mark.parametrize("settings, message", [
    (dict(blocks="0,,2"), "empty item"),
    (dict(blocks="1-x"), "not a block index"),
    (dict(blocks="0-3"), "past the model's depth"),
    (dict(blocks="s0"), "single-block"),
    (dict(start_percent=0.6, end_percent=0.2), "after end_percent"),
    (dict(joint_attention=False, text_cross_attention=False, image_cross_attention=False, self_attention=False), "at least one"),
    (dict(preset="AlignVid official Wan2.1 i2v code"), "40-block"),
])
def test_bad_input_is_a_clear_error_when_the_node_runs(tiny, node, settings, message):
    model = tiny("wan21_t2v")
    with pytest.raises(ValueError, match=message):
        run(node, model.patcher, **settings)


def test_a_kind_the_model_lacks_is_an_error(tiny, node):
    model = tiny("sd3")
    with pytest.raises(ValueError, match="has no"):
        run(node, model.patcher, joint_attention=False, self_attention=False)


def test_composes_with_comfyui_skip_layer_guidance(tiny, node):
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT

    model = tiny("sd3")
    slg = lambda p: SkipLayerGuidanceDiT.execute(p, scale=3.0, start_percent=0.0, end_percent=1.0, double_layers="1", single_layers="").args[0]
    ours = lambda p: run(node, p, blocks="0-1")[0]
    base = sample_with(model, model.patcher)
    slg_only, ours_only = sample_with(model, slg(model.patcher)), sample_with(model, ours(model.patcher))
    for chained in (ours(slg(model.patcher)), slg(ours(model.patcher))):
        out = sample_with(model, chained)
        assert torch.isfinite(out).all()
        assert not torch.equal(out, slg_only) and not torch.equal(out, ours_only) and not torch.equal(out, base)
        assert torch.equal(out, sample_with(model, chained))


def test_a_run_where_no_block_reached_the_hooks_says_so(tiny, node, caplog):
    import logging

    model = tiny("flux")
    patched, _ = run(node, model.patcher, blocks="0")
    # Stand-in for a pack that runs its own forward without transformer_options (as TeaCache does): a
    # block patch installed after ours that calls the original block directly, bypassing our hook.
    bypass = patched.clone()
    bypass.set_model_patch_replace(lambda args, extra: extra["original_block"](args), "dit", "double_block", 0)
    with caplog.at_level(logging.WARNING, logger="TokenFocus"):
        sample_with(model, bypass)
    assert any("no transformer block ran through" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="TokenFocus"):
        sample_with(model, patched)
    assert not any("no transformer block ran through" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("family", ["wan21_t2v", "sd35_medium", "flux"])
def test_an_inner_override_that_calls_attention_again_is_edited_once(tiny, node, family):
    # A foreign override installed before TokenFocus that routes its call back through ComfyUI's
    # optimized_attention with the options it was handed: TokenFocus must not scale q a second time.
    from comfy.ldm.modules.attention import optimized_attention

    depth = []

    def reentrant(func, *args, **kwargs):
        if depth:
            return func(*args, **kwargs)
        depth.append(1)
        try:
            kwargs.pop("_inside_attn_wrapper", None)
            return optimized_attention(*args, **kwargs)   # back through the override chain, same options
        finally:
            depth.pop()

    model = tiny(family)
    expected = sample_with(model, run(node, model.patcher)[0])
    foreign = model.patcher.clone()
    foreign.model_options["transformer_options"]["optimized_attention_override"] = reentrant
    assert torch.equal(sample_with(model, run(node, foreign)[0]), expected)
