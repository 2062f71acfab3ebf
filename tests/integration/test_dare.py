"""Token Reweighting and Importance Guidance on ComfyUI's real model classes (tiny random weights, CPU)."""
import dataclasses

import pytest
import torch

import tiny_models as tm
from recorders import AttentionRecorder

STEPS = 4
FAMILIES = ["wan21_t2v", "wan21_i2v", "sd3", "flux", "hunyuan_video", "qwen_image", "chroma", "ltxv", "z_image", "lumina2", "flux2", "hunyuan_video_15",
            "hunyuan_image_21"]
WEIGHTED_ROWS = (1, 3)      # two prompt tokens made important


@pytest.fixture(scope="module")
def nodes(comfy):
    from tokenfocus.nodes.dare import ImportanceGuidanceNode, TokenReweightNode
    return TokenReweightNode, ImportanceGuidanceNode


def weights_for(model, nodes, weight=3.0, rows=None):
    from tokenfocus.core.importance import TokenWeights
    from tokenfocus.runtime.adapters import detect

    n = model.text_len if rows is None else rows
    values = [weight if i in WEIGHTED_ROWS else 1.0 for i in range(n)]
    return TokenWeights(labels=tuple(f"t{i}" for i in range(n)), weights=tuple(values), real=tuple(i < model.real_tokens for i in range(n)),
                        encoder=detect(model.patcher).encoder, prompt="a test prompt")


def reweight(nodes, model, weights, patcher=None, **kw):
    args = dict(strength=1.0, blocks="all", start_percent=0.0, end_percent=1.0)
    args.update(kw)
    return nodes[0].execute(patcher or model.patcher, weights, **args).args


def sample_with(model, patcher, **kw):
    return tm.sample(dataclasses.replace(model, patcher=patcher), steps=STEPS, **kw)


def q_heads(model):
    return model.double_blocks if model.family.startswith("sd3") else 2   # MMDiT: heads = depth


def weighted_share(call, model, text_first):
    """Share of attention the image queries of the first (cond) sample give the weighted rows, computed on
    the side from the q/k the backend received (the bias is folded into them)."""
    q, k, heads = call.q, call.k, 2 if model.joint_order is None else q_heads(model)
    q4 = q if q.ndim == 4 else q.view(q.shape[0], q.shape[1], heads, -1).transpose(1, 2)
    k4 = k if k.ndim == 4 else k.view(k.shape[0], k.shape[1], heads, -1).transpose(1, 2)
    probs = torch.softmax(q4.double() @ k4.double().transpose(-1, -2) / q4.shape[-1] ** 0.5, dim=-1)
    if model.joint_order is None:
        cols, image_queries = list(WEIGHTED_ROWS), slice(None)
    else:
        n_txt = model.text_tokens     # Z-Image pads its text inside the model
        offset = 0 if model.joint_order == "txt_img" else k4.shape[2] - n_txt
        cols = [offset + r for r in WEIGHTED_ROWS]
        image_queries = slice(n_txt, None) if model.joint_order == "txt_img" else slice(0, k4.shape[2] - n_txt)
    cond = 1 if q4.shape[0] == 2 else 0     # batched chunks are [uncond, cond]
    return float(probs[cond, :, image_queries][..., cols].sum(-1).mean())


@pytest.mark.parametrize("family", FAMILIES)
def test_neutral_weights_are_bit_identical_and_real_ones_act(tiny, nodes, family):
    model = tiny(family)
    base = sample_with(model, model.patcher)
    patched, report = reweight(nodes, model, weights_for(model, nodes, weight=1.0))
    assert "unchanged" in report and torch.equal(sample_with(model, patched), base)
    patched, _ = reweight(nodes, model, weights_for(model, nodes), strength=0.0)
    assert torch.equal(sample_with(model, patched), base)
    patched, _ = reweight(nodes, model, weights_for(model, nodes))
    assert not torch.equal(sample_with(model, patched), base)
    assert torch.equal(sample_with(model, model.patcher), base)


@pytest.mark.parametrize("family", ["wan21_t2v", "sd3", "flux", "qwen_image", "z_image"])
def test_share_of_the_weighted_tokens_rises_with_strength(tiny, nodes, family):
    model = tiny(family)
    shares = []
    for strength in (0.0, 1.0, 2.0):
        recorder = AttentionRecorder(model.double_blocks, model.single_blocks)
        patched, _ = reweight(nodes, model, weights_for(model, nodes), patcher=recorder.before(model.patcher), strength=strength)
        patched = patched if strength else recorder.before(model.patcher)
        sample_with(model, recorder.after(patched))
        text_call = 1 if model.joint_order is None else 0
        first = next(i for o, i in recorder.pairs() if o.block == ("double_block", 0) and o.index == text_call)
        shares.append(weighted_share(first, model, model.joint_order))
    assert shares[0] < shares[1] < shares[2], shares


def test_wan_i2v_image_keys_and_uncond_are_untouched(tiny, nodes):
    model = tiny("wan21_i2v")
    recorder = AttentionRecorder(model.double_blocks)
    patched, _ = reweight(nodes, model, weights_for(model, nodes), patcher=recorder.before(model.patcher))
    sample_with(model, recorder.after(patched))
    for outer, inner in recorder.pairs():
        if outer.index in (0, 1):
            assert torch.equal(outer.q, inner.q) and torch.equal(outer.k, inner.k), "self and CLIP-image calls untouched"
        else:
            assert inner.q.shape[-1] > outer.q.shape[-1], "the text call carries the folded bias"


