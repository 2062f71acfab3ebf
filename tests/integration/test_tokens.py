"""Token rows against ComfyUI's own tokenizers and text-encoder classes.

Each encoder is ComfyUI's real class (FluxClipModel, SD3ClipModel, WanT5Model, HunyuanVideoClipModel)
shrunk through ComfyUI's own `<name>_model_config` model option to a layer or a few of width 8, with
uninitialised weights: only the number of output rows is compared, and that comes from ComfyUI's code.
The CLIP is a real comfy.sd.CLIP built with no_init=True, so `clip.tokenize` is ComfyUI's own method.

Stand-ins, because the files are not in ComfyUI's source tree:
  - umT5 (Wan): its SentencePiece model ships inside the text-encoder checkpoint, so the tests load
    ComfyUI's pile-T5 SentencePiece model (t5_pile_tokenizer/tokenizer.model) into ComfyUI's own
    WanT5Tokenizer. Row layout and piece conventions are the same; the vocabulary is not.
  - LLaMA (HunyuanVideo): llama_tokenizer/tokenizer.json is missing, so the real-tokenizer test is
    skipped; the template crop is checked on hand-written LLaMA-3 id streams instead.
"""
import types
from pathlib import Path

import pytest
import torch
from comfy_env import host_lacks

from tokenfocus.core.importance import TokenWeights
from tokenfocus.core.token_tables import parse_table, table_bytes
from tokenfocus.runtime.tokens import build_token_weights, context_layout, llama_prompt_span, token_rows

TINY_CLIP = {"num_hidden_layers": 3, "hidden_size": 8, "intermediate_size": 8, "num_attention_heads": 1,
             "projection_dim": 8}  # 3 layers: SD3 reads layer -2
TINY_T5 = {"num_layers": 1, "d_ff": 8, "num_heads": 1, "d_kv": 8}  # d_model stays 4096: SD3 concatenates at 4096
TINY_OPTIONS = {
    "clip_l_model_config": TINY_CLIP,
    "clip_g_model_config": TINY_CLIP,
    "t5xxl_model_config": TINY_T5,
    "umt5xxl_model_config": {**TINY_T5, "d_model": 8},
    "llama_model_config": {"num_hidden_layers": 4, "hidden_size": 8, "intermediate_size": 8,
                           "num_attention_heads": 1, "num_key_value_heads": 1},  # 4 layers: it reads layer -3
}

PROMPT = 'A man in a red hat holds a Sunflower, next to "sunflowers" and a (sunflower:1.2) under the sky.'


def make_clip(tokenizer, model=None):
    import comfy.sd

    clip = comfy.sd.CLIP(no_init=True)  # tokenize() needs only these two; encoding is done in the tests
    clip.tokenizer, clip.tokenizer_options = tokenizer, {}
    if model is not None:
        clip.cond_stage_model = model
    return clip


def encoded_rows(clip, text):
    """Rows of the conditioning ComfyUI's encoder makes of text, tokenized as CLIPTextEncode does."""
    with torch.no_grad():
        return clip.cond_stage_model.encode_token_weights(clip.tokenize(text))[0].shape[1]


@pytest.fixture(scope="module")
def text_encoders(comfy):
    import comfy.text_encoders.flux as flux
    import comfy.text_encoders.hunyuan_video as hunyuan_video
    import comfy.text_encoders.sd3_clip as sd3_clip
    import comfy.text_encoders.wan as wan

    return types.SimpleNamespace(flux=flux, sd3_clip=sd3_clip, wan=wan, hunyuan_video=hunyuan_video, root=comfy.path)


@pytest.fixture(scope="module")
def flux_clip(text_encoders):
    te = text_encoders.flux
    return make_clip(te.FluxTokenizer(), te.flux_clip()(model_options=TINY_OPTIONS))


@pytest.fixture(scope="module")
def sd3_clip(text_encoders):
    te = text_encoders.sd3_clip
    return make_clip(te.SD3Tokenizer(), te.sd3_clip()(model_options=TINY_OPTIONS))


@pytest.fixture(scope="module")
def wan_clip(text_encoders):
    spiece = Path(text_encoders.root) / "comfy" / "text_encoders" / "t5_pile_tokenizer" / "tokenizer.model"
    te = text_encoders.wan
    tokenizer = te.WanT5Tokenizer(tokenizer_data={"spiece_model": spiece.read_bytes()})  # stand-in vocabulary
    return make_clip(tokenizer, te.te()(model_options=TINY_OPTIONS))


