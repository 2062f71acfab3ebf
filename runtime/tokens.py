"""Which rows of the conditioning tensor hold which prompt tokens, per text-encoder layout.

The prompt is tokenized exactly as CLIPTextEncode does (`clip.tokenize(text)`, with word ids so that real
tokens are told from start/end/padding), and the token streams are laid out as the text encoder lays out
its output. ComfyUI is never imported here: everything is read off the CLIP object handed in.

Layouts (ComfyUI v0.3.64; the 2026 host's where said):
  umt5xxl  Wan 2.x: the umT5 stream is the context, one row per token, no start token, '</s>', then zero
           padding to 512 rows (text_encoders/wan.py:14, sd1_clip.py:613-621, zeroed at sd1_clip.py:271).
  t5xxl    Flux: the context is the T5 stream alone (end token, padding to 256); CLIP-L only gives the pooled
           vector (text_encoders/flux.py:12, 49-55).
  sd3      SD3/SD3.5: CLIP-L and CLIP-G rows side by side (77 per chunk, padded to 4096 wide), then the T5
           rows (padded to 77) (text_encoders/sd3_clip.py:35-37, 110-141). The prompt is in both segments.
  t5       Chroma, LTX-Video: the T5 stream alone, prompt rows and '</s>', not padded (text_encoders/pixart_t5.py,
           min_length 1) or padded to 128 rows (text_encoders/lt.py).
  qwen3_4b Z-Image, Flux.2 Klein 4B (qwen3_8b: Klein 9B): the whole ChatML template is the context, one row per
           token (text_encoders/z_image.py, flux.py KleinTokenizer, which pads to 512): the prompt is the
           user's text inside it.
  llama    HunyuanVideo: the prompt is formatted into a system template, and only the user part survives:
           from after '<|end_header_id|>' '\\n\\n' to the '<|eot_id|>' inclusive (hunyuan_video.py:98-131).
  qwen25_7b
           Qwen-Image: Qwen2.5-VL over its chat template; QwenImageTEModel.encode_token_weights crops the rows
           before the second '<|im_start|>' and, when 'user' '\\n' follow it, those two too (qwen_image.py, the
           same rule on 0.3.64 and 0.12). What survives: the prompt, '<|im_end|>' '\\n' '<|im_start|>' 'assistant'
           '\\n'. The template is one "word" to ComfyUI's tokenizer (disable_weights), so the rows carry no word
           ids: the prompt's rows are those whose bytes fall between '<|im_start|>user\\n' and the '<|im_end|>'
           that closes the user's turn. Qwen-Image-Edit's conditioning (TextEncodeQwenImageEdit[Plus]) also holds
           the input images' vision rows, whose number Token Importance cannot know: its rows do not fit, and the
           attention nodes say so (EDIT_NOTE).
  qwen25_7b_byt5
           HunyuanVideo 1.5, HunyuanImage 2.1 (2026 host; HunyuanImage 2.1 on 0.3.64 too): the same crop
           (hunyuan_image.py HunyuanImageTEModel; its refiner rule keeps the rows from 36 on when the text starts
           with '<'); the conditioning holds the Qwen2.5-VL rows only: the vision rows and the ByT5 rows of
           quoted text go in extra conds, which the model puts in front of (1.5) or after (2.1) them, so they
           get no weight here. Told from Qwen-Image by the tokenizer's ByT5 half (clip.tokenizer.byt5).
  qwen25_7b_kandinsky5
           Kandinsky 5 (2026 host): Kandinsky5TEModel crops its Qwen2.5-VL rows by QwenImageTEModel's rule
           (kandinsky5.py); its templates end the user's turn at '<|im_end|>' (no assistant turn), so what survives
           is the prompt and that '<|im_end|>'. The model's text cross-attention reads these rows; the CLIP-L
           stream ('l') only gives the pooled vector (encode_adm), so it has no rows. With CLIPTextEncodeKandinsky5
           the rows are those of its qwen25_7b text.
  mistral3_24b
           Flux.2 dev (2026 host): Mistral 3 over '[SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]{}[/INST]', the whole
           template one row per token from the '<s>' start token, no padding (flux.py Flux2Tokenizer: min_length
           1; the pad_left it declares never fires). The prompt's rows are those between '[INST]' and '[/INST]'.
  gemma2_2b
           Lumina 2 / Neta (2026 host): Gemma 2 over the text as it is, '<bos>' then one row per token, unpadded
           (lumina2.py): word ids mark the prompt. CLIPTextEncodeLumina2 prefixes a system prompt and
           ' <Prompt Start> ': only the rows after that marker are prompt text.
  gemma3_12b
           LTX-2 (2026 host): Gemma 3 12B, '<bos>' then one row per token (lt.py Gemma3_12BTokenizer), then
           LTXAVTEModel's embeddings connectors append learnable register rows up to a multiple of their
           register count (128) and at least 1024 rows (lightricks/embeddings_connector.py): register rows are
           not prompt text.
"""
from __future__ import annotations

