"""Token Reweighting and Importance Guidance on ComfyUI's real model classes (tiny random weights, CPU)."""
import dataclasses

import pytest
import torch

import tiny_models as tm
from recorders import AttentionRecorder

STEPS = 4
FAMILIES = ["wan21_t2v", "wan21_i2v", "sd3", "flux", "hunyuan_video", "qwen_image", "chroma", "ltxv", "z_image", "lumina2", "flux2", "hunyuan_video_15",
            "hunyuan_image_21", "ltx2", "kandinsky5", "chroma_radiance"]
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


@pytest.mark.parametrize("family", ["wan21_t2v", "sd3", "flux", "qwen_image", "z_image", "ltx2"])
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


@pytest.mark.parametrize("family", ["wan21_t2v", "sd3", "ltx2"])
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


@pytest.mark.parametrize("threshold,expected", [(None, [4, 5]), (0.0, [1, 2, 3, 4, 5, 8]), (1.0, [4])])
def test_guidance_suppresses_only_the_top_of_the_weights_and_says_which(tiny, nodes, threshold, expected):
    from tokenfocus.core.importance import TokenWeights
    from tokenfocus.runtime.adapters import detect

    model = tiny("sd3")
    spread = [1.0, 1.1, 1.3, 1.6, 2.0, 1.9, 0.7, 1.0, 1.2]       # density-like: most content words above 1
    values = spread + [1.0] * (model.text_len - len(spread))
    labels = tuple(f"t{i}" for i in range(model.text_len))
    weights = TokenWeights(labels=labels, weights=tuple(values), real=tuple(i < len(spread) for i in range(model.text_len)),
                           encoder=detect(model.patcher).encoder, prompt="a test prompt")
    recorder = AttentionRecorder(model.double_blocks)
    kw = {} if threshold is None else {"threshold": threshold}
    patched, report = nodes[1].execute(recorder.before(model.patcher), weights, scale=1.5, start_percent=0.0,
                                       end_percent=1.0, **kw).args
    assert f"{len(expected)} of {len(spread)} prompt tokens" in report
    assert " ".join(f"t{i}({values[i]:.2f})" for i in expected) in report
    sample_with(model, recorder.after(patched))
    extra_pass = [(o, i) for o, i in recorder.pairs() if o.q.shape[0] == 1]
    assert extra_pass
    heads = q_heads(model)
    for outer, inner in extra_pass:
        d = outer.k.shape[-1] // heads
        padded = inner.k.shape[-1] // heads
        key_bias = inner.k.view(1, inner.k.shape[1], heads, padded)[0, :model.text_len, 0, d]
        assert (key_bias < -1.0).nonzero().flatten().tolist() == expected


def test_guidance_threshold_out_of_range_is_an_error(tiny, nodes):
    model = tiny("sd3")
    with pytest.raises(ValueError, match="threshold"):
        nodes[1].execute(model.patcher, weights_for(model, nodes), scale=1.0, start_percent=0.0, end_percent=0.5, threshold=1.5)


# ------------------------------------------------------------------------------ regional token weights


def heads_view(t, heads):
    return t if t.ndim == 4 else t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


def text_shares(q, k, heads, text_cols, image_queries):
    """[queries]: the share of each image query's attention (mean over heads) on the weighted text keys,
    from q and k as given (the folded ones carry the bias: softmax of q'k'/sqrt(d') is what the backend computes)."""
    q4, k4 = heads_view(q, heads).double(), heads_view(k, heads).double()
    probs = torch.softmax(q4 @ k4.transpose(-1, -2) / q4.shape[-1] ** 0.5, dim=-1)
    return probs[:, :, image_queries][..., text_cols].sum(-1).mean(1)