@pytest.fixture(scope="module")
def encoding_wan_clip(text_encoders):
    """A whole comfy.sd.CLIP, for the node: Token Importance encodes its text as CLIP Text Encode does."""
    import comfy.sd

    spiece = Path(text_encoders.root) / "comfy" / "text_encoders" / "t5_pile_tokenizer" / "tokenizer.model"
    te = text_encoders.wan
    target = types.SimpleNamespace(params={}, clip=te.te(), tokenizer=te.WanT5Tokenizer)
    return comfy.sd.CLIP(target=target, tokenizer_data={"spiece_model": spiece.read_bytes()}, model_options=TINY_OPTIONS)


def labels_of(tw, rows):
    return [tw.labels[i] for i in rows]


# ---------------------------------------------------------------- Flux: T5 rows only

def test_flux_rows_are_the_t5_stream(flux_clip):
    labels, real, encoder = token_rows(flux_clip, PROMPT)
    assert encoder == "t5xxl"
    assert len(labels) == encoded_rows(flux_clip, PROMPT) == 256


def test_flux_labels_line_up_with_the_tokenizer_pieces(flux_clip):
    text = "A man in a red hat holds a Sunflower, next to sunflowers."  # no weight syntax: one segment
    hf = flux_clip.tokenizer.t5xxl.tokenizer
    pieces = hf.convert_ids_to_tokens(hf(text)["input_ids"])  # ends with </s>
    labels, real, _ = token_rows(flux_clip, text)
    n = len(pieces) - 1
    assert labels[:n + 1] == pieces and real[:n] == [True] * n and not any(real[n:])
    assert labels[n + 1:] == ["<pad>"] * (256 - n - 1)


def test_flux_finds_words_across_pieces_at_every_occurrence(flux_clip):
    tw = build_token_weights(flux_clip, PROMPT, "sunflower:2, red hat:1.5, sky")
    emphasised = {i for i, w in enumerate(tw.weights) if w != 1.0}
    sunflower = [i for i in emphasised if tw.weights[i] == 2.0]
    # 'Sunflower' splits into ▁Sun + flower; '"sunflowers"' is another word and is left alone; the
    # '(sunflower:1.2)' segment, stripped of its weight syntax by ComfyUI, is the second occurrence.
    assert labels_of(tw, sorted(sunflower)) == ["▁Sun", "flower", "▁sunflower"]
    assert labels_of(tw, sorted(i for i in emphasised if tw.weights[i] == 1.5)) == ["▁red", "hat", "▁sky"]
    assert all(tw.real[i] for i in emphasised)


@pytest.fixture(scope="module")
def chroma_clip(comfy):
    import comfy.text_encoders.pixart_t5 as pixart_t5

    return make_clip(pixart_t5.PixArtTokenizer(), pixart_t5.pixart_te()(model_options=TINY_OPTIONS))


def test_t5_only_layout_chroma_rows_are_the_unpadded_t5_stream(chroma_clip):
    """Chroma's T5-only encoder (ComfyUI's PixArt tokenizer on its shipped T5 tokenizer files): no padding."""
    labels, real, encoder = token_rows(chroma_clip, PROMPT)
    assert encoder == "t5"
    assert len(labels) == encoded_rows(chroma_clip, PROMPT)
    assert labels[-1] == "</s>" and not real[-1] and all(real[:-1])
    tw = build_token_weights(chroma_clip, PROMPT, "sunflower:2, red hat:1.5")
    assert labels_of(tw, [i for i, w in enumerate(tw.weights) if w == 2.0]) == ["▁Sun", "flower", "▁sunflower"]
    assert labels_of(tw, [i for i, w in enumerate(tw.weights) if w == 1.5]) == ["▁red", "hat"]


def test_t5_only_layout_ltxv_rows_are_the_t5_stream_padded_to_128(comfy):
    import comfy.text_encoders.lt as lt

    clip = make_clip(lt.LTXVT5Tokenizer(), lt.ltxv_te()(model_options=TINY_OPTIONS))
    labels, real, encoder = token_rows(clip, PROMPT)
    assert encoder == "t5" and len(labels) == encoded_rows(clip, PROMPT) == 128
    n = sum(real)
    assert all(real[:n]) and labels[n] == "</s>" and not any(real[n:])
    tw = build_token_weights(clip, PROMPT, "red hat:1.5")
    assert labels_of(tw, [i for i, w in enumerate(tw.weights) if w == 1.5]) == ["▁red", "hat"]


