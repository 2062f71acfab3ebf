"""Attention Inspector on ComfyUI's real model classes (tiny random weights, CPU): it changes nothing, its
numbers are the attention the backend computes, it shows what the other TokenFocus nodes change, and its
pictures have the sizes they should."""
import copy
import dataclasses

import pytest
import torch

import tiny_models as tm
from recorders import AttentionRecorder

STEPS = 3
FAMILIES = ["wan21_t2v", "wan21_i2v", "wan22_ti2v_5b", "sd3", "sd35_medium", "flux", "hunyuan_video", "qwen_image", "chroma", "ltxv",
            "z_image", "lumina2", "flux2", "hunyuan_video_15", "hunyuan_image_21",
            "ltx2", "kandinsky5", "chroma_radiance"]
WEIGHTED_ROWS = (1, 3)


@pytest.fixture(scope="module")
def nodes(comfy):
    from tokenfocus.nodes.attention_temperature import AttentionTemperatureNode
    from tokenfocus.nodes.dare import TokenReweightNode
    from tokenfocus.nodes.inspector import AttentionInspectorNode, AttentionInspectorViewNode

    return SimpleNodes(AttentionInspectorNode, AttentionInspectorViewNode, TokenReweightNode, AttentionTemperatureNode)


@dataclasses.dataclass
class SimpleNodes:
    inspector: type
    view: type
    reweight: type
    temperature: type


def inspect(nodes, patcher, **kw):
    args = dict(blocks="all", start_percent=0.0, end_percent=1.0, queries=16, heatmaps=True, prompt="positive")
    args.update(kw)
    patched, handle, report = nodes.inspector.execute(patcher, **args).args
    return patched, handle


def sample_with(model, patcher, **kw):
    return tm.sample(dataclasses.replace(model, patcher=patcher), steps=STEPS, **kw)


def token_weights(model, nodes, weight=3.0, labels=None):
    from tokenfocus.core.importance import TokenWeights
    from tokenfocus.runtime.adapters import detect

    n = model.text_len
    values = [weight if i in WEIGHTED_ROWS else 1.0 for i in range(n)]
    labels = labels or tuple(f"▁t{i}" if i < model.real_tokens else "<pad>" for i in range(n))
    return TokenWeights(labels=labels, weights=tuple(values), real=tuple(i < model.real_tokens for i in range(n)),
                        encoder=detect(model.patcher).encoder, prompt="a test prompt")


def text_call_index(model):
    if model.joint_order is not None:
        return 0
    return 2 if model.family == "wan21_i2v" else 1


def heads_of(model):
    return model.double_blocks if model.family.startswith("sd3") else 2


def as_heads(t, heads):
    return t if t.ndim == 4 else t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


# ---------------------------------------------------------------------------------------------- harmless


@pytest.mark.parametrize("family", FAMILIES)
def test_output_is_bit_identical_with_the_inspector_on(tiny, nodes, family):
    model = tiny(family)
    base = sample_with(model, model.patcher)
    patched, handle = inspect(nodes, model.patcher)
    assert torch.equal(sample_with(model, patched), base)
    data = handle.snapshot()
    assert data.records and data.heat is not None and data.heat.calls == len(data.records)
    kinds = {r.kind for r in data.records}
    assert kinds == ({"joint"} if model.joint_order else {"cross_text"})
    # the negative prompt, every image query, no heatmaps: still bit-identical
    patched, handle = inspect(nodes, model.patcher, prompt="negative", queries=4096, heatmaps=False)
    assert torch.equal(sample_with(model, patched), base)
    assert handle.snapshot().records and handle.snapshot().heat is None


def test_the_model_clones_share_one_recorder(tiny, nodes):
    from tokenfocus.runtime.install import config_of

    model = tiny("flux")
    patched, handle = inspect(nodes, model.patcher)
    assert config_of(patched.clone()).interventions[-1].recorder is handle
    assert copy.deepcopy(handle) is handle


# ---------------------------------------------------------------------------------------------- the numbers