@pytest.mark.parametrize("family", ["wan21_t2v", "sd3", "flux", "hunyuan_video", "ltx2"])
def test_regional_weights_act_inside_the_mask_only(tiny, nodes, family):
    from tokenfocus.core.attention_stats import token_grid
    from tokenfocus.runtime.adapters import detect
    from tokenfocus.runtime.inspector import patch_of

    model = tiny(family)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0                      # the left half of the picture
    recorder = AttentionRecorder(model.double_blocks, model.single_blocks)
    patched, report = reweight(nodes, model, weights_for(model, nodes), patcher=recorder.before(model.patcher), mask=mask)
    assert "inside the mask" in report
    out = sample_with(model, recorder.after(patched))
    base = sample_with(model, model.patcher)
    assert not torch.equal(out, base)

    patch = detect(model.patcher).profile.patch or patch_of(model.patcher.get_model_object("diffusion_model"))
    grid = token_grid(tuple(model.latent["samples"].shape), patch)     # LTX-2: the video latent's grid
    n_image = grid[0] * grid[1] * grid[2]
    inside = torch.tensor([(i % grid[2]) < grid[2] // 2 for i in range(n_image)])
    text_call = 1 if model.joint_order is None else 0
    outer, inner = next((o, i) for o, i in recorder.pairs() if o.block == ("double_block", 0) and o.index == text_call)
    heads = 2 if model.joint_order is None else q_heads(model)
    if model.joint_order is None:
        cols, queries = list(WEIGHTED_ROWS), slice(None)
    elif model.joint_order == "txt_img":
        cols, queries = list(WEIGHTED_ROWS), slice(model.text_len, None)
    else:
        cols, queries = [n_image + r for r in WEIGHTED_ROWS], slice(0, n_image)
    assert inner.backend == outer.backend, "the same attention function, no slower kernel"
    cond = 1 if heads_view(outer.q, heads).shape[0] == 2 else 0
    reference = text_shares(outer.q, outer.k, heads, cols, queries)[cond]
    weighted = text_shares(inner.q, inner.k, heads, cols, queries)[cond]
    assert reference.shape[0] == n_image
    assert bool((weighted[inside] > reference[inside] * 1.5).all()), "the weighted tokens' share rises inside the mask"
    assert torch.allclose(weighted[~inside], reference[~inside], rtol=1e-4, atol=1e-6), "unchanged outside the mask"


def test_an_empty_mask_is_neutral_and_a_video_mask_must_fit(tiny, nodes):
    model = tiny("wan21_t2v")
    patched, report = reweight(nodes, model, weights_for(model, nodes), mask=torch.zeros(1, 16, 16))
    assert "unchanged" in report and patched is model.patcher
    patched, _ = reweight(nodes, model, weights_for(model, nodes), mask=torch.ones(3, 16, 16))   # 2 latent frames: 1, 2 or 5 fit
    with pytest.raises(ValueError, match="the mask has 3 frames"):
        sample_with(model, patched)
    with pytest.raises(ValueError, match="one frame"):
        reweight(nodes, tiny("sd3"), weights_for(tiny("sd3"), nodes), mask=torch.ones(2, 16, 16))


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


def guide(nodes, patcher, weights, scale=1.5):
    return nodes[1].execute(patcher, weights, scale=scale, start_percent=0.0, end_percent=1.0).args


@pytest.mark.parametrize("family", FAMILIES)
def test_importance_guidance_acts_on_every_family_with_the_usual_guarantees(tiny, nodes, family):
    """Scale 0 is bit-identical, a real scale changes the output, the same graph twice gives the same output,
    the input model is untouched, an attention override placed after it still runs (and it still acts), and
    weights of another row count are an error before the model runs."""
    import comfy.patcher_extension as ext
    from foreign_packs import CountingKernel, kjnodes_style_sage

    model = tiny(family)
    options = repr(model.patcher.model_options)
    base = sample_with(model, model.patcher)
    neutral, _ = guide(nodes, model.patcher, weights_for(model, nodes), scale=0.0)
    assert torch.equal(sample_with(model, neutral), base), "scale 0 is the unguided output, bit for bit"
    patched, _ = guide(nodes, model.patcher, weights_for(model, nodes))
    out = sample_with(model, patched)
    assert not torch.equal(out, base), "a real scale changes the output"
    assert torch.equal(sample_with(model, patched), out), "the same graph twice gives the same output"
    assert repr(model.patcher.model_options) == options and torch.equal(sample_with(model, model.patcher), base)

    kernel = CountingKernel()
    foreign_only = sample_with(model, kjnodes_style_sage(model.patcher, CountingKernel()))
    both = sample_with(model, kjnodes_style_sage(patched, kernel))
    assert kernel.calls, "the foreign override still runs"
    assert (both - foreign_only).abs().max() > 1e-6, "Importance Guidance still acts"

    wrong, _ = guide(nodes, model.patcher, weights_for(model, nodes, rows=model.text_len + 5))
    ran = []
    watched = wrong.clone()
    watched.add_wrapper_with_key(ext.WrappersMP.APPLY_MODEL, "test-ran", lambda executor, *a, **k: ran.append(1) or executor(*a, **k))
    with pytest.raises(ValueError, match="rows"):
        sample_with(model, watched)
    assert not ran, "the error comes before the first step"