import json
import numbers
import weakref
from dataclasses import dataclass

from ..core.prompt_syntax import char_weights, escaped, plain_text, rows_from_chars
from ..core.importance import (
    BYTE_BPE, CLIP_BPE, EMBEDDING_LABEL, PAD_LABEL, SENTENCEPIECE, TokenWeights, align_table, combine,
    density_weights, find_phrase, parse_weight_spec, piece_text, rank_log_prob,
)

# Layouts by text encoder; which model families each conditions is said by the family modules (families/).
ENCODERS = {
    "umt5xxl": "umT5-XXL",
    "t5xxl": "T5-XXL (CLIP-L gives only the pooled vector)",
    "sd3": "CLIP-L/G + T5-XXL",
    "llama": "LLaMA chat template",
    "t5": "T5-XXL alone (PixArt-style tokenizer: unpadded, or padded to 128 rows for LTX-Video)",
    "qwen3_4b": "Qwen3-4B chat template, whole (Z-Image unpadded; Flux.2 Klein 4B padded to 512)",
    "qwen3_8b": "Qwen3-8B chat template, whole (Flux.2 Klein 9B, padded to 512)",
    "qwen25_7b": "Qwen2.5-VL chat template, cropped to the user's turn (Qwen-Image text prompts)",
    "qwen25_7b_byt5": "Qwen2.5-VL chat template, cropped to the user's turn; vision and ByT5 rows come from extra conds",
    "qwen25_7b_kandinsky5": "Qwen2.5-VL chat template, cropped to the user's turn (CLIP-L gives only the pooled vector)",
    "mistral3_24b": "Mistral 3 chat template, whole, from its start token (Flux.2 dev)",
    "gemma2_2b": "Gemma 2: start token and the prompt, unpadded (Lumina 2 / Neta)",
    "gemma3_12b": "Gemma 3 12B: start token, the prompt, then the connector's register rows (LTX-2)",
}

# The token streams clip.tokenize returns identify the layout (HiDream's {g, l, t5xxl, llama} does not match).
_LAYOUT_BY_STREAMS = {
    frozenset({"umt5xxl"}): "umt5xxl",
    frozenset({"l", "t5xxl"}): "t5xxl",
    frozenset({"g", "l", "t5xxl"}): "sd3",
    frozenset({"l", "llama"}): "llama",
    frozenset({"t5xxl"}): "t5",
    frozenset({"qwen3_4b"}): "qwen3_4b",
    frozenset({"qwen3_8b"}): "qwen3_8b",
    frozenset({"qwen25_7b"}): "qwen25_7b",              # or qwen25_7b_byt5: _qwen25_encoder tells them apart
    frozenset({"qwen25_7b", "byt5"}): "qwen25_7b_byt5",  # HunyuanImageTokenizer, when the prompt quotes text
    frozenset({"l", "qwen25_7b"}): "qwen25_7b_kandinsky5",  # Kandinsky5Tokenizer: CLIP-L for the pooled vector
    frozenset({"mistral3_24b"}): "mistral3_24b",
    frozenset({"gemma2_2b"}): "gemma2_2b",
    frozenset({"gemma3_12b"}): "gemma3_12b",
}
_SUB_TOKENIZER_ATTR = {"l": "clip_l", "g": "clip_g", "t5xxl": "t5xxl", "llama": "llama"}

