"""Token Spacing and Residual Alignment on deeper joint-attention models: one edit per block, never compounded.

The text stream of SD3, Flux and HunyuanVideo flows from block to block. Each selected block must receive
its incoming text edited once (spaced by sigma, mean kept), and the stream it hands on must carry only its
own update, so the spread of the stream stays close to the unpatched model's at every depth instead of
growing like sigma^depth. Observed by the test's own block patches around TokenFocus's.
"""
import dataclasses

import pytest
import torch

import tiny_models as tm
from recorders import BlockInputRecorder

SIGMA, STEPS = 1.3, 3
# Depths where compounding would show: sigma^12 = 23 at the last block of a 4+8-block Flux.
DEEP = [("sd3", {"depth": 8}), ("flux", {"double": 4, "single": 8}), ("hunyuan_video", {"double": 4, "single": 8})]


@pytest.fixture(scope="module")
def nodes(comfy):
    from tokenfocus.nodes.tora import ResidualAlignmentNode, TokenSpacingNode
    return TokenSpacingNode, ResidualAlignmentNode


def all_blocks(model):
    return [("double_block", i) for i in range(model.double_blocks)] + [("single_block", i) for i in range(model.single_blocks)]


def text_of(model, block, tokens, txt_rows):
    """The text part of a block's txt, or of the single blocks' joint sequence."""
    if block[0] != "single_block":
        return tokens
    return tokens[:, :txt_rows] if model.joint_order == "txt_img" else tokens[:, -txt_rows:]


def texts(model, records):
    """Per recorded block call: (block, text received), the single blocks' text cut with the last double's length."""
    out, txt_rows = [], None
    for block, _sigma, _cu, tokens in records:
        if block[0] == "double_block":
            txt_rows = tokens.shape[1]
        out.append((block, text_of(model, block, tokens, txt_rows)))
    return out


def positive_rows(model):
    """Token weights of 1 that mark the positive prompt's real rows (what Token Importance would give)."""
    from tokenfocus.core.importance import TokenWeights
    from tokenfocus.runtime.adapters import detect

    real = [False] * model.text_len
    for segment in model.context_layout:
        real[segment.start:segment.start + segment.real] = [True] * segment.real
    return TokenWeights(labels=tuple("t" for _ in real), weights=tuple(1.0 for _ in real), real=tuple(real),
                        encoder=detect(model.patcher).encoder, prompt="p")


def spread(text):
    """[B]: the Frobenius norm of each sample's centred text tokens."""
    x = text.double()
    return torch.linalg.vector_norm(x - x.mean(1, keepdim=True), dim=(1, 2))


def sample(model, patcher):
    tm.sample(dataclasses.replace(model, patcher=patcher), steps=STEPS)


@pytest.mark.parametrize("family,depth", DEEP, ids=[f for f, _ in DEEP])
def test_each_block_sees_its_text_spaced_once_and_the_spread_does_not_grow(tiny, nodes, family, depth):
    model = tiny(family, **depth)
    blocks = all_blocks(model)

    plain = BlockInputRecorder(blocks)
    sample(model, plain.after(model.patcher))
    unpatched = texts(model, plain.records["outer"])

    recorder = BlockInputRecorder(blocks)
    patched, _ = nodes[0].execute(recorder.before(model.patcher), sigma=SIGMA, k_mode="all", fixed_k=8, blocks="all",
                                  start_percent=0.0, end_percent=1.0)
    sample(model, recorder.after(patched))
    arriving = texts(model, recorder.records["outer"])
    received = texts(model, recorder.records["inner"])
    assert len(arriving) == len(unpatched) > 0

    worst = 0.0
    for (block, stream), (_, seen), (_, reference) in zip(arriving, received, unpatched):
        # What the block receives is the incoming stream spaced once: mean kept, every centred row x sigma.
        mean = stream.mean(1, keepdim=True)
        assert torch.allclose(seen.mean(1, keepdim=True), mean, atol=1e-4), (block, "mean moved")
        assert torch.allclose(seen - mean, SIGMA * (stream - mean), rtol=1e-4, atol=1e-4), (block, "not spaced once by sigma")
        # The incoming stream is the unpatched one up to what earlier blocks did with their edited text.
        ratio = spread(stream) / spread(reference)
        worst = max(worst, float(ratio.max()), float((1 / ratio).max()))
        assert ((ratio < 1.5) & (ratio > 1 / 1.5)).all(), (block, ratio.tolist())
    assert worst < 1.5, worst


@pytest.mark.parametrize("family,depth", DEEP, ids=[f for f, _ in DEEP])
@pytest.mark.parametrize("node", ["spacing", "spacing with token weights", "alignment"])
def test_the_stream_leaving_a_block_carries_only_its_own_update(tiny, nodes, family, depth, node):
    model = tiny(family, **depth)
    blocks = all_blocks(model)
    recorder = BlockInputRecorder(blocks)
    if node.startswith("spacing"):
        weights = positive_rows(model) if node.endswith("weights") else None
        patched, _ = nodes[0].execute(recorder.before(model.patcher), sigma=SIGMA, k_mode="fixed", fixed_k=2,
                                      blocks="all", start_percent=0.0, end_percent=1.0, token_weights=weights)
    else:
        patched, _ = nodes[1].execute(recorder.before(model.patcher), strength=1.0, k_mode="fixed", fixed_k=2,
                                      blocks="all", start_percent=0.0, end_percent=1.0)
    sample(model, recorder.after(patched))

    edited, txt_rows = 0, None
    for (block, _s, _cu, stream_in, block_in), (stream_out, block_out) in zip(recorder.pairs(), recorder.output_pairs()):
        if block[0] == "double_block":
            txt_rows = stream_in.shape[1]
        if stream_out is None:          # SD3's last block hands on no text
            continue
        edit = text_of(model, block, block_in, txt_rows) - text_of(model, block, stream_in, txt_rows)
        if edit.abs().max() > 1e-4:
            edited += 1
        # Out of the block: the block's output less the edit it was given, i.e. the stream plus the block's update.
        expected = text_of(model, block, block_out, txt_rows) - edit
        assert torch.allclose(text_of(model, block, stream_out, txt_rows), expected, rtol=1e-4, atol=1e-4), block
        if block[0] == "single_block":   # the image part of the joint sequence is handed on as the block made it
            image = slice(txt_rows, None) if model.joint_order == "txt_img" else slice(None, -txt_rows)
            assert torch.equal(stream_out[:, image], block_out[:, image]), block
    assert edited > 0
