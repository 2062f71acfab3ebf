"""Token Importance's chat-template layouts against ComfyUI's own tokenizers and text encoders.

Qwen-Image, HunyuanImage 2.1, HunyuanVideo 1.5 and Kandinsky 5 (Qwen2.5-VL): ComfyUI ships the tokenizer files
(text_encoders/qwen25_tokenizer), so the tests tokenize with them and encode with ComfyUI's own text-encoder
class, shrunk through its `qwen25_7b_model_config` option (uninitialised weights: only the row count is read).

Flux.2 dev (Mistral 3), Lumina 2 / Neta (Gemma 2) and LTX-2 (Gemma 3 12B): the tokenizer ships inside the text
encoder checkpoint, not in ComfyUI's tree. Their tests build a tiny STAND-IN vocabulary here (a tekken.json of
byte pieces and a few words; a SentencePiece model trained on a few sentences with Gemma's special ids) and run
it through ComfyUI's real tokenizer classes and templates (Flux2Tokenizer, LuminaTokenizer, LTXAVGemmaTokenizer).
"""
import base64
import io
import json
import types

import pytest
import torch
from comfy_env import host_lacks
from test_tokens import TINY_CLIP, encoded_rows, make_clip

from tokenfocus.runtime.tokens import build_token_weights, context_layout, token_rows

PROMPT = "A man in a red hat holds a Sunflower, next to sunflowers and a sunflower under the sky."
QWEN_TINY = {"qwen25_7b_model_config": {"num_hidden_layers": 4, "hidden_size": 8, "intermediate_size": 8,
                                        "num_attention_heads": 1, "num_key_value_heads": 1}}  # 4: HunyuanImage reads -3


def weighted(tw, weight):
    return [i for i, w in enumerate(tw.weights) if w == weight]


def word_rows(ids, decode, word):
    """Rows whose tokens spell `word` (any case, whole word), found by decoding the ids themselves."""
    rows, spans, text = [], [], ""
    for i, token in enumerate(ids):
        piece = decode([token])
        spans.append((len(text), len(text) + len(piece)))
        text += piece
    lower, needle = text.lower(), word.lower()
    start = lower.find(needle)
    while start != -1:
        end = start + len(needle)
        if (start == 0 or not lower[start - 1].isalnum()) and (end == len(lower) or not lower[end].isalnum()):
            rows.extend(i for i, (a, b) in enumerate(spans) if a < end and b > start and decode([ids[i]]).strip())
        start = lower.find(needle, end)
    return rows


# ------------------------------------------------- Qwen2.5-VL: Qwen-Image, HunyuanImage 2.1, HunyuanVideo 1.5, Kandinsky 5

KANDINSKY5_TINY = {**QWEN_TINY, "clip_l_model_config": TINY_CLIP}


def kandinsky5_encoders():
    try:
        import comfy.text_encoders.kandinsky5 as kandinsky5
    except ImportError:
        host_lacks("comfy.text_encoders.kandinsky5 (Kandinsky 5's text encoder)")
    return kandinsky5


def kandinsky5_clip(kind):
    """Kandinsky 5's tokenizer (video, or image: another system prompt) and text encoder: Qwen2.5-VL, plus CLIP-L
    for the pooled vector."""
    kandinsky5 = kandinsky5_encoders()
    tokenizer = kandinsky5.Kandinsky5TokenizerImage() if kind == "kandinsky5_image" else kandinsky5.Kandinsky5Tokenizer()
    return make_clip(tokenizer, kandinsky5.te()(model_options=KANDINSKY5_TINY))


def qwen_clip(kind):
    import comfy.text_encoders.hunyuan_image as hunyuan_image
    import comfy.text_encoders.qwen_image as qwen_image

    if kind.startswith("kandinsky5"):
        return kandinsky5_clip(kind)
    if kind == "qwen_image":
        return make_clip(qwen_image.QwenImageTokenizer(), qwen_image.te()(model_options=QWEN_TINY))
    te = hunyuan_image.te(byt5=False)(model_options=QWEN_TINY)  # the ByT5 rows go to an extra cond, not the rows
    if kind == "hunyuan_image_21":
        return make_clip(hunyuan_image.HunyuanImageTokenizer(), te)
    try:
        from comfy.text_encoders.hunyuan_video import HunyuanVideo15Tokenizer
    except ImportError:
        host_lacks("comfy.text_encoders.hunyuan_video.HunyuanVideo15Tokenizer (HunyuanVideo 1.5)")
    return make_clip(HunyuanVideo15Tokenizer(), te)