# LLaMA-3 ids HunyuanVideoClipModel looks for when it cuts the prompt out of its template.
_HEADER_START, _USER, _HEADER_END, _EOT, _DOUBLE_NEWLINE = 128006, 882, 128007, 128009, 271


@dataclass(frozen=True)
class Segment:
    """One tokenizer's stream as it lands in the context, from row `offset` on."""

    stream: str          # key in clip.tokenize's output: "t5xxl", "l", ...
    offset: int
    ids: tuple           # token id per row; None for an embedding row
    labels: tuple[str, ...]
    real: tuple[bool, ...]
    style: str           # piece convention (core.importance.PIECE_STYLES)
    tokenizer: object    # the ComfyUI SDTokenizer that produced the stream

    def rows(self, local_rows):
        return [self.offset + i for i in local_rows]


@dataclass(frozen=True)
class ContextLayout:
    encoder: str
    n_rows: int
    segments: tuple[Segment, ...]

    @property
    def labels(self) -> list[str]:
        return self._per_row("labels", PAD_LABEL)

    @property
    def real(self) -> list[bool]:
        return self._per_row("real", False)

    def _per_row(self, field, fill):
        out = [fill] * self.n_rows
        for seg in self.segments:
            out[seg.offset:seg.offset + len(seg.ids)] = getattr(seg, field)
        return out


# ---------------------------------------------------------------- layout

def context_layout(clip, text: str) -> ContextLayout:
    streams = clip.tokenize(text, return_word_ids=True)
    encoder = _LAYOUT_BY_STREAMS.get(frozenset(streams))
    if encoder is None:
        from ..families import families_for_encoder

        supported = "; ".join(f"{name} ({what}): {', '.join(families_for_encoder(name))}" for name, what in ENCODERS.items())
        raise ValueError(
            f"Token Importance does not know how this CLIP lays out its tokens (streams {sorted(streams)}). "
            f"Supported text encoders: {supported}"
        )
    tok = clip.tokenizer
    if encoder == "umt5xxl":
        sub = getattr(tok, getattr(tok, "clip", "clip_umt5xxl"))  # SD1Tokenizer keeps it as 'clip_umt5xxl'
        seg = _segment("umt5xxl", 0, _stream_rows(streams["umt5xxl"], sub), SENTENCEPIECE, sub)
        return ContextLayout(encoder, len(seg.ids), (seg,))
    if encoder == "t5":
        sub = getattr(tok, getattr(tok, "clip", "clip_t5xxl"))  # SD1Tokenizer keeps it as 'clip_t5xxl'
        seg = _segment("t5xxl", 0, _stream_rows(streams["t5xxl"], sub), SENTENCEPIECE, sub)
        return ContextLayout(encoder, len(seg.ids), (seg,))
    if encoder == "t5xxl":
        seg = _segment("t5xxl", 0, _stream_rows(streams["t5xxl"], tok.t5xxl), SENTENCEPIECE, tok.t5xxl)
        return ContextLayout(encoder, len(seg.ids), (seg,))
    if encoder == "sd3":
        return _sd3_layout(clip, streams)
    if encoder in ("qwen3_4b", "qwen3_8b"):
        return _chat_template_layout(tok, streams, encoder)
    if encoder in ("qwen25_7b", "qwen25_7b_byt5"):
        return _qwen25_layout(tok, streams, _qwen25_encoder(tok))
    if encoder == "qwen25_7b_kandinsky5":
        return _qwen25_layout(tok, streams, encoder)
    if encoder == "mistral3_24b":
        return _mistral3_layout(tok, streams)
    if encoder in ("gemma2_2b", "gemma3_12b"):
        return _gemma_layout(clip, streams, encoder)
    return _llama_layout(tok, streams)


def _segment(stream, offset, rows, style, sub) -> Segment:
    ids, labels, real = rows
    return Segment(stream, offset, tuple(ids), tuple(labels), tuple(real), style, sub)


