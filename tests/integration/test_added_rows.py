"""Rows in the text stream that are not prompt text: Flux Redux's image rows (ComfyUI's own StyleModelApply,
with a tiny instance of ComfyUI's ReduxImageEncoder) appended after the prompt, and Qwen-Image-Edit's vision
rows (TextEncodeQwenImageEdit's layout, with reference latents) in front of it.

Weights go to the prompt's rows only, TORA's statistics and edits stay on them, and where only a row count
places them the log says what it counted; the nodes' usual guarantees hold on Qwen-Image-Edit.
"""
import dataclasses
import logging

import pytest
import torch

import comfy_env
import tiny_models as tm
from foreign_packs import CountingKernel, attention_backend_lambda, kjnodes_style_sage
from recorders import AttentionRecorder, BlockInputRecorder
from test_dare import count_model_calls

STEPS = 3
WEIGHTED_ROWS = (1, 3)
REDUX_ROWS, SIGLIP_WIDTH = 12, 16       # real: 729 rows (SigLIP's 27x27 patches), 1152 wide


@pytest.fixture(scope="module")
def nodes(comfy):
    from tokenfocus.nodes.attention_temperature import AttentionTemperatureNode
    from tokenfocus.nodes.dare import ImportanceGuidanceNode, TokenReweightNode
    from tokenfocus.nodes.tora import ResidualAlignmentNode, TokenSpacingNode
    return dict(reweight=TokenReweightNode, guidance=ImportanceGuidanceNode, spacing=TokenSpacingNode,
                alignment=ResidualAlignmentNode, temperature=AttentionTemperatureNode)


def prompt_weights(model, rows=None, weight=3.0):
    """What Token Importance gives for the prompt alone: one weight per row of its encoding, no digest."""
    from tokenfocus.core.importance import TokenWeights
    from tokenfocus.families import detect

    prompt = model.context_layout[-1]
    n = prompt.stop - prompt.start if rows is None else rows
    return TokenWeights(labels=tuple(f"t{i}" for i in range(n)),
                        weights=tuple(weight if i in WEIGHTED_ROWS else 1.0 for i in range(n)),
                        real=tuple(i < prompt.real for i in range(n)), encoder=detect(model.patcher).encoder,
                        prompt="a test prompt")


SETTINGS = {
    "reweight": dict(strength=1.0, blocks="all", start_percent=0.0, end_percent=1.0),
    "guidance": dict(scale=1.5, start_percent=0.0, end_percent=1.0),
    "spacing": dict(sigma=1.5, k_mode="fixed", fixed_k=2, blocks="all", start_percent=0.0, end_percent=1.0),
    "alignment": dict(strength=1.0, k_mode="fixed", fixed_k=2, blocks="all", start_percent=0.0, end_percent=1.0),
    "temperature": dict(gamma=1.35, blocks="all", start_percent=0.0, end_percent=1.0),
}
NEUTRAL = {"reweight": dict(strength=0.0), "guidance": dict(scale=0.0), "spacing": dict(sigma=1.0),
           "alignment": dict(strength=0.0), "temperature": dict(gamma=1.0)}
TAKES_WEIGHTS = ("reweight", "guidance", "spacing", "alignment")


def apply(nodes, name, patcher, weights=None, **kw):
    args = dict(SETTINGS[name], **kw)
    if name in TAKES_WEIGHTS:
        args["token_weights"] = weights
    return nodes[name].execute(patcher, **args).args


def sample_with(model, patcher, **kw):
    kw.setdefault("steps", STEPS)
    return tm.sample(dataclasses.replace(model, patcher=patcher), **kw)


def warnings_in(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "TokenFocus"]


def bias_rows(recorder):
    """Text keys of the first double block's first call that carry the folded bias, in the cond sample."""
    first = next(i for o, i in recorder.pairs() if o.block == ("double_block", 0))
    d = first.q.shape[-1] - 8 if first.q.ndim == 4 else None
    cond = 1 if first.q.shape[0] == 2 else 0
    if d is None:       # [B, L, H*D] (Qwen-Image): the first head's extra dimensions follow its own
        heads = 2
        width = first.k.shape[-1] // heads
        column = first.k[cond, :, width - 8]
    else:
        column = first.k[cond, 0, :, d]
    return column.nonzero().flatten().tolist()


# ------------------------------------------------------------------------------ Flux Redux (StyleModelApply)