QWEN_KINDS = [("qwen_image", "qwen25_7b"), ("hunyuan_image_21", "qwen25_7b_byt5"), ("hunyuan_video_15", "qwen25_7b_byt5"),
              ("kandinsky5", "qwen25_7b_kandinsky5"), ("kandinsky5_image", "qwen25_7b_kandinsky5")]
# What the crop keeps after the prompt: Qwen-Image's and HunyuanVideo 1.5's templates open the assistant's turn.
TEMPLATE_TAIL = {"qwen_image": ["<|im_end|>", "Ċ", "<|im_start|>", "assistant", "Ċ"],
                 "hunyuan_video_15": ["<|im_end|>", "Ċ", "<|im_start|>", "assistant", "Ċ"]}


@pytest.mark.parametrize("kind, encoder", QWEN_KINDS)
def test_qwen25_rows_are_the_template_as_the_text_encoder_crops_it(comfy, kind, encoder):
    """The weights have one row per row of ComfyUI's conditioning, whatever the prompt does to the template: a
    plain prompt, one starting with a newline (merged with the template's), an empty one, a template of the
    user's own, a Chinese prompt."""
    clip = qwen_clip(kind)
    for text in (PROMPT, "\nA red hat", "", "<|im_start|>user\nA red hat<|im_end|>", "一顶红帽子和一朵向日葵"):
        layout = context_layout(clip, text)
        assert layout.encoder == encoder
        assert layout.n_rows == encoded_rows(clip, text), repr(text)


@pytest.mark.parametrize("kind, encoder", QWEN_KINDS)
def test_qwen25_prompt_rows_are_exactly_the_prompt_and_a_word_lands_on_its_own_rows(comfy, kind, encoder):
    clip = qwen_clip(kind)
    sub = clip.tokenizer.qwen25_7b
    hf = sub.tokenizer
    tw = build_token_weights(clip, PROMPT, "sunflower:2, red hat:1.5")
    ids = [int(t) for t, *_ in clip.tokenize(PROMPT)["qwen25_7b"][0]]
    kept = ids[len(ids) - len(tw):]                            # the crop keeps the tail of the template
    real_ids = [t for t, r in zip(kept, tw.real) if r]
    assert real_ids == hf(PROMPT)["input_ids"], "the prompt's rows are its tokens, re-tokenized alone"
    assert hf.decode(real_ids) == PROMPT
    tail = [label for label, r in zip(tw.labels, tw.real) if not r]
    assert tail == TEMPLATE_TAIL.get(kind, ["<|im_end|>"])
    decode = hf.decode
    # 'Sunflower' and 'sunflower', not 'sunflowers'; 'red hat' as a phrase; template rows stay at 1.
    assert weighted(tw, 2.0) == word_rows(kept, decode, "sunflower") and len(weighted(tw, 2.0)) == 4
    assert weighted(tw, 1.5) == word_rows(kept, decode, "red hat")
    assert all(w == 1.0 for w, r in zip(tw.weights, tw.real) if not r)


def test_qwen25_chinese_word_and_density_stay_on_prompt_rows(comfy):
    clip = qwen_clip("qwen_image")
    text = "一顶红帽子 向日葵, a sunflower"  # a word split across rows mid-character (whole words: spaced)
    tw = build_token_weights(clip, text, "向日葵:3")
    hf = clip.tokenizer.qwen25_7b.tokenizer
    ids = [int(t) for t, *_ in clip.tokenize(text)["qwen25_7b"][0]][-len(tw):]
    assert hf.decode([ids[i] for i in weighted(tw, 3.0)]).strip() == "向日葵" and len(weighted(tw, 3.0)) > 1
    dense = build_token_weights(clip, text, use_density=True)
    assert all(w == 1.0 for w, r in zip(dense.weights, dense.real) if not r)
    assert any(w != 1.0 for w, r in zip(dense.weights, dense.real) if r)