def _stream_rows(chunks, sub):
    """(ids, labels, real) for a stream of chunks of (token, weight, word id), in context order.

    Word id 0 marks what the tokenizer added (sd1_clip.py:576-621): the start token, the end token, then
    padding. Long CLIP prompts come in several 77-token chunks, which the encoder concatenates (sd1_clip.py:68).
    """
    ids, labels, real = [], [], []
    for chunk in chunks:
        ended = False
        for pos, (token, _weight, word) in enumerate(chunk):
            is_id = isinstance(token, numbers.Integral)
            ids.append(int(token) if is_id else None)
            if word > 0:
                real.append(True)
                labels.append(sub.inv_vocab.get(int(token), f"<{int(token)}>") if is_id else EMBEDDING_LABEL)
                continue
            real.append(False)
            special = is_id and not ended and (
                (pos == 0 and token == sub.start_token) or token == sub.end_token)
            ended = ended or (is_id and token == sub.end_token)
            labels.append(sub.inv_vocab.get(token, f"<{token}>") if special else PAD_LABEL)
    return ids, labels, real


def _sd3_layout(clip, streams) -> ContextLayout:
    """SD3ClipModel.encode_token_weights: rows = [CLIP-L|G rows cut to the shorter of the two] + [T5 rows].

    A checkpoint may lack any of the three encoders (sd3_clip.py:63-81); the model on the CLIP says which.
    """
    tok = clip.tokenizer
    model = getattr(clip, "cond_stage_model", None)
    has = {name: model is None or getattr(model, name, None) is not None for name in ("clip_l", "clip_g", "t5xxl")}
    segments, offset = [], 0
    clip_streams = [(s, tok.clip_l if s == "l" else tok.clip_g) for s, on in (("l", has["clip_l"]), ("g", has["clip_g"])) if on]
    if clip_streams:
        rows = [_stream_rows(streams[s], sub) for s, sub in clip_streams]
        cut = min(len(r[0]) for r in rows)
        ids, labels, real = rows[0]  # L and G use the same BPE, so their real tokens coincide
        stream, sub = clip_streams[0]
        segments.append(_segment(stream, 0, (ids[:cut], labels[:cut], real[:cut]), CLIP_BPE, sub))
        offset = cut
    if has["t5xxl"]:
        segments.append(_segment("t5xxl", offset, _stream_rows(streams["t5xxl"], tok.t5xxl), SENTENCEPIECE, tok.t5xxl))
        offset += len(segments[-1].ids)
    if not segments:
        return ContextLayout("sd3", 77, ())  # the model returns 77 zero rows (sd3_clip.py:143-144)
    return ContextLayout("sd3", offset, tuple(segments))


def llama_prompt_span(ids) -> tuple[int, int | None, int]:
    """(start, stop, first_prompt_row) of the rows HunyuanVideoClipModel keeps, as a Python slice of ids.

    Its rule (hunyuan_video.py:104-131): after the last '<|start_header_id|> user <|end_header_id|>',
    keep up to the first '<|eot_id|>' inclusive (or drop the last row if there is none), and skip the
    '\\n\\n' token that follows the header. first_prompt_row is the first row after the header itself.
    """
    start, stop, header_end = 0, None, None
    for i, token in enumerate(ids):
        if token == _HEADER_START and list(ids[i + 1:i + 3]) == [_USER, _HEADER_END]:
            start, stop, header_end = i + 2, -1, i + 2
        if token == _EOT and stop == -1:
            stop = i + 1
    if len(ids) > start + 2 and ids[start + 1] == _DOUBLE_NEWLINE:
        start += 2
    first_prompt = start if header_end is None else max(start, header_end + 1)
    return start, stop, first_prompt


def _llama_layout(tok, streams) -> ContextLayout:
    chunks = streams["llama"]
    if any(isinstance(entry[0], dict) for chunk in chunks for entry in chunk):
        raise ValueError("Token Importance does not support image embeddings in the LLaMA prompt "
                         "(HunyuanVideo image-to-video); use a text-only prompt")
    ids, labels, real = _stream_rows(chunks[:1], tok.llama)  # the model crops the first chunk only
    start, stop, first_prompt = llama_prompt_span(ids)
    kept = range(len(ids))[start:stop]
    real = [real[i] and i >= first_prompt and ids[i] != _EOT for i in kept]
    rows = ([ids[i] for i in kept], [labels[i] for i in kept], real)
    seg = _segment("llama", 0, rows, BYTE_BPE, tok.llama)
    return ContextLayout("llama", len(seg.ids), (seg,))