def style_model():
    """ComfyUI's StyleModel around a tiny ReduxImageEncoder (what load_style_model builds from a Redux file)."""
    import comfy.ldm.flux.redux as redux
    import comfy.sd

    encoder = redux.ReduxImageEncoder(redux_dim=SIGLIP_WIDTH, txt_in_features=tm.TEXT_DIM, dtype=torch.float32)
    tm._init_weights(encoder, 7)
    return comfy.sd.StyleModel(encoder)


def styled(conditioning, strength_type="multiply"):
    """The conditioning through ComfyUI's own StyleModelApply, with a SigLIP-like vision output."""
    env = tm.import_comfyui()
    vision = env.comfy.clip_vision.Output()
    vision.last_hidden_state = torch.randn(1, REDUX_ROWS, SIGLIP_WIDTH, generator=torch.Generator().manual_seed(3))
    node = env.nodes.NODE_CLASS_MAPPINGS["StyleModelApply"]()
    strength = 0.5 if strength_type == "attn_bias" else 1.0
    (out,) = node.apply_stylemodel(conditioning, style_model(), vision, strength=strength, strength_type=strength_type)
    return out


@pytest.fixture
def redux(tiny, comfy):
    model = tiny("flux")
    positive = styled(model.positive)
    assert positive[0][0].shape[1] == model.text_len + REDUX_ROWS
    return dataclasses.replace(model, positive=positive)


@pytest.mark.parametrize("strength_type", ["multiply", "attn_bias"])
def test_reweighting_after_a_style_model_weights_the_prompt_rows_only_and_says_what_it_counted(tiny, nodes, caplog,
                                                                                               strength_type):
    """attn_bias: StyleModelApply also gives the conditioning an attention mask over its rows."""
    redux = tiny("flux")
    redux = dataclasses.replace(redux, positive=styled(redux.positive, strength_type))
    recorder = AttentionRecorder(redux.double_blocks, redux.single_blocks)
    patched, _ = apply(nodes, "reweight", recorder.before(redux.patcher), prompt_weights(redux))
    with caplog.at_level(logging.INFO, logger="TokenFocus"):
        sample_with(redux, recorder.after(patched))
    assert bias_rows(recorder) == list(WEIGHTED_ROWS), "no bias on the style model's rows"
    note = [m for m in warnings_in(caplog) if "Flux Redux" in m]
    assert note and f"has {redux.text_len + REDUX_ROWS} rows" in note[0] and f"the {REDUX_ROWS} rows after" in note[0]


def test_importance_guidance_after_a_style_model_runs_and_acts(redux, nodes):
    base = sample_with(redux, redux.patcher)
    patched, report = apply(nodes, "guidance", redux.patcher, prompt_weights(redux))
    assert not torch.equal(sample_with(redux, patched), base)


@pytest.mark.parametrize("name", TAKES_WEIGHTS)
def test_neutral_settings_after_a_style_model_are_bit_identical(redux, nodes, name):
    base = sample_with(redux, redux.patcher)
    patched, report = apply(nodes, name, redux.patcher, prompt_weights(redux), **NEUTRAL[name])
    assert torch.equal(sample_with(redux, patched), base)


def test_tokenfocus_prompt_weights_find_the_prompt_rows_exactly_after_a_style_model(tiny, comfy, nodes, caplog):
    """Weights that carry a digest of their rows (TokenFocus Prompt) are placed by it: no note to give."""
    from tokenfocus.runtime.prompt_weights import attach

    model = tiny("flux")
    carried, _ = attach(model.positive, prompt_weights(model))
    model = dataclasses.replace(model, positive=styled(carried))
    recorder = AttentionRecorder(model.double_blocks, model.single_blocks)
    patched, _ = apply(nodes, "reweight", recorder.before(model.patcher))     # weights from the conditioning
    with caplog.at_level(logging.INFO, logger="TokenFocus"):
        sample_with(model, recorder.after(patched))
    assert bias_rows(recorder) == list(WEIGHTED_ROWS)
    assert not [m for m in warnings_in(caplog) if "rows" in m]


def last_edit(recorder, block=("double_block", 0), which=0):
    """(before, after) of the cond (which=0) or uncond (1) sample's text in `block`, at the last step recorded."""
    found = None
    for b, sigma, cond_or_uncond, before, after in recorder.pairs():
        if b == block and which in cond_or_uncond:
            i = cond_or_uncond.index(which) * before.shape[0] // len(cond_or_uncond)
            found = before[i], after[i]
    assert found is not None, "no such pass recorded"
    return found