def test_flux_repeated_word_every_occurrence(flux_clip):
    text = "a cat, a dog, another cat and a Cat"
    tw = build_token_weights(flux_clip, text, "cat:3")
    assert labels_of(tw, [i for i, w in enumerate(tw.weights) if w == 3.0]) == ["▁cat", "▁cat", "▁Cat"]


def test_same_word_split_differently_is_still_found(flux_clip):
    # T5 gives 'astronaut' one piece but 'Astronaut' two, so matching piece ids would miss the second.
    tw = build_token_weights(flux_clip, "an astronaut riding a horse, the Astronaut waves", "astronaut:2")
    assert labels_of(tw, [i for i, w in enumerate(tw.weights) if w == 2.0]) == ["▁astronaut", "▁Astro", "naut"]


def test_missing_word_is_a_clear_error(flux_clip):
    with pytest.raises(ValueError) as info:
        build_token_weights(flux_clip, "a red hat on a table", "tulip:2")
    message = str(info.value)
    assert "'tulip' is not in the prompt" in message and "▁red" in message and "▁table" in message


def test_partial_word_is_not_a_match(flux_clip):
    with pytest.raises(ValueError, match="'hat' is not in the prompt"):
        build_token_weights(flux_clip, "that is all", "hat")


def test_tokenizer_options_change_the_rows(flux_clip):
    clip = make_clip(flux_clip.tokenizer, flux_clip.cond_stage_model)
    clip.set_tokenizer_option("t5xxl_min_length", 300)  # what a CLIP-settings node may do upstream
    labels, _, _ = token_rows(clip, PROMPT)
    assert len(labels) == encoded_rows(clip, PROMPT) == 300


# ---------------------------------------------------------------- SD3: CLIP-L/G rows, then T5 rows

def test_sd3_rows_and_both_segments_weighted(sd3_clip):
    tw = build_token_weights(sd3_clip, PROMPT, "hat:2")
    assert tw.encoder == "sd3" and len(tw) == encoded_rows(sd3_clip, PROMPT) == 77 + 77
    hits = [i for i, w in enumerate(tw.weights) if w == 2.0]
    assert labels_of(tw, hits) == ["hat</w>", "hat"] and hits[0] < 77 <= hits[1]
    assert tw.labels[0] == "<|startoftext|>" and not tw.real[0]


def test_sd3_density_in_both_segments(sd3_clip):
    tw = build_token_weights(sd3_clip, "the astronaut, with a sunflower", use_density=True)
    by_label = {label: weight for label, weight, real in zip(tw.labels, tw.weights, tw.real) if real}
    for comma, function_word, content in ((",</w>", "the</w>", "astronaut</w>"), (",", "▁the", "▁astronaut")):
        assert by_label[comma] < by_label[function_word] < 1.0 < by_label[content] <= 2.0


def test_sd3_long_prompt_spans_two_clip_chunks(sd3_clip):
    text = ", ".join(f"word{i} sunflower" for i in range(30))
    labels, real, _ = token_rows(sd3_clip, text)
    clip_rows = 2 * 77
    assert len(labels) == encoded_rows(sd3_clip, text) and len(labels) > clip_rows
    tw = build_token_weights(sd3_clip, text, "sunflower:2")
    hits = [i for i, w in enumerate(tw.weights) if w == 2.0]
    assert sum(1 for i in hits if i < clip_rows) == 30 and any(77 < i < clip_rows for i in hits)
    assert sum(1 for i in hits if i >= clip_rows and tw.labels[i].startswith("▁sun")) == 30


def test_sd3_without_t5_has_only_clip_rows(text_encoders):
    te = text_encoders.sd3_clip
    clip = make_clip(te.SD3Tokenizer(), te.sd3_clip(t5=False)(model_options=TINY_OPTIONS))
    labels, real, encoder = token_rows(clip, PROMPT)
    assert len(labels) == encoded_rows(clip, PROMPT) == 77
    assert all(label.endswith("</w>") for label, r in zip(labels, real) if r)