def chat_prompt_span(labels) -> tuple[int, int]:
    """[start, stop) of the user's text in a ChatML template ('<|im_start|>user\\n{}<|im_end|>...'): after the first
    '<|im_start|>' 'user' and the newline, up to the '<|im_end|>' that closes the user's turn."""
    start, stop = 0, len(labels)
    for i in range(len(labels) - 1):
        if labels[i] == "<|im_start|>" and labels[i + 1] == "user":
            start = i + 3
            break
    ends = [i for i, label in enumerate(labels) if label == "<|im_end|>" and i >= start]
    return start, ends[0] if ends else stop


def _chat_template_layout(tok, streams, encoder) -> ContextLayout:
    """Z-Image and Flux.2 Klein encode the whole chat template, one row per token (Klein's tokenizer then pads to
    512): the prompt's rows are the user's text inside it; template and padding rows are not prompt text."""
    sub = getattr(tok, getattr(tok, "clip", encoder))
    ids, labels, real = _stream_rows(streams[encoder], sub)
    start, stop = chat_prompt_span(labels)
    real = [r and start <= i < stop for i, r in enumerate(real)]
    seg = _segment(encoder, 0, (ids, labels, real), BYTE_BPE, sub)
    return ContextLayout(encoder, len(seg.ids), (seg,))


# ---------------------------------------------------------------- chat templates without word ids

def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE's printable stand-in character -> byte (GPT-2's table, which Qwen and Mistral's tekken use)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTES_OF_CHAR = _byte_decoder()


def piece_bytes(piece: str) -> bytes:
    """The bytes a byte-level BPE piece spells; a special token ('<|im_end|>', '[INST]') spells its own text."""
    if all(ch in _BYTES_OF_CHAR for ch in piece):
        return bytes(_BYTES_OF_CHAR[ch] for ch in piece)
    return piece.encode("utf-8")


def prompt_rows_between(labels, real, opening: bytes, closing: bytes, special=frozenset()) -> list[bool]:
    """Which rows spell the prompt inside a chat template whose rows carry no word ids.

    The rows' bytes are laid end to end (a multi-byte character may be split across rows); the prompt is what
    lies after the first `opening` and before the first `closing` after it (the whole text when `opening` is not
    there; to the end when `closing` is not). A row is prompt text when it spells any of those bytes and is
    neither a special token (vision markers in the user's turn) nor a row the tokenizer added (real False).
    """
    pieces = [piece_bytes(label) for label in labels]
    spans, at = [], 0
    for piece in pieces:
        spans.append((at, at + len(piece)))
        at += len(piece)
    text = b"".join(pieces)
    found = text.find(opening)
    start = found + len(opening) if found >= 0 else 0
    stop = text.find(closing, start)
    stop = len(text) if stop < 0 else stop
    return [bool(r) and label not in special and a < stop and b > start and b > a
            for (a, b), label, r in zip(spans, labels, real)]


def _special_pieces(sub) -> frozenset:
    """The special tokens of a ComfyUI tokenizer's Hugging Face tokenizer (added tokens, chat markers)."""
    hf = sub.tokenizer
    found = set(getattr(hf, "all_special_tokens", None) or ())
    added = getattr(hf, "added_tokens_encoder", None) or {}
    found.update(added)
    decoder = getattr(hf, "added_tokens_decoder", None) or {}
    found.update(str(token) for token in decoder.values())
    return frozenset(found)


# Qwen2.5-VL ids that QwenImageTEModel.encode_token_weights looks for when it crops the template.
_IM_START, _QWEN_USER, _QWEN_NEWLINE, _QWEN_LT = 151644, 872, 198, 27
EDIT_NOTE = ("Qwen-Image-Edit's conditioning (TextEncodeQwenImageEdit / Plus) also holds the input images' vision "
             "rows, so weights from Token Importance (text only) cannot fit it: to weight the words of an edit, "
             "give TokenFocus Prompt the image (and VAE) in place of TextEncodeQwenImageEdit")