def tora_edit(nodes, name, model, weights, steps=1, which=0):
    recorder = BlockInputRecorder([("double_block", 0)])
    patched, _ = apply(nodes, name, recorder.before(model.patcher), weights)
    sample_with(model, recorder.after(patched), steps=steps)
    return last_edit(recorder, which=which)


def test_token_spacing_after_a_style_model_spaces_the_prompt_as_without_it_and_leaves_the_image_rows(tiny, redux, nodes):
    """The image rows take no part in the statistics: the prompt's rows are edited exactly as they are when
    no style model is applied, and the image rows (and the padding) are untouched."""
    plain = tiny("flux")
    before, after = tora_edit(nodes, "spacing", redux, prompt_weights(redux))
    plain_before, plain_after = tora_edit(nodes, "spacing", plain, prompt_weights(plain))
    n = plain.text_len
    assert torch.equal(before[n:], after[n:]), "the style model's rows must not move"
    assert torch.equal(before[tm.PROMPT_TOKENS:n], after[tm.PROMPT_TOKENS:n]), "the padding must not move"
    assert torch.equal(before[:n], plain_before)
    assert not torch.equal(before[:tm.PROMPT_TOKENS], after[:tm.PROMPT_TOKENS])
    assert torch.allclose(after[:n], plain_after, atol=1e-5)


def test_residual_alignment_after_a_style_model_rotates_the_prompt_rows_only(redux, nodes):
    # The styled prompt and the plain negative differ in length: they run in separate batches, so the cond pass
    # aligns to the uncond pass before it (from the second step on).
    before, after = tora_edit(nodes, "alignment", redux, prompt_weights(redux), steps=2)
    assert torch.equal(before[tm.PROMPT_TOKENS:], after[tm.PROMPT_TOKENS:]), "padding and image rows must not move"
    assert not torch.equal(before[:tm.PROMPT_TOKENS], after[:tm.PROMPT_TOKENS])
    assert torch.allclose(before[:tm.PROMPT_TOKENS].mean(0), after[:tm.PROMPT_TOKENS].mean(0), atol=1e-4), \
        "the mean over the prompt's rows (not the image rows) is kept"


def test_a_negative_with_the_same_style_rows_has_them_left_out_too(tiny, nodes):
    """The negative prompt styled by the same image: its last rows are bit for bit the positive's image rows,
    so Token Spacing leaves them out of the uncond statistics and untouched."""
    model = tiny("flux")
    model = dataclasses.replace(model, positive=styled(model.positive), negative=styled(model.negative))
    before, after = tora_edit(nodes, "spacing", model, prompt_weights(model), which=1)
    n = model.text_len
    assert torch.equal(before[n:], after[n:]), "the negative's style rows must not move"
    assert not torch.equal(before[:n], after[:n])


def test_weights_longer_than_the_styled_conditioning_are_an_error_before_sampling(redux, nodes):
    too_long = prompt_weights(redux, rows=redux.text_len + REDUX_ROWS + 1)
    for name in TAKES_WEIGHTS:
        patched, _ = apply(nodes, name, redux.patcher, too_long)
        counted, calls = count_model_calls(patched)
        with pytest.raises(ValueError, match="rows"):
            sample_with(redux, counted)
        assert not calls, f"{name}: the error must come before the first model call"


# ------------------------------------------------------------------------------ Qwen-Image-Edit


@pytest.fixture
def edit(tiny):
    return tiny("qwen_image_edit")


def front_rows(model):
    return model.extras["vision_rows"]


def test_edit_reweighting_weights_the_prompt_rows_behind_the_vision_rows_and_says_so(edit, nodes, caplog):
    recorder = AttentionRecorder(edit.double_blocks)
    patched, _ = apply(nodes, "reweight", recorder.before(edit.patcher), prompt_weights(edit))
    with caplog.at_level(logging.INFO, logger="TokenFocus"):
        sample_with(edit, recorder.after(patched))
    assert bias_rows(recorder) == [front_rows(edit) + r for r in WEIGHTED_ROWS]
    note = [m for m in warnings_in(caplog) if "vision tokens" in m]
    assert note and f"the {front_rows(edit)} rows in front of them" in note[0]