# ---------------------------------------------------------------- Wan: umT5 rows, zero-padded to 512

def test_wan_rows_are_padded_to_512(wan_clip):
    labels, real, encoder = token_rows(wan_clip, PROMPT)
    assert encoder == "umt5xxl" and len(labels) == encoded_rows(wan_clip, PROMPT) == 512
    n = sum(real)
    assert real[:n] == [True] * n and not any(real[n:])  # no start token: the prompt begins at row 0


def test_wan_finds_words_across_pieces(wan_clip):
    tw = build_token_weights(wan_clip, "an astronaut riding a horse, the Astronaut waves", "astronaut:2")
    hits = [i for i, w in enumerate(tw.weights) if w == 2.0]
    words = "".join(tw.labels[i] for i in hits).replace("▁", " ").split()
    assert [w.lower() for w in words] == ["astronaut", "astronaut"] and len(hits) > 2  # several pieces each


def test_wan_density_orders_words(wan_clip):
    tw = build_token_weights(wan_clip, "the astronaut, with a sunflower", use_density=True)
    w = {label: weight for label, weight, real in zip(tw.labels, tw.weights, tw.real) if real}
    assert w[","] < w["▁the"] == w["▁with"] == w["▁a"] < 1.0
    content = [weight for label, weight in w.items() if label not in (",", "▁the", "▁with", "▁a")]
    assert len(content) >= 2 and min(content) > 1.0


# ---------------------------------------------------------------- tables and the one call

def test_table_round_trip_through_build(flux_clip):
    made = build_token_weights(flux_clip, PROMPT, "sky:2", use_density=True)
    saved = parse_table(table_bytes(made))
    again = build_token_weights(flux_clip, PROMPT, table=saved)
    assert again.weights == made.weights
    with pytest.raises(ValueError, match="does not match this prompt|rows"):
        build_token_weights(flux_clip, "a different prompt entirely", table=saved)


def test_no_sources_is_neutral(wan_clip):
    tw = build_token_weights(wan_clip, PROMPT)
    assert isinstance(tw, TokenWeights) and tw.is_neutral()


def test_unsupported_layout_names_the_supported_ones(text_encoders):
    import comfy.sdxl_clip

    clip = make_clip(comfy.sdxl_clip.SDXLTokenizer())
    with pytest.raises(ValueError, match="Supported text encoders: umt5xxl.*Wan.*Flux.*SD3.*HunyuanVideo"):
        token_rows(clip, "a cat")


# ---------------------------------------------------------------- HunyuanVideo (LLaMA)

def test_hunyuan_video_with_real_llama_tokenizer(text_encoders):
    folder = Path(text_encoders.root) / "comfy" / "text_encoders" / "llama_tokenizer"
    if not (folder / "tokenizer.json").is_file():
        host_lacks(f"the LLaMA tokenizer file {folder}/tokenizer.json is missing from this source tree (the "
                   f"crop is checked on hand-written id streams below)")
    te = text_encoders.hunyuan_video
    clip = make_clip(te.HunyuanVideoTokenizer(), te.hunyuan_video_clip()(model_options=TINY_OPTIONS))
    tw = build_token_weights(clip, "a red hat and a red car", "red:2")
    assert len(tw) == encoded_rows(clip, "a red hat and a red car")
    assert sum(1 for w in tw.weights if w == 2.0) == 2


BOS, HEADER, USER, HEADER_END, NL2, EOT, PAD = 128000, 128006, 882, 128007, 271, 128009, 128258
SYSTEM = [HEADER, 9125, HEADER_END, NL2, 5, 6, 7, EOT]  # '<|start_header_id|>system<|end_header_id|>\n\n...'


@pytest.mark.parametrize("ids", [
    [BOS, *SYSTEM, HEADER, USER, HEADER_END, NL2, 64, 2579, 9072, EOT],  # the template as ComfyUI formats it
    [BOS, *SYSTEM, HEADER, USER, HEADER_END, 1038, 64, 2579, EOT],  # prompt merged into the newlines
    [BOS, *SYSTEM, HEADER, USER, HEADER_END, NL2, 64, 2579, EOT, PAD, PAD, PAD],  # padded after the prompt
    [BOS, *SYSTEM, HEADER, USER, HEADER_END, NL2, 64, 2579],  # no closing <|eot_id|>
    [BOS, 64, 2579, 9072],  # no user header at all
])
def test_llama_crop_matches_hunyuan_video(text_encoders, ids):
    te = text_encoders.hunyuan_video
    model = te.hunyuan_video_clip()(model_options=TINY_OPTIONS)
    tokens = {"l": [[(49406, 1.0)] + [(49407, 1.0)] * 76], "llama": [[(t, 1.0) for t in ids]]}
    with torch.no_grad():
        rows = model.encode_token_weights(tokens)[0].shape[1]
    start, stop, first_prompt = llama_prompt_span(ids)
    assert len(ids[start:stop]) == rows and start <= first_prompt