@pytest.mark.parametrize("family", ["wan21_t2v", "wan21_i2v", "sd3", "flux", "hunyuan_video"])
def test_shares_sum_to_one_per_query_over_the_text_keys(tiny, nodes, family):
    model = tiny(family)
    patched, handle = inspect(nodes, model.patcher)
    sample_with(model, patched)
    records = handle.snapshot().records
    assert len(records) == (model.double_blocks + model.single_blocks) * STEPS
    for r in records:
        assert r.shares.shape == (model.text_len,)
        assert torch.allclose(r.shares.sum(), torch.tensor(1.0), atol=1e-5)
        assert len(r.queries) == 16 < r.image_queries
        if model.joint_order is None:      # cross-attention: every key is text, per query
            assert torch.allclose(r.query_text_mass, torch.ones(16), atol=1e-5)
            assert torch.allclose(r.attention, r.shares, atol=1e-6)
            assert r.keys == model.text_len
        else:                              # joint: the text gets part of each query's attention
            assert ((r.query_text_mass > 0) & (r.query_text_mass < 1)).all()
            assert torch.allclose(r.attention.sum(), r.query_text_mass.mean(), atol=1e-5)


def reference_for(record, inner_calls, model):
    """The record's numbers recomputed from the full attention map of the q/k the backend received."""
    from tokenfocus.core.attention_stats import reference_text_attention

    index = text_call_index(model)
    matching = [c for c in inner_calls if c.block == record.block and c.index == index and c.sigma == record.sigma
                and as_heads(c.k, heads_of(model)).shape[2] == record.keys]
    assert len(matching) == 1, (record.block, record.sigma, len(matching))
    call = matching[0]
    q = as_heads(call.q, heads_of(model))[record.sample]
    k = as_heads(call.k, heads_of(model))[record.sample]
    n_text = model.text_len
    if model.joint_order is None:
        text, image_start = slice(0, k.shape[1]), 0
    elif model.joint_order == "txt_img":
        text, image_start = slice(0, n_text), n_text
    else:
        text, image_start = slice(k.shape[1] - n_text, k.shape[1]), 0
    return reference_text_attention(q[:, image_start + record.queries], k, text)


@pytest.mark.parametrize("family", ["wan21_t2v", "wan21_i2v", "sd3", "flux", "hunyuan_video", "ltx2"])
@pytest.mark.parametrize("after_reweighting", [False, True])
def test_records_match_a_reference_attention_computed_on_the_side(tiny, nodes, family, after_reweighting):
    """The inner recorder sees q/k as the backend receives them (for the reweighted model, with the key bias
    folded in): the inspector, which saw the bias still pending, must give the same numbers."""
    model = tiny(family)
    recorder = AttentionRecorder(model.double_blocks, model.single_blocks)
    patcher = recorder.before(model.patcher)
    if after_reweighting:
        patcher, _ = nodes.reweight.execute(patcher, token_weights(model, nodes), strength=1.0, blocks="all",
                                            start_percent=0.0, end_percent=1.0).args
    patched, handle = inspect(nodes, patcher)
    sample_with(model, recorder.after(patched))
    inner = [i for _, i in recorder.pairs()]
    records = handle.snapshot().records
    assert records
    for r in records:
        ref = reference_for(r, inner, model)
        assert torch.allclose(r.attention.double(), ref.probs.mean(0), atol=1e-5)
        assert torch.allclose(r.shares.double(), ref.shares.mean(0), atol=1e-5)
        assert torch.allclose(r.query_text_mass.double(), ref.text_mass, atol=1e-5)
        assert r.entropy == pytest.approx(float(ref.entropy.mean()), abs=1e-4)


# ---------------------------------------------------------------------------------------------- before / after


def paired(before, after):
    """Records of two inspectors in one run, paired by (block, sigma, sample)."""
    at = {(r.block, round(r.sigma, 6)): r for r in before.snapshot().records}
    pairs = [(at[(r.block, round(r.sigma, 6))], r) for r in after.snapshot().records]
    assert pairs and len(pairs) == len(at)
    return pairs


@pytest.mark.parametrize("family", ["wan21_t2v", "flux", "hunyuan_video"])
def test_around_token_reweighting_the_weighted_tokens_share_rises(tiny, nodes, family):
    model = tiny(family)
    patched, before = inspect(nodes, model.patcher)
    weights = token_weights(model, nodes)
    patched, _ = nodes.reweight.execute(patched, weights, strength=2.0, blocks="all", start_percent=0.0,
                                        end_percent=1.0).args
    patched, after = inspect(nodes, patched, token_weights=weights)
    sample_with(model, patched)
    rows = list(WEIGHTED_ROWS)
    for b, a in paired(before, after):
        assert float(a.shares[rows].sum()) > float(b.shares[rows].sum())
    # The view says so in words too.
    summary = nodes.view.execute(after, "", 4, latent={"samples": torch.zeros(1)}).args[3]
    assert "most heavily weighted" in summary and "t1" in summary and "t3" in summary