@pytest.mark.parametrize("name", list(SETTINGS))
def test_edit_active_changes_neutral_is_bit_identical_and_the_input_is_untouched(edit, nodes, name):
    base = sample_with(edit, edit.patcher)
    options = repr(edit.patcher.model_options)
    patched, report = apply(nodes, name, edit.patcher, prompt_weights(edit), **NEUTRAL[name])
    assert torch.equal(sample_with(edit, patched), base), "neutral settings"
    patched, _ = apply(nodes, name, edit.patcher, prompt_weights(edit))
    active = sample_with(edit, patched)
    assert not torch.equal(active, base)
    assert torch.equal(sample_with(edit, patched), active), "the same graph twice"
    assert repr(edit.patcher.model_options) == options and torch.equal(sample_with(edit, edit.patcher), base)


@pytest.mark.parametrize("name", ["spacing", "alignment"])
def test_edit_tora_edits_the_prompt_as_without_the_image_and_leaves_the_vision_rows(tiny, edit, nodes, name):
    plain = tiny("qwen_image")
    before, after = tora_edit(nodes, name, edit, prompt_weights(edit))
    plain_before, plain_after = tora_edit(nodes, name, plain, prompt_weights(plain))
    front = front_rows(edit)
    assert torch.equal(before[:front], after[:front]), "the vision rows must not move"
    assert torch.equal(before[front:], plain_before)
    assert torch.allclose(after[front:], plain_after, atol=1e-5)


def test_edit_negative_vision_rows_are_left_out_of_the_uncond_statistics(tiny, edit, nodes):
    """TextEncodeQwenImageEdit gives the negative prompt the same image's vision rows in front (bit for bit the
    positive's): Token Spacing spaces the negative's prompt rows exactly as without the image."""
    plain = tiny("qwen_image")
    before, after = tora_edit(nodes, "spacing", edit, prompt_weights(edit), which=1)
    plain_before, plain_after = tora_edit(nodes, "spacing", plain, prompt_weights(plain), which=1)
    front = front_rows(edit)
    assert torch.equal(before[:front], after[:front]), "the negative's vision rows must not move"
    assert torch.equal(before[front:], plain_before)
    assert not torch.equal(plain_before, plain_after)
    assert torch.allclose(after[front:], plain_after, atol=1e-5)


def test_edit_tora_without_weights_says_the_vision_rows_count_as_text(edit, nodes, caplog):
    patched, _ = apply(nodes, "spacing", edit.patcher)
    with caplog.at_level(logging.INFO, logger="TokenFocus"):
        sample_with(edit, patched)
    assert [m for m in warnings_in(caplog) if "reference latents" in m and f"all {edit.text_len} rows" in m]


@pytest.mark.parametrize("foreign", [kjnodes_style_sage, attention_backend_lambda])
@pytest.mark.parametrize("name", ["reweight", "guidance", "temperature"])
def test_edit_a_foreign_override_still_runs_and_tokenfocus_still_acts(edit, nodes, name, foreign):
    def with_node(patcher):
        return apply(nodes, name, patcher, prompt_weights(edit))[0]

    foreign_only = sample_with(edit, foreign(edit.patcher, CountingKernel()))
    kernels = CountingKernel(), CountingKernel()
    after = sample_with(edit, foreign(with_node(edit.patcher), kernels[0]))
    before = sample_with(edit, with_node(foreign(edit.patcher, kernels[1])))
    assert kernels[0].calls and kernels[1].calls, "the foreign override still runs"
    assert torch.equal(after, before)
    assert (after - foreign_only).abs().max() > 1e-4


def test_edit_clear_errors_before_sampling(edit, nodes):
    too_long = prompt_weights(edit, rows=edit.text_len + 1)
    for name in TAKES_WEIGHTS:
        patched, _ = apply(nodes, name, edit.patcher, too_long)
        counted, calls = count_model_calls(patched)
        with pytest.raises(ValueError, match=f"{edit.text_len}"):
            sample_with(edit, counted)
        assert not calls, f"{name}: the error must come before the first model call"
    wrong = dataclasses.replace(prompt_weights(edit), encoder="t5xxl")
    for name in TAKES_WEIGHTS:
        with pytest.raises(ValueError, match="'qwen25_7b'"):
            apply(nodes, name, edit.patcher, wrong)