def test_hunyuan_image_quoted_text_byt5_stream_gets_no_rows(comfy):
    """A quoted text adds a ByT5 stream to the tokens (the model appends its rows itself, from an extra cond):
    the layout is still the Qwen2.5-VL rows alone, and the quoted word is weighted there."""
    clip = qwen_clip("hunyuan_image_21")
    text = 'a shop sign that reads "OPEN" above a red door'
    assert set(clip.tokenize(text)) == {"qwen25_7b", "byt5"}
    tw = build_token_weights(clip, text, "open:2")
    assert tw.encoder == "qwen25_7b_byt5" and len(tw) == encoded_rows(clip, text)
    assert "".join(tw.labels[i] for i in weighted(tw, 2.0)) == "OPEN"


def test_qwen_image_weights_reweight_the_tiny_qwen_image_and_edit_rows_are_a_clear_error(tiny):
    """Token Importance on Qwen-Image's tokenizer feeds Token Reweighting on a Qwen-Image conditioned by that many
    rows: accepted, and the output changes. A conditioning with more rows (Qwen-Image-Edit's vision rows) is an
    error before sampling that says why."""
    import dataclasses

    import tiny_models as tm
    from tokenfocus.nodes.dare import TokenReweightNode

    model = tiny("qwen_image")
    weights = build_token_weights(qwen_clip("qwen_image"), "a red hat and a sunflower", "sunflower:3")
    context = torch.randn(1, len(weights), tm.TEXT_DIM, generator=torch.Generator().manual_seed(5))
    fitting = dataclasses.replace(model, positive=[[context, {}]], text_len=len(weights), real_tokens=len(weights))
    patched, _ = TokenReweightNode.execute(fitting.patcher, weights, strength=1.0, blocks="all", start_percent=0.0,
                                           end_percent=1.0).args
    assert not torch.equal(tm.sample(dataclasses.replace(fitting, patcher=patched)), tm.sample(fitting))

    # Token Importance signs the rows its text encodes to; an Edit conditioning's prompt rows follow the vision
    # rows in the encoder's causal attention, so they are other values: no placement fits them.
    from tokenfocus.runtime.prompt_weights import recognising

    signed = recognising(weights, [[context, {}]])
    edit = torch.randn(1, len(weights) + 7, tm.TEXT_DIM, generator=torch.Generator().manual_seed(6))
    edited = dataclasses.replace(model, positive=[[edit, {}]], text_len=edit.shape[1], real_tokens=edit.shape[1])
    patched, _ = TokenReweightNode.execute(edited.patcher, signed, strength=1.0, blocks="all", start_percent=0.0,
                                           end_percent=1.0).args
    with pytest.raises(ValueError, match="TextEncodeQwenImageEdit.*vision rows"):
        tm.sample(dataclasses.replace(edited, patcher=patched))


def reweighting_changes_output(model, weights) -> bool:
    """Token Reweighting with `weights` on a tiny model conditioned by as many rows (its other conds kept)."""
    import dataclasses

    import tiny_models as tm
    from tokenfocus.nodes.dare import TokenReweightNode

    context = torch.randn(1, len(weights), tm.TEXT_DIM, generator=torch.Generator().manual_seed(5))
    model = dataclasses.replace(model, positive=[[context, model.positive[0][1]]], text_len=len(weights),
                                real_tokens=len(weights))
    patched, _ = TokenReweightNode.execute(model.patcher, weights, strength=1.0, blocks="all", start_percent=0.0,
                                           end_percent=1.0).args
    return not torch.equal(tm.sample(dataclasses.replace(model, patcher=patched)), tm.sample(model))