@pytest.mark.parametrize("family", ["wan21_t2v", "sd3", "flux"])
def test_around_attention_temperature_the_entropy_falls(tiny, nodes, family):
    model = tiny(family)
    patched, before = inspect(nodes, model.patcher)
    patched, _ = nodes.temperature.execute(patched, gamma=2.0, blocks="all", start_percent=0.0, end_percent=1.0,
                                           scale_on="query").args
    patched, after = inspect(nodes, patched)
    sample_with(model, patched)
    for b, a in paired(before, after):
        assert a.entropy < b.entropy


# ---------------------------------------------------------------------------------------------- scope


def test_only_the_selected_blocks_and_steps_are_recorded(tiny, nodes):
    model = tiny("flux")
    patched, handle = inspect(nodes, model.patcher, blocks="1,s0", start_percent=0.0, end_percent=0.5)
    sample_with(model, patched)
    sigma_end = float(model.patcher.get_model_object("model_sampling").percent_to_sigma(0.5))
    records = handle.snapshot().records
    assert {r.block for r in records} == {("double_block", 1), ("single_block", 0)}
    assert records and all(r.sigma > sigma_end for r in records)
    assert len({r.sigma for r in records}) < STEPS


def test_a_new_sampling_run_starts_from_nothing(tiny, nodes):
    model = tiny("wan21_t2v")
    patched, handle = inspect(nodes, model.patcher)
    sample_with(model, patched)
    first = handle.snapshot()
    sample_with(model, patched, seed=1)
    second = handle.snapshot()
    assert len(second.records) == len(first.records) and second.heat.calls == first.heat.calls
    assert not torch.equal(second.records[0].shares, first.records[0].shares)


# ---------------------------------------------------------------------------------------------- pictures


def not_blank(picture):
    return float(picture.std()) > 0.05 and float(picture.min()) >= 0.0 and float(picture.max()) <= 1.0


@pytest.mark.parametrize("family, with_image", [("flux", False), ("flux", True), ("wan21_t2v", False),
                                                ("wan21_i2v", True), ("hunyuan_video", True), ("sd3", False),
                                                ("chroma_radiance", True)])