def rows_mismatch_note(encoder: str, weight_rows: int, context_rows: int) -> str:
    """What an encoder's layout says when its weights meet a conditioning with other rows ('' when nothing).

    The hook for layouts whose conditioning can hold rows Token Importance cannot count from the text alone:
    Qwen-Image's template with the input images' vision rows (Qwen-Image-Edit) always has more rows.
    """
    if encoder == "qwen25_7b" and context_rows > weight_rows:
        return f" If this conditioning comes from TextEncodeQwenImageEdit: {EDIT_NOTE}."
    return ""


def _qwen25_encoder(tok) -> str:
    """HunyuanImageTokenizer (HunyuanImage 2.1, HunyuanVideo 1.5) has a ByT5 half; QwenImageTokenizer has none."""
    return "qwen25_7b_byt5" if getattr(tok, "byt5", None) is not None else "qwen25_7b"


def qwen25_template_end(ids, hunyuan_image=False) -> int:
    """Where QwenImageTEModel.encode_token_weights starts the rows it keeps (out[:, template_end:]).

    Its rule (qwen_image.py, both hosts): the second '<|im_start|>' (or the only one), then past 'user' '\\n' if
    they follow it; with none, -1 (the last row alone). HunyuanImageTEModel first keeps rows 36 on when the text
    starts with '<' (token 27) and is longer than 36 rows (its refiner template; hunyuan_image.py).
    """
    if hunyuan_image and ids and ids[0] == _QWEN_LT and len(ids) > 36:
        return 36
    template_end, seen = -1, 0
    for i, token in enumerate(ids):
        if token == _IM_START and seen < 2:
            template_end, seen = i, seen + 1
    if len(ids) > template_end + 3 and ids[template_end + 1] == _QWEN_USER and ids[template_end + 2] == _QWEN_NEWLINE:
        template_end += 3
    return template_end


def _qwen25_layout(tok, streams, encoder) -> ContextLayout:
    """Qwen-Image / HunyuanImage 2.1 / HunyuanVideo 1.5 / Kandinsky 5: the template cropped as the text encoder
    crops it."""
    chunks = streams["qwen25_7b"]
    if any(isinstance(entry[0], dict) for chunk in chunks for entry in chunk):
        raise ValueError(f"Token Importance: {EDIT_NOTE}.")
    sub = getattr(tok, getattr(tok, "clip", "qwen25_7b"))
    ids, labels, real = _stream_rows(chunks[:1], sub)  # the encoder crops the first chunk's rule
    kept = range(len(ids))[qwen25_template_end(ids, hunyuan_image=encoder == "qwen25_7b_byt5"):]
    ids, labels, real = [ids[i] for i in kept], [labels[i] for i in kept], [real[i] for i in kept]
    real = prompt_rows_between(labels, real, b"<|im_start|>user\n", b"<|im_end|>", _special_pieces(sub))
    seg = _segment("qwen25_7b", 0, (ids, labels, real), BYTE_BPE, sub)
    return ContextLayout(encoder, len(seg.ids), (seg,))


def _mistral3_layout(tok, streams) -> ContextLayout:
    """Flux.2 dev: every row of the Mistral 3 template is in the context; the prompt is inside '[INST]'...'[/INST]'."""
    sub = getattr(tok, getattr(tok, "clip", "mistral3_24b"))
    ids, labels, real = _stream_rows(streams["mistral3_24b"], sub)
    real = prompt_rows_between(labels, real, b"[INST]", b"[/INST]", _special_pieces(sub))
    seg = _segment("mistral3_24b", 0, (ids, labels, real), BYTE_BPE, sub)
    return ContextLayout("mistral3_24b", len(seg.ids), (seg,))


_PROMPT_START = "<Prompt Start>"  # CLIPTextEncodeLumina2: f'{system_prompt} <Prompt Start> {user_prompt}'
LTX2_MIN_ROWS, LTX2_REGISTERS = 1024, 128  # lightricks/embeddings_connector.py Embeddings1DConnector.forward