def test_hunyuan_video_15_weights_land_on_its_qwen_rows(tiny):
    """Weights from HunyuanVideo 1.5's own tokenizer fit its conditioning (the Qwen2.5-VL rows); the vision and
    ByT5 rows the model adds in front get none, and the reweighting changes the output."""
    model = tiny("hunyuan_video_15")
    weights = build_token_weights(qwen_clip("hunyuan_video_15"), "a red hat and a sunflower", "sunflower:3")
    assert reweighting_changes_output(model, weights)


def test_kandinsky5_clip_l_stream_adds_no_rows_and_weights_reweight_the_tiny_kandinsky5(tiny):
    """Kandinsky 5's tokens hold a CLIP-L stream beside the Qwen2.5-VL one; CLIP-L only gives the pooled vector, so
    the weights cover the Qwen2.5-VL rows alone, fit the conditioning the model's text cross-attention reads, and
    Token Reweighting with them changes the tiny Kandinsky 5's output."""
    clip = kandinsky5_clip("kandinsky5")
    text = "a red hat and a sunflower"
    assert set(clip.tokenize(text)) == {"qwen25_7b", "l"}
    weights = build_token_weights(clip, text, "sunflower:3")
    assert weights.encoder == "qwen25_7b_kandinsky5" and len(weights) == encoded_rows(clip, text)
    assert "".join(weights.labels[i] for i in weighted(weights, 3.0)) == "Ġsunflower"

    assert reweighting_changes_output(tiny("kandinsky5"), weights)


# ---------------------------------------------------------------- Flux.2 dev: Mistral 3 (stand-in vocabulary)

MISTRAL_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
                    "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]  # tekken's ranks 0-18
MISTRAL_WORDS = [b" r", b" h", b"at", b" s", b"un", b"fl", b"ow", b"er", b"re", b"ed", b" a", b" red", b" hat",
                 b" su", b" sun", b"low", b"flow", b"flower", b"rs"]
TEKKEN_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
                  r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|"
                  r"\s+(?!\S)|\s+")


def stand_in_tekken() -> bytes:
    """A STAND-IN tekken.json (Mistral's tokenizer format): every byte, a few merged words, tekken's specials."""
    vocab = [bytes([b]) for b in range(256)] + MISTRAL_WORDS
    return json.dumps({
        "config": {"pattern": TEKKEN_PATTERN, "default_vocab_size": len(MISTRAL_SPECIALS) + len(vocab),
                   "num_vocab_tokens": len(vocab), "version": "v7"},
        "vocab": [{"rank": r, "token_bytes": base64.b64encode(t).decode(), "token_str": None} for r, t in enumerate(vocab)],
        "special_tokens": [{"rank": r, "token_str": s, "is_control": True} for r, s in enumerate(MISTRAL_SPECIALS)],
    }).encode()


@pytest.fixture(scope="module")
def flux2_dev_clip(comfy, tmp_path_factory):
    """ComfyUI's Flux2Tokenizer (its template, its Mistral3Tokenizer settings) over the stand-in vocabulary."""
    try:
        import comfy.text_encoders.flux as flux_te
        flux_te.Flux2Tokenizer
    except (ImportError, AttributeError):
        host_lacks("comfy.text_encoders.flux.Flux2Tokenizer (Flux.2)")
    data = stand_in_tekken()
    try:
        args = flux_te.load_mistral_tokenizer(data)
    except TypeError:
        # This transformers' MistralConverter reads a tekken.json file instead of taking the vocabulary.
        from transformers.integrations.mistral import MistralConverter

        path = tmp_path_factory.mktemp("tekken") / "tekken.json"
        path.write_bytes(data)
        args = {"tokenizer_object": MistralConverter(vocab_file=str(path)).converted(), "legacy": False}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flux_te, "load_mistral_tokenizer", lambda _data: args)
        return make_clip(flux_te.Flux2Tokenizer(tokenizer_data={"tekken_model": data}))