def test_pictures_have_the_expected_size_and_are_not_blank(tiny, nodes, family, with_image):
    from tokenfocus.core import charts

    model = tiny(family)
    weights = token_weights(model, nodes)
    patched, handle = inspect(nodes, model.patcher, token_weights=weights)
    latent = sample_with(model, patched)
    frames = latent.shape[2] if latent.ndim == 5 else 1
    height, width = (8 * latent.shape[-2], 8 * latent.shape[-1] * 3 // 2)       # a wide "decoded" picture
    image = None
    if with_image:
        pixel_frames = 4 * (frames - 1) + 1
        image = torch.linspace(0, 1, width)[None, None, :, None].expand(pixel_frames, height, width, 3).contiguous()
    heat, shares, entropy, summary = nodes.view.execute(handle, "", 6, latent={"samples": latent}, image=image).args
    picks = len(WEIGHTED_ROWS)                       # the weighted tokens by default
    aspect = height / width if with_image else latent.shape[-2] / latent.shape[-1]
    layout = charts.heat_layout(picks, frames, aspect)
    assert heat.shape == (1, *layout.size, 3) and heat.dtype == torch.float32
    assert layout.columns == frames
    assert shares.shape == entropy.shape == (1, *charts.CHART_SIZE, 3)
    for picture in (heat, shares, entropy):
        assert not_blank(picture)
    # the map area itself varies (not one flat colour)
    tiles = heat[0, charts.TITLE_H + (charts.FRAME_H if frames > 1 else 0):, charts.LABEL_W:]
    assert float(tiles.std()) > 0.05
    assert "t1" in summary and "entropy per block" in summary


def test_view_tokens_by_word_and_row(tiny, nodes):
    model = tiny("flux")
    labels = tuple(["▁a", "▁sun", "flower", "▁in", "▁a", "▁red", "▁hat", "▁at", "▁noon"]
                   + ["</s>"] + ["<pad>"] * (model.text_len - 10))
    weights = token_weights(model, nodes, labels=labels)
    patched, handle = inspect(nodes, model.patcher, token_weights=weights)
    latent = sample_with(model, patched)
    heat, _, _, summary = nodes.view.execute(handle, "sunflower, red hat, 7", 6, latent={"samples": latent}).args
    assert "sunflower" in summary and "red hat" in summary and "at #7" in summary
    assert heat.shape[1] == charts_size(3, 1, latent)[0]
    with pytest.raises(ValueError, match="not in the prompt"):
        nodes.view.execute(handle, "tulip", 6, latent={"samples": latent})
    with pytest.raises(ValueError, match="LATENT or the decoded IMAGE"):
        nodes.view.execute(handle, "", 6)


def charts_size(picks, frames, latent):
    from tokenfocus.core import charts

    return charts.heat_layout(picks, frames, latent.shape[-2] / latent.shape[-1]).size


def test_rows_without_labels_and_a_view_before_any_sampling(tiny, nodes):
    model = tiny("wan21_t2v")
    patched, handle = inspect(nodes, model.patcher)
    heat, shares, entropy, summary = nodes.view.execute(handle, "", 6, latent={"samples": torch.zeros(1)}).args
    assert "Nothing was recorded" in summary and not_blank(heat)
    sample_with(model, patched)
    _, _, _, summary = nodes.view.execute(handle, "", 3, latent={"samples": torch.zeros(1)}).args
    assert "#" in summary and "padding" in summary    # Wan's real rows come from its own zero-padded context
    with pytest.raises(ValueError, match="token_weights"):
        nodes.view.execute(handle, "sunflower", 6, latent={"samples": torch.zeros(1)})


def test_negative_prompt_at_cfg_one_records_nothing_and_says_why(tiny, nodes):
    model = tiny("sd3")
    patched, handle = inspect(nodes, model.patcher, prompt="negative")
    sample_with(model, patched, cfg=1.0)
    data = handle.snapshot()
    assert not data.records and any("negative" in n for n in data.notes)
    summary = nodes.view.execute(handle, "", 6, latent={"samples": torch.zeros(1)}).args[3]
    assert "CFG" in summary


def test_skip_layer_guidance_keeps_the_output_and_its_extra_pass_is_not_recorded(tiny, nodes):
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT

    model = tiny("sd3")
    slg = lambda p: SkipLayerGuidanceDiT.execute(p, scale=3.0, start_percent=0.0, end_percent=1.0,  # noqa: E731
                                                 double_layers="1", single_layers="").args[0]
    base = sample_with(model, slg(model.patcher))
    first, handle = inspect(nodes, model.patcher)
    patched_after, handle_after = inspect(nodes, slg(model.patcher))
    for patched, h in ((slg(first), handle), (patched_after, handle_after)):
        assert torch.equal(sample_with(model, patched), base)
        data = h.snapshot()
        assert len(data.records) == model.double_blocks * STEPS
        assert any("repeated" in n for n in data.notes)


def test_chroma_radiance_maps_its_16_pixel_patches(tiny, nodes):
    """Chroma Radiance works on pixels, one token per 16 x 16 patch: a 64 x 64 image is a 4 x 4 grid."""
    model = tiny("chroma_radiance")
    patched, handle = inspect(nodes, model.patcher)
    sample_with(model, patched)
    heat = handle.snapshot().heat
    assert heat.grid.tokens == (1, 4, 4) and heat.grid.cells == (1, 4, 4)
    assert heat.total.shape == (16, model.real_tokens)


def test_a_pooled_frame_grid_for_long_videos(tiny, nodes):
    """A grid with more tokens than cells is pooled; each call samples one member per cell, a different one
    each call, so after a few calls every token has been measured."""
    model = tiny("wan21_t2v")
    patched, handle = inspect(nodes, model.patcher)
    handle.setup = dataclasses.replace(handle.setup, max_cells=8)     # 2 x 4 x 4 tokens -> 2 x 2 x 2 cells
    latent = sample_with(model, patched)
    heat = handle.snapshot().heat
    assert heat.grid.cells == (2, 2, 2) and heat.grid.factors == (1, 2, 2) and heat.calls == 3 * STEPS
    assert heat.total.shape == (8, model.real_tokens)
    pictures = nodes.view.execute(handle, "", 2, latent={"samples": latent}).args
    assert pictures[0].shape[1:3] == charts_size(2, 2, latent) and not_blank(pictures[0])
    assert "pooled 2x2" in pictures[3] or "2x2x2 cells" in pictures[3]