def test_weights_of_another_length_fail_before_sampling(tiny, nodes):
    model = tiny("wan21_t2v")
    patched, _ = reweight(nodes, model, weights_for(model, nodes, rows=77))
    with pytest.raises(ValueError, match="positive conditioning has 512"):
        tm.sample(dataclasses.replace(model, patcher=patched), steps=STEPS, sampler="euler")


def test_weights_from_another_encoder_are_an_error(tiny, nodes):
    model = tiny("flux")
    wrong = dataclasses.replace(weights_for(model, nodes), encoder="umt5xxl")
    with pytest.raises(ValueError, match="'t5xxl'"):
        reweight(nodes, model, wrong)


def count_model_calls(patcher):
    import comfy.patcher_extension as ext

    calls = []
    counted = patcher.clone()

    def wrapper(executor, x, t, *args, **kwargs):
        calls.append(float(t.reshape(-1)[0]))
        return executor(x, t, *args, **kwargs)

    counted.add_wrapper_with_key(ext.WrappersMP.APPLY_MODEL, "test-counter", wrapper)
    return counted, calls


@pytest.mark.parametrize("family", ["wan21_t2v", "sd3"])
def test_guidance_adds_one_pass_only_inside_its_range(tiny, nodes, family):
    model = tiny(family)
    base_counted, base_calls = count_model_calls(model.patcher)
    base = sample_with(model, base_counted)
    patched, _ = nodes[1].execute(model.patcher, weights_for(model, nodes), scale=1.5, start_percent=0.0, end_percent=0.5).args
    counted, calls = count_model_calls(patched)
    out = sample_with(model, counted)
    sigma_end = float(model.patcher.get_model_object("model_sampling").percent_to_sigma(0.5))
    per_sigma = {s: calls.count(s) - base_calls.count(s) for s in set(base_calls)}
    assert all(extra == (1 if s > sigma_end else 0) for s, extra in per_sigma.items()), per_sigma
    assert any(per_sigma.values()) and not torch.equal(out, base)
    neutral, report = nodes[1].execute(model.patcher, weights_for(model, nodes), scale=0.0, start_percent=0.0, end_percent=0.5).args
    assert torch.equal(sample_with(model, neutral), base), "scale 0 is plain CFG"


def test_guidance_extra_pass_runs_the_model_as_patched(tiny, nodes):
    from tokenfocus.nodes.attention_temperature import AttentionTemperatureNode
    from recorders import scaled_by

    model = tiny("sd3")
    recorder = AttentionRecorder(model.double_blocks)
    warm = AttentionTemperatureNode.execute(recorder.before(model.patcher), gamma=1.35, blocks="0", start_percent=0.0, end_percent=1.0).args[0]
    patched, _ = nodes[1].execute(warm, weights_for(model, nodes), scale=1.5, start_percent=0.0, end_percent=1.0).args
    sample_with(model, recorder.after(patched))
    block0 = [(o, i) for o, i in recorder.pairs() if o.block == ("double_block", 0)]
    single_sample_calls = [(o, i) for o, i in block0 if o.q.shape[0] == 1]      # the extra (cond only) pass
    assert single_sample_calls, "the extra pass ran"
    heads = q_heads(model)
    for outer, inner in single_sample_calls:
        b, length, width = outer.q.shape
        d = width // heads
        padded = inner.q.shape[-1] // heads
        assert padded > d, "important tokens suppressed by the folded bias"
        unfolded = inner.q.view(b, length, heads, padded)[..., :d]
        assert scaled_by(outer.q.view(b, length, heads, d), unfolded, 1.35), "temperature still applied in the extra pass"


@pytest.mark.parametrize("family", ["flux2", "z_image", "hunyuan_video_15", "hunyuan_image_21"])
def test_weights_land_on_the_prompt_rows_where_the_model_pads_the_text_itself(tiny, nodes, family):
    """Flux.2's conditioning sits after the zero rows ComfyUI puts in front of it, Z-Image's before the pad
    rows the model appends, HunyuanVideo 1.5's after the vision and ByT5 rows, HunyuanImage 2.1's before its
    ByT5 rows: the weights (one per conditioning row) bias exactly the prompt's keys."""
    model = tiny(family)
    recorder = AttentionRecorder(model.double_blocks, model.single_blocks)
    patched, _ = reweight(nodes, model, weights_for(model, nodes), patcher=recorder.before(model.patcher))
    sample_with(model, recorder.after(patched))
    first = next(i for o, i in recorder.pairs() if o.block == ("double_block", 0))
    d = first.q.shape[-1] - 8                                   # the bias is folded into 8 extra head dims
    cond = 1 if first.q.shape[0] == 2 else 0                    # batched [uncond, cond], or cond first alone
    bias_column = first.k[cond, 0, :, d]
    prompt = model.prompt_rows()
    text_start = 0 if model.joint_order == "txt_img" else first.k.shape[2] - model.text_tokens   # [img; txt]
    expected = [text_start + prompt.start + r for r in WEIGHTED_ROWS]
    assert bias_column.nonzero().flatten().tolist() == expected
