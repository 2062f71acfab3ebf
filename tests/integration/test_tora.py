"""Token Spacing and Residual Alignment on ComfyUI's real model classes (tiny random weights, CPU)."""
import dataclasses
import logging

import pytest
import torch

import tiny_models as tm
from recorders import BlockInputRecorder

SIGMA, K, STEPS = 1.3, 2, 4
FAMILIES = ["wan21_t2v", "wan21_i2v", "wan22_ti2v_5b", "sd3", "sd35_medium", "flux", "hunyuan_video", "qwen_image", "chroma", "ltxv",
            "chroma_radiance", "z_image", "lumina2", "flux2", "hunyuan_video_15", "hunyuan_image_21", "ltx2"]


@pytest.fixture(scope="module")
def nodes(comfy):
    from tokenfocus.nodes.attention_temperature import AttentionTemperatureNode
    from tokenfocus.nodes.tora import ResidualAlignmentNode, TokenSpacingNode
    return TokenSpacingNode, ResidualAlignmentNode, AttentionTemperatureNode


def spacing(nodes, patcher, **kw):
    args = dict(sigma=SIGMA, k_mode="fixed", fixed_k=K, blocks="all", start_percent=0.0, end_percent=1.0)
    args.update(kw)
    return nodes[0].execute(patcher, **args).args


def alignment(nodes, patcher, **kw):
    args = dict(strength=1.0, k_mode="fixed", fixed_k=K, blocks="all", start_percent=0.0, end_percent=1.0)
    args.update(kw)
    return nodes[1].execute(patcher, **args).args


def sample_with(model, patcher, **kw):
    return tm.sample(dataclasses.replace(model, patcher=patcher), steps=STEPS, **kw)


def text_rows(model, block, tokens, last_txt_rows):
    """The text part of what a block received, and how many leading rows of it are the prompt."""
    if block[0] == "single_block":
        rows = last_txt_rows
        text = tokens[:, :rows] if model.joint_order == "txt_img" else tokens[:, -rows:]
    elif model.family == "wan21_i2v":
        text = tokens[:, tm.CLIP_VISION_TOKENS:]       # the 257 CLIP image rows come first
    else:
        text = tokens
    return text


def only_prompt_rows(model, before, after, uncond):
    """The prompt's rows of a sample's text before and after, checking that its padding rows were untouched."""
    rows = model.prompt_rows(uncond)
    pad = torch.ones(before.shape[0], dtype=torch.bool)
    pad[rows] = False
    assert torch.equal(before[pad], after[pad]), "padding rows changed"
    return before[rows], after[rows]


def centred_singular_values(x):
    return torch.linalg.svdvals((x - x.mean(0, keepdim=True)).double())