class StandInLlamaTokenizer:
    """Stands in for ComfyUI's LLAMA3Tokenizer (whose tokenizer.json is not in the tree): a few words."""

    VOCAB = {" red": 2579, " hat": 9072, " and": 323, " car": 1841, "a": 64, " a": 264, "red": 1171}

    def __init__(self):
        self.inv_vocab = {i: w.replace(" ", "Ġ") for w, i in self.VOCAB.items()}
        self.inv_vocab.update({BOS: "<|begin_of_text|>", HEADER: "<|start_header_id|>", USER: "user",
                               HEADER_END: "<|end_header_id|>", NL2: "ĊĊ", EOT: "<|eot_id|>", 9125: "system"})
        self.start_token, self.end_token, self.pad_token = BOS, None, PAD
        self.tokens_start, self.tokenizer_adds_end_token = 1, False
        self.tokenizer = self

    def __call__(self, text):
        ids, rest = [BOS], text
        while rest:
            word = max((w for w in self.VOCAB if rest.startswith(w)), key=len)
            ids.append(self.VOCAB[word])
            rest = rest[len(word):]
        return {"input_ids": ids}

    def get_vocab(self):
        return {v: k for k, v in self.inv_vocab.items()}


class StandInHunyuanTokenizer:
    """Stands in for HunyuanVideoTokenizer: the real CLIP-L half, the LLaMA half from StandInLlamaTokenizer."""

    def __init__(self, sd1_clip):
        self.clip_l = sd1_clip.SDTokenizer()
        self.llama = StandInLlamaTokenizer()

    def tokenize_with_weights(self, text, return_word_ids=False, **kwargs):
        template = [BOS] + SYSTEM + [HEADER, USER, HEADER_END, NL2]
        prompt = self.llama(text)["input_ids"][1:] + [EOT]
        llama = [(t, 1.0, 0 if t == BOS else 1) for t in template + prompt]
        return {"l": self.clip_l.tokenize_with_weights(text, return_word_ids), "llama": [llama]}


def test_hunyuan_video_layout_with_stand_in_tokenizer(text_encoders):
    import comfy.sd1_clip

    te = text_encoders.hunyuan_video
    clip = make_clip(StandInHunyuanTokenizer(comfy.sd1_clip), te.hunyuan_video_clip()(model_options=TINY_OPTIONS))
    text = "a red hat and a red car"
    tw = build_token_weights(clip, text, "red:2", use_density=True)
    assert tw.encoder == "llama" and len(tw) == encoded_rows(clip, text)
    assert list(tw.labels) == ["a", "Ġred", "Ġhat", "Ġand", "Ġa", "Ġred", "Ġcar", "<|eot_id|>"]
    assert list(tw.real) == [True] * 7 + [False]
    assert tw.weights[1] == tw.weights[5] > 2.0 and tw.weights[0] < 1.0 and tw.weights[7] == 1.0
    assert context_layout(clip, text).segments[0].style == "byte_bpe"


def test_token_importance_node_weights_the_named_words_and_shows_them(encoding_wan_clip):
    from tokenfocus.nodes.dare import TokenImportanceNode

    wan_clip = encoding_wan_clip

    weights, table = TokenImportanceNode.execute(wan_clip, "a sunflower in a vase", "sunflower:2", False).args
    assert len(weights) == 512
    assert weights.weights[:5] == (1.0, 2.0, 2.0, 2.0, 1.0), "every piece of 'sunflower' and nothing else"
    assert "flow" in table and "2.00" in table
    with pytest.raises(ValueError, match="tulip"):
        TokenImportanceNode.execute(wan_clip, "a sunflower in a vase", "tulip:2", False)
    neutral, _ = TokenImportanceNode.execute(wan_clip, "a sunflower in a vase", "", False).args
    assert neutral.is_neutral() and sum(neutral.real) == 8, "no source: weights 1, the 8 prompt pieces still marked real"