class RecordingClip:
    """Stands in for the CLIP, whose 7B Qwen2.5-VL cannot run here: tokenizes with ComfyUI's own Qwen-Image
    tokenizer and keeps the tokens it is asked to encode."""

    def __init__(self):
        import comfy.text_encoders.qwen_image as qwen_image

        self.tokenizer = qwen_image.QwenImageTokenizer()
        self.tokens = None

    def tokenize(self, text, **kwargs):
        return self.tokenizer.tokenize_with_weights(text, **kwargs)

    def encode_from_tokens_scheduled(self, tokens):
        self.tokens = tokens
        return [[torch.zeros(1, 1, 4), {}]]


IM_START, USER, NEWLINE, VISION_START, VISION_END = 151644, 872, 198, 151652, 151653


def user_turn(tokens):
    """The rows the text encoder keeps (QwenImageTEModel crops the template before the user's text: after the
    second <|im_start|>, 'user', newline); an image is one entry here and one row per vision token there."""
    ids = [t[0] if isinstance(t[0], int) else "image" for t in tokens["qwen25_7b"][0]]
    second = [i for i, t in enumerate(ids) if t == IM_START][1]
    assert ids[second + 1:second + 3] == [USER, NEWLINE]
    return ids[second + 3:], [t[0] for t in tokens["qwen25_7b"][0] if not isinstance(t[0], int)]


@pytest.mark.parametrize("node_id", ["TextEncodeQwenImageEdit", "TextEncodeQwenImageEditPlus"])
def test_comfyui_puts_the_input_image_rows_in_front_of_the_prompt_rows(comfy, node_id):
    """ComfyUI's own Qwen-Image-Edit encoders: the prompt's rows (what encoding the prompt alone gives, as
    Token Importance counts them) are the last rows of the conditioning; in front of them, <|vision_start|>, the
    image's vision tokens (one per 28x28 patch of the image as Qwen2.5-VL sees it) and <|vision_end|>."""
    import importlib

    from comfy.text_encoders.qwen_vl import process_qwen2vl_images

    nodes_qwen = importlib.import_module("comfy_extras.nodes_qwen")
    node = getattr(nodes_qwen, node_id, None)
    if node is None:
        comfy_env.host_lacks(f"comfy_extras.nodes_qwen.{node_id}")
    prompt = "put a red hat on the cat, keep the background"
    plain = RecordingClip()
    plain.encode_from_tokens_scheduled(plain.tokenize(prompt))
    edit = RecordingClip()
    image = torch.rand(1, 300, 200, 3, generator=torch.Generator().manual_seed(0))
    inputs = {"image": image} if node_id == "TextEncodeQwenImageEdit" else {"image1": image}
    node.execute(edit, prompt, **inputs)

    prompt_rows, _ = user_turn(plain.tokens)
    rows, images = user_turn(edit.tokens)
    assert rows[-len(prompt_rows):] == prompt_rows, "the prompt's rows come last, as when encoded alone"
    front = rows[:-len(prompt_rows)]
    assert front[-3:] == [VISION_START, "image", VISION_END] and front.count("image") == 1
    (seen,) = images
    _, grid = process_qwen2vl_images(seen["data"])
    vision_tokens = int(grid.prod()) // 4     # 14x14 patches, merged 2x2
    h, w = seen["data"].shape[1:3]
    assert vision_tokens == round(h / 28) * round(w / 28)


@pytest.mark.parametrize("case", ["redux", "edit"])
def test_the_inspector_labels_the_image_rows_apart_from_the_prompt_tokens(comfy, request, case):
    from tokenfocus.nodes.inspector import AttentionInspectorNode, AttentionInspectorViewNode

    model = request.getfixturevalue(case)
    weights = prompt_weights(model)
    patched, handle, _ = AttentionInspectorNode.execute(model.patcher, blocks="all", start_percent=0.0, end_percent=1.0,
                                                        queries=16, heatmaps=True, prompt="positive",
                                                        token_weights=weights).args
    sample_with(model, patched)
    data = handle.snapshot()
    image = [i for i, label in enumerate(data.labels) if label == "[image]"]
    if case == "redux":
        assert image == list(range(model.text_len, model.text_len + REDUX_ROWS))
    else:
        assert image == list(range(front_rows(model)))
    assert not any(data.real[i] for i in image) and sum(data.real) == sum(weights.real)
    assert [data.labels[i] for i in range(len(data.labels)) if i not in image] == list(weights.labels)
    summary = AttentionInspectorViewNode.execute(handle, "", 4, latent=model.latent).args[3]
    assert "not prompt tokens" in summary and "by index" not in summary