@pytest.mark.parametrize("family", FAMILIES)
def test_spacing_keeps_the_mean_and_spreads_the_top_k_directions(tiny, nodes, family):
    model = tiny(family)
    blocks = [("double_block", i) for i in range(model.double_blocks)] + [("single_block", i) for i in range(model.single_blocks)]
    recorder = BlockInputRecorder(blocks, marked=model.block_access == "marked")
    patched, report = spacing(nodes, recorder.before(model.patcher))
    sample_with(model, recorder.after(patched))
    checked, last_txt_rows = 0, None
    for block, sigma, cond_or_uncond, before, after in recorder.pairs():
        if block[0] == "double_block" and model.joint_order is not None:
            last_txt_rows = before.shape[1]
        text_before, text_after = text_rows(model, block, before, last_txt_rows), text_rows(model, block, after, last_txt_rows)
        for b in range(before.shape[0]):
            x, y = text_before[b], text_after[b]
            if family.startswith("wan") or family == "ltxv" or model.pads_text:
                # Padding rows (Wan, Flux.2: zero rows of the context; LTX-Video: its T5 mask; Z-Image: the pad
                # token the model appends) must come back untouched.
                x, y = only_prompt_rows(model, x, y, cond_or_uncond[b * len(cond_or_uncond) // before.shape[0]] == 1)
            assert torch.allclose(x.mean(0), y.mean(0), atol=1e-4), (block, "mean moved")
            s_before, s_after = centred_singular_values(x), centred_singular_values(y)
            assert torch.allclose(s_after[:K], s_before[:K] * SIGMA, rtol=1e-3), (block, s_before[:4], s_after[:4])
            assert torch.allclose(s_after[K:], s_before[K:], rtol=1e-3, atol=1e-4)
            checked += 1
    assert checked > 0
    assert "real tokens" in report


@pytest.mark.parametrize("family", FAMILIES)
def test_neutral_spacing_and_alignment_are_bit_identical(tiny, nodes, family):
    model = tiny(family)
    base = sample_with(model, model.patcher)
    for neutral in (dict(sigma=1.0), dict(blocks=""), dict(start_percent=0.5, end_percent=0.5)):
        patched, report = spacing(nodes, model.patcher, **neutral)
        assert torch.equal(sample_with(model, patched), base), neutral
    patched, _ = alignment(nodes, model.patcher, strength=0.0)
    assert torch.equal(sample_with(model, patched), base)
    patched, _ = spacing(nodes, model.patcher)
    assert not torch.equal(sample_with(model, patched), base)
    assert torch.equal(sample_with(model, model.patcher), base)


@pytest.mark.parametrize("family", ["wan21_t2v", "sd3", "flux"])
def test_only_the_chosen_blocks_and_steps_are_touched(tiny, nodes, family):
    model = tiny(family)
    blocks = [("double_block", i) for i in range(model.double_blocks)]
    recorder = BlockInputRecorder(blocks)
    patched, _ = spacing(nodes, recorder.before(model.patcher), blocks="1", start_percent=0.0, end_percent=0.5)
    sample_with(model, recorder.after(patched))
    sigma_end = float(model.patcher.get_model_object("model_sampling").percent_to_sigma(0.5))
    touched = set()
    for block, sigma, _, before, after in recorder.pairs():
        if block == ("double_block", 1) and sigma > sigma_end:
            assert not torch.equal(before, after)
            touched.add(sigma)
        else:
            assert torch.equal(before, after), (block, sigma)
    assert touched


def test_wan_context_is_decomposed_once_per_run(tiny, nodes, monkeypatch):
    import tokenfocus.runtime.text_edits as text_edits

    calls = []
    real = text_edits.space_tokens
    monkeypatch.setattr(text_edits, "space_tokens", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = tiny("wan21_t2v")
    patched, _ = spacing(nodes, model.patcher, k_mode="auto")
    sample_with(model, patched)
    assert len(calls) == 1, "3 blocks x 4 steps must reuse one decomposition of the constant context"
    sample_with(model, patched)
    assert len(calls) == 2, "a new run starts with fresh caches"


@pytest.mark.parametrize("family", ["wan21_i2v", "sd3", "flux", "hunyuan_video", "qwen_image", "chroma", "ltxv", "z_image", "lumina2",
                                    "chroma_radiance", "flux2", "hunyuan_video_15", "hunyuan_image_21", "ltx2"])
def test_alignment_rotates_the_residual_and_keeps_norms(tiny, nodes, family):
    model = tiny(family)
    marked = model.block_access == "marked"     # block 0's input is out of reach there: watch block 1
    recorder = BlockInputRecorder([("double_block", 1 if marked else 0)], marked=marked)
    patched, _ = alignment(nodes, recorder.before(model.patcher))
    base = sample_with(model, model.patcher)
    assert not torch.equal(sample_with(model, recorder.after(patched)), base)
    changed = 0
    for block, sigma, cond_or_uncond, before, after in recorder.pairs():
        text_before, text_after = text_rows(model, block, before, None), text_rows(model, block, after, None)
        for b in range(before.shape[0]):
            is_uncond = cond_or_uncond[b * len(cond_or_uncond) // before.shape[0]] == 1
            x, y = text_before[b], text_after[b]
            if family.startswith("wan") or family == "ltxv" or model.pads_text:
                x, y = only_prompt_rows(model, x, y, is_uncond)
            if is_uncond:
                assert torch.equal(x, y), "uncond tokens are the reference, never rotated"
                continue
            xc, yc = x - x.mean(0), y - y.mean(0)
            assert torch.allclose(x.mean(0), y.mean(0), atol=1e-4)
            assert torch.allclose(xc.norm(dim=-1), yc.norm(dim=-1), rtol=1e-4, atol=1e-5)
            changed += not torch.equal(x, y)
    assert changed > 0


def test_alignment_without_uncond_does_nothing_and_says_so(tiny, nodes, caplog):
    model = tiny("sd3")
    base = sample_with(model, model.patcher, cfg=1.0)
    patched, _ = alignment(nodes, model.patcher)
    with caplog.at_level(logging.WARNING, logger="TokenFocus"):
        out = sample_with(model, patched, cfg=1.0)
    assert torch.equal(out, base)
    warnings = [r for r in caplog.records if r.name.startswith("TokenFocus") and r.levelno >= logging.WARNING]
    assert sum("no uncond pass" in r.getMessage() for r in warnings) == 1


@pytest.mark.parametrize("family", ["wan21_t2v", "flux"])
def test_nodes_chain_in_any_order(tiny, nodes, family):
    model = tiny(family)
    base = sample_with(model, model.patcher)
    temperature = lambda p: nodes[2].execute(p, gamma=1.35, blocks="all", start_percent=0.0, end_percent=1.0).args[0]
    space = lambda p: spacing(nodes, p)[0]
    align = lambda p: alignment(nodes, p, strength=0.5)[0]
    # Temperature acts inside attention, the TORA edits on block inputs: their order does not matter.
    a = sample_with(model, align(temperature(space(model.patcher))))
    b = sample_with(model, temperature(align(space(model.patcher))))
    assert not torch.equal(a, base)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # The two TORA edits apply in the order the nodes were chained; both orders run and act.
    c = sample_with(model, space(align(model.patcher)))
    assert torch.isfinite(c).all() and not torch.equal(c, base)


def test_bad_k_mode_is_an_error(tiny, nodes):
    with pytest.raises(ValueError, match="k_mode"):
        alignment(nodes, tiny("flux").patcher, k_mode="all")


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_token_weights_keep_the_positive_padding_untouched(tiny, nodes, family):
    from tokenfocus.core.importance import TokenWeights
    from tokenfocus.runtime.adapters import detect

    model = tiny(family)
    real = [False] * model.text_len
    for segment in model.context_layout:
        real[segment.start:segment.start + segment.real] = [True] * segment.real
    weights = TokenWeights(labels=tuple("t" for _ in real), weights=tuple(1.0 for _ in real), real=tuple(real),
                           encoder=detect(model.patcher).encoder, prompt="p")
    recorder = BlockInputRecorder([("double_block", 0)])
    patched, report = spacing(nodes, recorder.before(model.patcher), token_weights=weights)
    assert "from token_weights" in report
    sample_with(model, recorder.after(patched))
    mask = torch.tensor(real)
    for block, sigma, cond_or_uncond, before, after in recorder.pairs():
        for b in range(before.shape[0]):
            if cond_or_uncond[b * len(cond_or_uncond) // before.shape[0]] == 0:
                assert torch.equal(before[b, ~mask], after[b, ~mask]), "positive padding rows must not move"
                assert not torch.equal(before[b, mask], after[b, mask])
                assert torch.allclose(before[b, mask].mean(0), after[b, mask].mean(0), atol=1e-4)


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize("r", [2, 4, 7])
def test_auto_k_spaces_exactly_the_rank_of_a_low_rank_prompt(tiny, nodes, family, r):
    # A prompt whose text is rank r plus noise far under the rank cut reaches block 0 through the model's
    # linear text embedder still rank r: auto k must scale exactly r directions there.
    model = tiny(family)
    g = torch.Generator().manual_seed(r)

    def low_rank(cond):
        context, extras = cond[0]
        rows, width = context.shape[1:]
        signal = torch.randn(1, rows, r, generator=g) @ torch.randn(r, width, generator=g)
        return [[signal + 1e-6 * torch.randn(1, rows, width, generator=g), extras]]

    recorder = BlockInputRecorder([("double_block", 0)])
    patched, _ = spacing(nodes, recorder.before(model.patcher), k_mode="auto", blocks="0")
    sample_with(model, recorder.after(patched), positive=low_rank(model.positive), negative=low_rank(model.negative))
    pairs = recorder.pairs()
    assert pairs
    for block, sigma, cond_or_uncond, before, after in pairs:
        for b in range(before.shape[0]):
            s_before, s_after = centred_singular_values(before[b]), centred_singular_values(after[b])
            assert s_before[r] < 1e-3 * s_before[0], "the test's prompt must reach the block at rank r"
            assert torch.allclose(s_after[:r], SIGMA * s_before[:r], rtol=1e-3), (r, s_after[:r] / s_before[:r])
            assert torch.allclose(s_after[r:], s_before[r:], atol=1e-3 * float(s_before[0]))


@pytest.mark.parametrize("family", ["wan21_t2v", "sd3", "flux", "hunyuan_video"])
def test_alignment_at_cfg_1_aligns_to_the_negative_input(tiny, nodes, family):
    model = tiny(family)
    base = sample_with(model, model.patcher, cfg=1.0)
    recorder = BlockInputRecorder([("double_block", 0)])
    patched, report = alignment(nodes, recorder.before(model.patcher), negative=model.negative)
    assert "once more per step" in report
    out = sample_with(model, recorder.after(patched), cfg=1.0)
    assert not torch.equal(out, base)
    pairs = recorder.pairs()
    reference = [p for p in pairs if p[2] == (1,)]
    cond = [p for p in pairs if p[2] == (0,)]
    assert len(reference) == len(cond) == STEPS, "one extra pass per step, on the negative prompt"
    for _, _, _, before, after in reference:
        assert torch.equal(before, after), "the negative prompt is the reference, never rotated"
    _, _, _, before, after = cond[0]
    x, y = text_rows(model, ("double_block", 0), before, None)[0], text_rows(model, ("double_block", 0), after, None)[0]
    if family.startswith("wan"):
        x, y = x[:model.real_tokens], y[:model.real_tokens]
    assert not torch.equal(x, y)
    assert torch.allclose((x - x.mean(0)).norm(dim=-1), (y - y.mean(0)).norm(dim=-1), rtol=1e-4, atol=1e-5)
    if family == "wan21_t2v":
        # Wan's text is the same at every step whatever the cfg: the rotation equals the one a CFG > 1 run makes.
        recorder = BlockInputRecorder([("double_block", 0)])
        patched, _ = alignment(nodes, recorder.before(model.patcher))
        sample_with(model, recorder.after(patched), cfg=4.0)
        block, _, chunks, _, after_cfg = recorder.pairs()[0]
        cond_sample = [c for c in chunks].index(0)
        assert torch.allclose(after_cfg[cond_sample][:model.real_tokens], y, atol=1e-5)


@pytest.mark.parametrize("family", ["z_image", "lumina2"])
def test_block_zero_is_out_of_reach_where_the_model_patches_only_after_blocks(tiny, nodes, family):
    model = tiny(family)
    patched, report = spacing(nodes, model.patcher)
    assert "Block 0 left out" in report and "blocks 1" in report
    iv = patched.model_options["transformer_options"]["tokenfocus"].interventions[0]
    assert ("double_block", 0) not in iv.blocks
    for node in (spacing, alignment):
        with pytest.raises(ValueError, match="block 0 cannot be edited"):
            node(nodes, model.patcher, blocks="0-1")


@pytest.mark.parametrize("family", ["z_image", "lumina2"])
def test_a_foreign_post_block_patch_still_runs(tiny, nodes, family):
    model = tiny(family)
    seen = []
    foreign = model.patcher.clone()
    foreign.set_model_patch(lambda args: seen.append(args["block_index"]) or {}, "double_block")
    patched, _ = spacing(nodes, foreign)
    out = sample_with(model, patched)
    assert seen and torch.isfinite(out).all()
    assert not torch.equal(out, sample_with(model, foreign))


def _cond_calls(pairs):
    """Per recorded call of block 0: (sigma, chunks, text after TokenFocus) of the calls with a cond sample."""
    return [(sigma, chunks, after) for _, sigma, chunks, _, after in pairs if 0 in chunks]


def short_of_memory(monkeypatch):
    """Mock: so little free memory when ComfyUI batches conds that each runs alone (no such shortage can be
    made here). The sampler asks its model patcher (newer ComfyUI) or model_management (older) for it."""
    import types

    import comfy.model_patcher
    import comfy.samplers

    if hasattr(comfy.model_patcher.ModelPatcher, "get_free_memory"):
        monkeypatch.setattr(comfy.model_patcher.ModelPatcher, "get_free_memory", lambda self, device: 0)
    else:
        memory = comfy.samplers.model_management
        monkeypatch.setattr(comfy.samplers, "model_management",
                            types.SimpleNamespace(**{**vars(memory), "get_free_memory": lambda *args, **kwargs: 0}))


@pytest.mark.parametrize("batches", ["batched", "split, uncond first", "split, cond first"])
def test_alignment_at_cfg_above_1_uses_the_runs_uncond_from_the_first_step(comfy, tiny, nodes, monkeypatch, caplog,
                                                                          batches):
    """At CFG > 1 the sampler's own uncond is the reference from the first step, however ComfyUI batches
    cond and uncond, and the node's negative input is left unused (no extra pass). ComfyUI runs them apart
    when memory is short (the uncond first) or when they cannot share a batch (prompts of very different
    lengths: the cond first, so the first step needs the run's negative ahead of it)."""
    model = tiny("wan21_t2v")
    negative = model.negative
    if batches == "split, uncond first":
        short_of_memory(monkeypatch)
    elif batches == "split, cond first":
        context, extras = model.negative[0]
        negative = [[context[:, :100], extras]]      # 100 and 512 rows: ComfyUI cannot batch them together
    recorder = BlockInputRecorder([("double_block", 0)])
    patched, _ = alignment(nodes, recorder.before(model.patcher))
    with caplog.at_level(logging.INFO, logger="TokenFocus"):
        out = sample_with(model, recorder.after(patched), negative=negative, cfg=4.0)
    # Each step's cond aligns to that step's uncond text (Wan reuses its one edit of the run): no warning.
    assert "cond ran before uncond" not in caplog.text, caplog.text
    pairs = recorder.pairs()
    lone_uncond = [chunks for _, _, chunks, _, _ in pairs if chunks == (1,)]
    if batches == "batched":
        assert not lone_uncond and all(len(chunks) == 2 for _, _, chunks, _, _ in pairs)
    else:
        extra = 1 if batches == "split, cond first" else 0      # one reference pass, at the first step only
        assert len(lone_uncond) == STEPS + extra, lone_uncond
    cond = _cond_calls(pairs)
    assert len(cond) == STEPS
    first_sigma, chunks, first_after = cond[0]
    _, _, _, first_before, _ = next(p for p in pairs if p[1] == first_sigma and 0 in p[2])
    b = chunks.index(0) * first_after.shape[0] // len(chunks)
    rows = slice(0, model.real_tokens)
    assert not torch.equal(first_before[b, rows], first_after[b, rows]), "aligned from the first step"
    # Wan's text is the same at every step: so is the rotation, when every step aligns to the run's uncond.
    for _, later_chunks, later_after in cond[1:]:
        lb = later_chunks.index(0) * later_after.shape[0] // len(later_chunks)
        assert torch.allclose(later_after[lb, rows], first_after[b, rows], atol=1e-5)
    # The node's negative input is for runs with no uncond pass: here it changes nothing.
    context, extras = model.positive[0]
    own_negative = [[torch.randn(context.shape, generator=torch.Generator().manual_seed(3)), extras]]
    with_input, _ = alignment(nodes, model.patcher, negative=own_negative)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="TokenFocus"):
        assert torch.equal(sample_with(model, with_input, negative=negative, cfg=4.0), out)
    assert "the negative input is used only at CFG 1" in caplog.text


def test_alignment_at_cfg_1_runs_one_negative_pass_per_step_when_prompts_run_apart(comfy, tiny, nodes, monkeypatch):
    """CFG 1 (no uncond pass) with two positive prompts (ConditioningCombine) that a memory shortage makes
    run apart: one reference pass per step on the negative input, and both prompts aligned at every step."""
    model = tiny("wan21_t2v")
    context, extras = model.positive[0]
    second = [[torch.roll(context, 1, dims=-1), extras]]
    positive = comfy.nodes.ConditioningCombine().combine(model.positive, second)[0]
    short_of_memory(monkeypatch)
    recorder = BlockInputRecorder([("double_block", 0)])
    patched, _ = alignment(nodes, recorder.before(model.patcher), negative=model.negative)
    sample_with(model, recorder.after(patched), positive=positive, cfg=1.0)
    pairs = recorder.pairs()
    assert [chunks for _, _, chunks, _, _ in pairs].count((1,)) == STEPS
    cond = [(before, after) for _, _, chunks, before, after in pairs if chunks == (0,)]
    rows = slice(0, model.real_tokens)
    assert len(cond) == 2 * STEPS and all(not torch.equal(before[0, rows], after[0, rows]) for before, after in cond)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_alignment_with_cond_run_first_on_joint_models(comfy, tiny, nodes, caplog, family):
    """Joint models, cond and uncond in separate batches with the cond first (a negative too short to share
    its batch): the first step's cond is aligned to one pass on the run's negative, later ones to the latest
    uncond (one step old, said in the log); the node's negative input is not used."""
    import math

    model = tiny(family)
    context, extras = model.negative[0]
    rows = next(n for n in range(1, context.shape[1]) if math.lcm(n, context.shape[1]) // n > 4)
    negative = [[context[:, :rows], extras]]        # ComfyUI cannot batch it with the positive
    recorder = BlockInputRecorder([("double_block", 0)])
    patched, _ = alignment(nodes, recorder.before(model.patcher))
    with caplog.at_level(logging.INFO, logger="TokenFocus"):
        out = sample_with(model, recorder.after(patched), negative=negative, cfg=4.0)
    assert "cond ran before uncond" in caplog.text
    pairs = recorder.pairs()
    assert [chunks for _, _, chunks, _, _ in pairs][:3] == [(1,), (0,), (1,)], "the first cond has its reference"
    assert [chunks for _, _, chunks, _, _ in pairs].count((1,)) == STEPS + 1
    _, _, _, before, after = pairs[1]
    assert not torch.equal(before, after), "aligned from the first step"
    own = [[torch.randn(model.positive[0][0].shape, generator=torch.Generator().manual_seed(3)), model.positive[0][1]]]
    with_input, _ = alignment(nodes, model.patcher, negative=own)
    assert torch.equal(sample_with(model, with_input, negative=negative, cfg=4.0), out)


def test_alignment_under_a_guider_of_its_own_that_runs_no_uncond_pass(comfy, tiny, nodes):
    """A guider with a predict_noise of its own and a negative prompt is taken to run an uncond pass; where
    its first step runs none (it samples as CFG 1), the negative input gives the reference from then on."""
    import comfy.samplers

    class OwnGuider(comfy.samplers.CFGGuider):
        def predict_noise(self, x, timestep, model_options={}, seed=None):
            return super().predict_noise(x, timestep, model_options, seed)

    model = tiny("wan21_t2v")
    recorder = BlockInputRecorder([("double_block", 0)])
    patched, _ = alignment(nodes, recorder.before(model.patcher), negative=model.negative)
    guider = OwnGuider(recorder.after(patched))
    guider.set_conds(model.positive, model.negative)
    guider.set_cfg(1.0)
    latent = model.latent["samples"]
    sigmas = comfy.samplers.calculate_sigmas(model.patcher.get_model_object("model_sampling"), "simple", STEPS)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    guider.sample(noise, latent, comfy.samplers.sampler_object("euler"), sigmas, seed=0)
    chunks = [c for _, _, c, _, _ in recorder.pairs()]
    assert chunks.count((1,)) == chunks.count((0,)) == STEPS, "one reference pass per step, none skipped"
    assert all(not torch.equal(before, after) for _, _, c, before, after in recorder.pairs() if c == (0,))