def test_mistral3_rows_are_the_whole_template_and_the_prompt_sits_between_inst_markers(flux2_dev_clip):
    text = "a red hat, a sunflower and sunflowers"
    stream = flux2_dev_clip.tokenize(text)["mistral3_24b"][0]
    tw = build_token_weights(flux2_dev_clip, text, "sunflower:3, red:2")
    assert tw.encoder == "mistral3_24b" and len(tw) == len(stream), "one row per token: no crop, no padding"
    ids = [int(t) for t, *_ in stream]
    hf = flux2_dev_clip.tokenizer.mistral3_24b.tokenizer
    assert tw.labels[0] == "<s>" and not tw.real[0]
    inst, end = tw.labels.index("[INST]"), tw.labels.index("[/INST]")
    assert [i for i, r in enumerate(tw.real) if r] == list(range(inst + 1, end))
    assert hf.decode(ids[inst + 1:end]) == text
    assert weighted(tw, 3.0) == word_rows(ids, hf.decode, "sunflower") and weighted(tw, 3.0)
    assert weighted(tw, 2.0) == word_rows(ids, hf.decode, "red")
    assert all(w == 1.0 for w, r in zip(tw.weights, tw.real) if not r), "template rows keep 1"


def test_flux2_dev_weights_reweight_the_tiny_flux2(flux2_dev_clip, tiny):
    import dataclasses

    import tiny_models as tm
    from tokenfocus.nodes.dare import TokenReweightNode

    model = tiny("flux2")
    weights = build_token_weights(flux2_dev_clip, "a red hat, a sunflower", "sunflower:3")
    context = torch.randn(1, len(weights), tm.TEXT_DIM, generator=torch.Generator().manual_seed(5))
    model = dataclasses.replace(model, positive=[[context, model.positive[0][1]]], text_len=len(weights),
                                real_tokens=len(weights))
    patched, _ = TokenReweightNode.execute(model.patcher, weights, strength=1.0, blocks="all", start_percent=0.0,
                                           end_percent=1.0).args
    assert not torch.equal(tm.sample(dataclasses.replace(model, patcher=patched)), tm.sample(model))


# ---------------------------------------------------------------- Gemma: Lumina 2 / Neta, LTX-2 (stand-in vocabulary)

GEMMA_SENTENCES = [
    "a red hat and a sunflower in a vase under the sky",
    "you are an assistant designed to generate superior images with the superior degree of image-text alignment "
    "based on textual prompts or user prompts. <Prompt Start> a cat",
    "the man holds a red sunflower next to sunflowers",
]


@pytest.fixture(scope="module")
def gemma_spiece(comfy):
    """A STAND-IN SentencePiece model with Gemma's special ids (pad 0, eos 1, bos 2, unk 3), trained here."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(GEMMA_SENTENCES * 20), model_writer=model, vocab_size=120, model_type="unigram",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, hard_vocab_limit=False, character_coverage=1.0, minloglevel=2)
    return model.getvalue()


def gemma_clip(kind, spiece, model=None):
    try:
        if kind == "lumina2":
            from comfy.text_encoders.lumina2 import LuminaTokenizer as tokenizer
        else:
            from comfy.text_encoders.lt import LTXAVGemmaTokenizer as tokenizer
    except ImportError:
        host_lacks(f"ComfyUI's {kind} Gemma tokenizer")
    return make_clip(tokenizer(tokenizer_data={"spiece_model": spiece}), model)


def test_gemma2_rows_are_bos_and_the_prompt_as_the_lumina2_encoder_gives_them(gemma_spiece):
    from comfy.text_encoders import lumina2

    model = lumina2.te()(model_options={"gemma2_2b_model_config": {
        "num_hidden_layers": 3, "hidden_size": 8, "intermediate_size": 8, "num_attention_heads": 1,
        "num_key_value_heads": 1, "vocab_size": 256}})
    clip = gemma_clip("lumina2", gemma_spiece, model)
    text = "a red hat and a sunflower under the sky"
    tw = build_token_weights(clip, text, "sunflower:3, red hat:2")
    assert tw.encoder == "gemma2_2b" and len(tw) == encoded_rows(clip, text)
    sp = clip.tokenizer.gemma2_2b.tokenizer.tokenizer
    ids = [int(t) for t, *_ in clip.tokenize(text)["gemma2_2b"][0]]
    assert ids[0] == sp.bos_id() and not tw.real[0] and all(tw.real[1:])
    assert sp.decode(ids[1:]) == text

    def decode(tokens):  # piece by piece, keeping SentencePiece's word-boundary spaces; '<bos>' spells nothing
        return "".join("" if t == sp.bos_id() else sp.id_to_piece(t).replace("▁", " ") for t in tokens)

    assert weighted(tw, 3.0) == word_rows(ids, decode, "sunflower") and weighted(tw, 3.0)
    assert weighted(tw, 2.0) == word_rows(ids, decode, "red hat") and weighted(tw, 2.0)


def test_gemma2_lumina2_system_prompt_rows_are_not_the_prompt(gemma_spiece):
    """CLIPTextEncodeLumina2 encodes '{system prompt} <Prompt Start> {prompt}': only the prompt's rows count."""
    clip = gemma_clip("lumina2", gemma_spiece)
    system = ("You are an assistant designed to generate superior images with the superior degree of image-text "
              "alignment based on textual prompts or user prompts.")
    text = f"{system} <Prompt Start> a red hat and a sunflower"
    tw = build_token_weights(clip, text, "sunflower:3")
    real = [label for label, r in zip(tw.labels, tw.real) if r]
    assert "".join(real).replace("▁", " ").strip() == "a red hat and a sunflower"
    with pytest.raises(ValueError, match="'assistant' is not in the prompt"):
        build_token_weights(clip, text, "assistant:2")