def _gemma_layout(clip, streams, encoder) -> ContextLayout:
    """Lumina 2 / Neta (Gemma 2) and LTX-2 (Gemma 3 12B): '<bos>' then the prompt, word ids intact; LTX-2's
    connector appends its learnable register rows after them."""
    tok = clip.tokenizer
    sub = getattr(tok, getattr(tok, "clip", encoder))
    ids, labels, real = _stream_rows(streams[encoder], sub)
    text = "".join(piece_text(label, SENTENCEPIECE) if r else "\0" for label, r in zip(labels, real))
    marker = text.find(_PROMPT_START)
    if marker >= 0:  # the system prompt CLIPTextEncodeLumina2 puts in front is not the user's prompt
        cut = marker + len(_PROMPT_START)
        chars = 0
        for i, label in enumerate(labels):
            chars += len(piece_text(label, SENTENCEPIECE)) if real[i] else 1
            if chars <= cut:
                real[i] = False
    seg = _segment(encoder, 0, (ids, labels, real), SENTENCEPIECE, sub)
    n_rows = len(seg.ids)
    if encoder == "gemma3_12b":
        registers = _ltx2_register_count(clip)
        if registers:
            n_rows = -(-max(LTX2_MIN_ROWS, n_rows) // registers) * registers
    return ContextLayout(encoder, n_rows, (seg,))


def _ltx2_register_count(clip) -> int:
    """The register rows' period of LTX-2's video connector: read off the CLIP's model when it has one."""
    model = getattr(clip, "cond_stage_model", None)
    connector = getattr(model, "video_embeddings_connector", None)
    count = getattr(connector, "num_learnable_registers", None)
    return LTX2_REGISTERS if count is None else int(count or 0)


def token_rows(clip, text: str) -> tuple[list[str], list[bool], str]:
    """(label per context row, real-token mask, encoder name) for the conditioning this CLIP makes of text."""
    layout = context_layout(clip, text)
    return layout.labels, layout.real, layout.encoder


# ---------------------------------------------------------------- phrases

def phrase_pieces(phrase: str, sub) -> list[str]:
    """The phrase as pieces of the same ComfyUI tokenizer, without the start/end tokens it adds."""
    ids = sub.tokenizer(phrase)["input_ids"]
    ids = ids[sub.tokens_start:-1 if sub.tokenizer_adds_end_token else None]  # as sd1_clip.py:569-573 does
    return [sub.inv_vocab.get(i, f"<{i}>") for i in ids]


def locate_phrase(pieces, real, phrase: str, sub, style: str) -> list[list[int]]:
    """Row lists, one per occurrence of the phrase (as whole words, any case) in the real rows."""
    return find_phrase(pieces, real, phrase_pieces(phrase, sub), style)


def locate_in_layout(layout: ContextLayout, phrase: str) -> list[list[int]]:
    found = []
    for seg in layout.segments:
        for rows in locate_phrase(seg.labels, seg.real, phrase, seg.tokenizer, seg.style):
            found.append(seg.rows(rows))
    return found


def _missing_phrase_error(phrase: str, layout: ContextLayout) -> ValueError:
    shown = []
    for seg in layout.segments:
        tokens = [label for label, r in zip(seg.labels, seg.real) if r]
        more = f" … (+{len(tokens) - 80})" if len(tokens) > 80 else ""
        shown.append(f"  {seg.stream}: {' '.join(tokens[:80]) or '(none)'}{more}")
    return ValueError(f"Token Importance: '{phrase}' is not in the prompt (whole words, any case). "
                      f"The prompt's tokens:\n" + "\n".join(shown))


# ---------------------------------------------------------------- word frequency from the tokenizer itself

_LOG_PROBS = weakref.WeakKeyDictionary()


def piece_log_probs(hf_tokenizer) -> tuple[list[float] | None, int]:
    """(natural-log unigram probability per token id, or None; vocabulary size).

    SentencePiece unigram models (T5, umT5) store each piece's log-probability on their training corpus: a
    word-frequency table of the encoder's own languages (umT5: multilingual), which matches wordfreq's to
    0.4 Zipf on single-piece English words. BPE vocabularies (CLIP, LLaMA) store none: there the id, in merge
    order, is the frequency rank (rank_log_prob). Special pieces get no probability of their own here: they
    are never real prompt text.
    """
    try:
        return _LOG_PROBS[hf_tokenizer]
    except (KeyError, TypeError):
        pass
    scores = _piece_scores(hf_tokenizer)
    result = (scores, len(scores) if scores is not None else len(hf_tokenizer.get_vocab()))
    try:
        _LOG_PROBS[hf_tokenizer] = result
    except TypeError:
        pass
    return result


def _piece_scores(hf_tokenizer):
    processor = getattr(hf_tokenizer, "tokenizer", None)  # ComfyUI's SPieceTokenizer wraps a processor
    if processor is not None and hasattr(processor, "get_score"):
        return [processor.get_score(i) for i in range(processor.get_piece_size())]
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)  # transformers fast tokenizers (T5)
    if backend is not None:
        model = json.loads(backend.to_str()).get("model", {})
        if model.get("type") == "Unigram":
            return [float(score) for _piece, score in model["vocab"]]
    return None