def test_flux_density_spreads_content_words_and_guidance_suppresses_only_the_top(flux_clip, tiny):
    # The issue this guards: rank-based density put every content word at 1.5-2.0 (two-piece words at the
    # cap), and Importance Guidance then suppressed nearly all of them.
    from tokenfocus.nodes.dare import ImportanceGuidanceNode

    text = "a snowy mountain village at dusk, cinematic lighting, 4k, a giraffe wearing a red scarf"
    tw = build_token_weights(flux_clip, text, use_density=True)
    content = sorted({w for w, real in zip(tw.weights, tw.real) if real and w > 1.0})
    assert content[0] < 1.4 and content[-1] > 1.8, content           # common and rare words far apart
    assert len(content) >= 6                                          # a spread, not one or two levels
    _, report = ImportanceGuidanceNode.execute(tiny("flux").patcher, tw, scale=1.0, start_percent=0.0, end_percent=0.5).args
    suppressed, real = (int(n) for n in report.split("Suppressed in the extra pass: ")[1].split(" prompt")[0].split(" of "))
    assert 0 < suppressed <= real // 3, report


@pytest.mark.parametrize("tokenizer, rows", [("ZImageTokenizer", None), ("KleinTokenizer", 512), ("KleinTokenizer8B", 512)])
def test_qwen3_chat_template_rows_hold_the_prompt_inside_the_template(comfy, tokenizer, rows):
    """Z-Image and Flux.2 Klein encode the whole ChatML template (Klein padded to 512): on ComfyUI's own Qwen
    tokenizer files, the prompt's rows are exactly the user's text, every occurrence of a word is weighted, and
    the template and padding rows stay at 1."""
    import importlib

    module = "comfy.text_encoders.z_image" if tokenizer == "ZImageTokenizer" else "comfy.text_encoders.flux"
    try:
        cls = getattr(importlib.import_module(module), tokenizer)
    except (ImportError, AttributeError):
        host_lacks(f"{module}.{tokenizer}")
    clip = make_clip(cls())
    weights = build_token_weights(clip, PROMPT, "sunflower:2")
    sub = getattr(clip.tokenizer, clip.tokenizer.clip)
    stream = clip.tokenize(PROMPT)[clip.tokenizer.clip][0]
    assert len(weights) == (rows or len(stream)) == len(stream)
    ids = [int(t) for t, _w in stream]
    real_ids = [i for i, r in zip(ids, weights.real) if r]
    assert sub.tokenizer.decode(real_ids) == PROMPT
    assert weights.labels[0] == "<|im_start|>" and not weights.real[0]
    heavy = [label for label, w in zip(weights.labels, weights.weights) if w == 2.0]
    # 'Sunflower' and '(sunflower:1.2)' (these templates take the text as it is: no weight syntax), not 'sunflowers'
    assert "".join(heavy).replace("Ġ", "").lower() == "sunflower" * 2, heavy
    assert all(w == 1.0 for w, r in zip(weights.weights, weights.real) if not r)


def test_z_image_weights_from_its_template_reweight_the_tiny_z_image(tiny):
    """Token Importance on Z-Image's own tokenizer feeds Token Reweighting on a Z-Image whose conditioning has
    the rows that template gives (one per token): the node accepts them and the output changes."""
    import dataclasses

    import tiny_models as tm
    from tokenfocus.nodes.dare import TokenReweightNode

    try:
        from comfy.text_encoders.z_image import ZImageTokenizer
    except ImportError:
        host_lacks("comfy.text_encoders.z_image")
    model = tiny("z_image")
    weights = build_token_weights(make_clip(ZImageTokenizer()), "a red hat and a sunflower", "sunflower:3")
    context = torch.randn(1, len(weights), tm.TEXT_DIM, generator=torch.Generator().manual_seed(5))
    model = dataclasses.replace(model, positive=[[context, {}]], text_len=len(weights), real_tokens=len(weights))
    patched, report = TokenReweightNode.execute(model.patcher, weights, strength=1.0, blocks="all", start_percent=0.0,
                                                end_percent=1.0).args
    base = tm.sample(model)
    assert not torch.equal(tm.sample(dataclasses.replace(model, patcher=patched)), base)