def test_gemma3_ltx2_rows_are_the_prompt_then_the_connectors_registers(gemma_spiece):
    """LTX-2's conditioning: '<bos>', the prompt, then the register rows LTXAVTEModel's connector appends (to at
    least 1024, a multiple of its register count), counted here by ComfyUI's own Embeddings1DConnector."""
    try:
        from comfy.ldm.lightricks.embeddings_connector import Embeddings1DConnector
    except ImportError:
        host_lacks("comfy.ldm.lightricks.embeddings_connector (LTX-2)")
    import comfy.ops

    connector = Embeddings1DConnector(attention_head_dim=8, num_attention_heads=1, num_layers=1, split_rope=True,
                                      double_precision_rope=True, operations=comfy.ops.manual_cast)
    model = types.SimpleNamespace(video_embeddings_connector=connector)  # the part of LTXAVTEModel that adds rows
    clip = gemma_clip("ltx2", gemma_spiece, model)
    for text, count in (("a red hat and a sunflower", 1), (" ".join(["a red sunflower"] * 400), 400)):
        stream = clip.tokenize(text)["gemma3_12b"][0]
        with torch.no_grad():
            rows = connector(torch.zeros(1, len(stream), 8))[0].shape[1]
        tw = build_token_weights(clip, text, "sunflower:3")
        assert tw.encoder == "gemma3_12b" and len(tw) == rows >= 1024
        assert list(tw.real) == [False] + [True] * (len(stream) - 1) + [False] * (rows - len(stream))
        assert "".join(tw.labels[i] for i in weighted(tw, 3.0)).replace("▁", "") == "sunflower" * count
        assert all(w == 1.0 for w in tw.weights[len(stream):]), "register rows get no weight"
    assert rows % 128 == 0 and rows > 1024


def test_unknown_layout_is_still_a_clear_error_naming_the_new_layouts(comfy):
    import comfy.sdxl_clip

    with pytest.raises(ValueError, match="qwen25_7b .*Qwen-Image.*mistral3_24b .*Flux.2.*gemma2_2b .*Lumina"):
        token_rows(make_clip(comfy.sdxl_clip.SDXLTokenizer()), "a cat")