def segment_log_probs(seg: Segment) -> list[float]:
    scores, size = piece_log_probs(seg.tokenizer.tokenizer)
    out = []
    for token, is_real in zip(seg.ids, seg.real):
        if not is_real or token is None:
            out.append(0.0)
        elif scores is None:
            out.append(rank_log_prob(token))
        else:
            out.append(scores[token] if token < len(scores) else rank_log_prob(size))
    return out


def layout_density(layout: ContextLayout, low: float, high: float) -> list[float]:
    """The automatic semantic-density estimate per context row, range [low, high]; 1 off the prompt."""
    density = [1.0] * layout.n_rows
    for seg in layout.segments:
        seg_weights = density_weights(seg.labels, segment_log_probs(seg), style=seg.style, real=seg.real,
                                      low=low, high=high)
        density[seg.offset:seg.offset + len(seg_weights)] = seg_weights
    return density


# ---------------------------------------------------------------- the node's one call

def build_token_weights(clip, text: str, named_spec: str = "", use_density: bool = False, table=None,
                        *, low: float = 0.5, high: float = 2.0) -> TokenWeights:
    """Token weights for the conditioning `clip` makes of `text`, one per context row.

    named_spec: 'sunflower:2, red hat:1.5' (core.importance.parse_weight_spec); every occurrence, in every
    segment, is weighted; a phrase found nowhere is a ValueError listing the prompt's tokens.
    use_density: multiply in the automatic semantic-density estimate, range [low, high].
    table: a TokenWeights saved for this same prompt and encoder (runtime.table_folder.load_table reads one).
    Sources multiply (core.importance.combine); padding and special rows stay 1.
    """
    layout = context_layout(clip, text)
    labels, real = layout.labels, layout.real

    named = []
    for phrase, weight in parse_weight_spec(named_spec):
        occurrences = locate_in_layout(layout, phrase)
        if not occurrences:
            raise _missing_phrase_error(phrase, layout)
        named.extend((rows, weight) for rows in occurrences)

    density = layout_density(layout, low, high) if use_density else None

    table_weights = None
    if table is not None:
        table_weights = align_table(table, labels, real, layout.encoder)

    weights = combine(real, density=density, named=named, table=table_weights)
    return TokenWeights(labels=labels, weights=weights, real=real, encoder=layout.encoder, prompt=text)


# ---------------------------------------------------------------- TokenFocus Prompt

def prompt_token_weights(clip, segments, prompt: str, use_density: bool = False, *, low: float = 0.5,
                         high: float = 2.0) -> tuple[TokenWeights, str]:
    """(weights per context row, the text to encode) for a prompt in ComfyUI's weight syntax.

    segments: the (text, weight) pieces ComfyUI's parser makes of the prompt. The text to encode is the
    prompt without its syntax (parentheses it wrote as \\( stay literal): CLIP Text Encode given that text
    produces the same conditioning. Its tokens get the weights of the characters they spell, times the
    density estimate if asked; padding and special rows keep 1.
    """
    plain = plain_text(segments)
    text = escaped(plain)
    layout = context_layout(clip, text)
    chars = char_weights(segments)
    inline = [1.0] * layout.n_rows
    for seg in layout.segments:
        seg_weights = rows_from_chars(seg.labels, seg.real, seg.style, plain, chars)
        inline[seg.offset:seg.offset + len(seg_weights)] = seg_weights
    density = layout_density(layout, low, high) if use_density else None
    weights = combine(layout.real, density=density, table=inline)
    return TokenWeights(labels=layout.labels, weights=weights, real=layout.real, encoder=layout.encoder, prompt=prompt), text