@pytest.mark.parametrize("kind", ["qwen_image", "kandinsky5"])
def test_tokenfocus_prompt_on_qwen_image_is_clip_text_encode_with_weights_on_the_prompt_rows(comfy, kind):
    """TokenFocus Prompt on Qwen-Image's (and Kandinsky 5's) real CLIP: the conditioning is CLIP Text Encode's of the
    plain text, and its weights (one per cropped row) sit on the words that carried them."""
    from comfy.sd import CLIP
    from tokenfocus.nodes.prompt import TokenFocusPromptNode

    if kind == "kandinsky5":
        kandinsky5 = kandinsky5_encoders()
        target = types.SimpleNamespace(params={}, clip=kandinsky5.te(), tokenizer=kandinsky5.Kandinsky5Tokenizer)
        options = KANDINSKY5_TINY
    else:
        from comfy.text_encoders import qwen_image

        target = types.SimpleNamespace(params={}, clip=qwen_image.te(), tokenizer=qwen_image.QwenImageTokenizer)
        options = QWEN_TINY
    clip = CLIP(target=target, tokenizer_data={}, model_options=options)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in clip.cond_stage_model.named_parameters():
            if ".visual." not in name:      # the vision tower is never run on a text prompt
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    conditioning, weights, _ = TokenFocusPromptNode.execute(clip, "a (red:1.5) kite over (snowy mountains:1.3)", False).args
    plain = comfy.nodes.CLIPTextEncode().encode(clip, "a red kite over snowy mountains")[0]
    assert torch.equal(conditioning[0][0], plain[0][0]) and len(weights) == plain[0][0].shape[1]
    by_weight = {}
    for label, w in zip(weights.labels, weights.weights):
        by_weight.setdefault(w, []).append(label.replace("Ġ", ""))
    assert by_weight[1.5] == ["red"] and "".join(by_weight[1.3]) == "snowymountains"
    assert [label for label, r in zip(weights.labels, weights.real) if not r] == TEMPLATE_TAIL.get(kind, ["<|im_end|>"])


def qwen_edit_clip(hidden):
    """Qwen-Image's real CLIP (tokenizer files as shipped, ComfyUI's own encoder), shrunk to `hidden` wide, with
    a tiny Qwen2.5-VL vision tower of ComfyUI's own class in place of the 32-layer one."""
    from comfy.sd import CLIP
    from comfy.text_encoders import qwen_image
    from comfy.text_encoders.qwen_vl import Qwen2VLVisionTransformer
    import comfy.ops

    options = {"qwen25_7b_model_config": {**QWEN_TINY["qwen25_7b_model_config"], "hidden_size": hidden,
                                          "intermediate_size": hidden}}
    target = types.SimpleNamespace(params={}, clip=qwen_image.te(), tokenizer=qwen_image.QwenImageTokenizer)
    clip = CLIP(target=target, tokenizer_data={}, model_options=options)
    owner = next(m for m in clip.cond_stage_model.modules() if isinstance(getattr(m, "visual", None), torch.nn.Module))
    owner.visual = Qwen2VLVisionTransformer(hidden_size=32, output_hidden_size=hidden, intermediate_size=32, num_heads=2,
                                            num_layers=1, dtype=torch.float32, ops=comfy.ops.disable_weight_init)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in clip.cond_stage_model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return clip


def test_tokenfocus_prompt_with_an_image_encodes_as_qwen_image_edit_and_weights_the_prompt_rows(comfy, tiny, caplog):
    """TokenFocus Prompt given the image to edit: its CONDITIONING is TextEncodeQwenImageEdit's, bit for bit (the
    vision rows in front of the prompt's), its weights sit on the prompt's own rows, and Token Reweighting and
    Token Spacing on the tiny Qwen-Image read them there (the vision rows left out: no 'all rows count' note)."""
    import dataclasses
    import importlib
    import logging

    import tiny_models as tm
    from recorders import AttentionRecorder
    from test_added_rows import bias_rows
    from tokenfocus.nodes.dare import TokenReweightNode
    from tokenfocus.nodes.prompt import TokenFocusPromptNode
    from tokenfocus.nodes.tora import TokenSpacingNode

    edit_node = None
    for module in ("comfy_extras.nodes_qwen", "comfy_extras.nodes.nodes_qwen"):
        try:
            edit_node = getattr(importlib.import_module(module), "TextEncodeQwenImageEdit", None) or edit_node
        except ImportError:
            pass
    if edit_node is None:
        host_lacks("the TextEncodeQwenImageEdit node")
    clip = qwen_edit_clip(tm.TEXT_DIM)
    image = torch.rand(1, 56, 84, 3, generator=torch.Generator().manual_seed(1))
    text = "put a (red:2) hat on the cat"
    conditioning, weights, _ = TokenFocusPromptNode.execute(clip, text, False, image=image).args
    expected = edit_node.execute(clip, "put a red hat on the cat", image=image).args[0]
    context = conditioning[0][0]
    assert torch.equal(context, expected[0][0])
    plain_rows = comfy.nodes.CLIPTextEncode().encode(clip, "put a red hat on the cat")[0][0][0].shape[1]
    assert len(weights) == plain_rows < context.shape[1], "the vision rows come in front of the prompt's"
    assert [label.replace("Ġ", "") for label, w in zip(weights.labels, weights.weights) if w == 2.0] == ["red"]

    model = tiny("qwen_image")
    negative = edit_node.execute(clip, "", image=image).args[0]
    edited = dataclasses.replace(model, positive=conditioning, negative=negative, text_len=context.shape[1],
                                 real_tokens=context.shape[1])
    base = tm.sample(edited)
    recorder = AttentionRecorder(model.double_blocks)
    reweighted, _ = TokenReweightNode.execute(recorder.before(model.patcher), None, strength=1.0, blocks="all",
                                              start_percent=0.0, end_percent=1.0).args
    assert not torch.equal(tm.sample(dataclasses.replace(edited, patcher=recorder.after(reweighted))), base)
    front = context.shape[1] - len(weights)
    assert bias_rows(recorder) == [front + i for i, w in enumerate(weights.weights) if w != 1.0], \
        "the bias sits on the prompt's weighted rows, behind the vision rows"
    spaced, _ = TokenSpacingNode.execute(model.patcher, sigma=1.3, k_mode="auto", fixed_k=8, blocks="all",
                                         start_percent=0.0, end_percent=1.0, apply_to="cond and uncond").args
    with caplog.at_level(logging.WARNING, logger="TokenFocus"):
        assert not torch.equal(tm.sample(dataclasses.replace(edited, patcher=spaced)), base)
    assert "count as text" not in caplog.text and "rows" not in caplog.text, caplog.text


def test_tokenfocus_prompt_refuses_an_image_for_a_text_encoder_that_takes_none(comfy):
    from tokenfocus.nodes.prompt import TokenFocusPromptNode

    clip = make_clip(__import__("comfy.text_encoders.flux", fromlist=["FluxTokenizer"]).FluxTokenizer())
    with pytest.raises(ValueError, match="only Qwen-Image-Edit's text encoder takes"):
        TokenFocusPromptNode.execute(clip, "a (red:2) hat", False, image=torch.rand(1, 56, 56, 3))


def test_tokenfocus_prompt_with_an_image_weights_a_prompt_that_starts_with_a_line_break_on_its_words(comfy):
    """Text-only, the template's line break merges with the prompt's and the crop keeps two template rows more;
    behind the vision rows it does not: the weights are aligned from the end, so each word's weight still sits
    on that word's row (the extra front rows carry weight 1: no bias). A VAE without an image is an error."""
    from tokenfocus.nodes.prompt import TokenFocusPromptNode

    clip = qwen_edit_clip(8)
    image = torch.rand(1, 56, 56, 3)
    _, flat, _ = TokenFocusPromptNode.execute(clip, "a (red:2) hat", False, image=image).args
    _, broken, _ = TokenFocusPromptNode.execute(clip, "\na (red:2) hat", False, image=image).args
    assert len(broken) > len(flat)
    red_from_end = [len(w) - i for w in (flat, broken) for i, v in enumerate(w.weights) if v == 2.0]
    assert red_from_end[0] == red_from_end[1], "the weighted word keeps its row counted from the end"
    assert all(v == 1.0 for v in broken.weights[:len(broken) - len(flat)])
    with pytest.raises(ValueError, match="a VAE is connected but no image"):
        TokenFocusPromptNode.execute(clip, "a (red:2) hat", False, vae=object())
