"""Adapters by attention layout: a model's depth, its attention calls, and where its text tokens are.

An adapter is built by the model's family module (families/), which picks the layout class here and hands
it the family's facts (ModelProfile). Adapters are frozen data (they live on the model clone and are
deep-copied with it); this module imports no ComfyUI code and names no family.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.blocklist import DOUBLE
from .interventions import CROSS_IMAGE, CROSS_TEXT, JOINT, SELF


BLOCK_REPLACE, MARKED = "replace", "marked"
BEFORE, AFTER = "before", "after"


def detect(model_patcher) -> "Adapter":
    """The adapter for a ModelPatcher's diffusion model (families.detect), kept here for existing imports."""
    from ..families import detect as detect_family

    return detect_family(model_patcher)


def __getattr__(name):
    if name == "UnsupportedModelError":  # moved to families.base
        from ..families.base import UnsupportedModelError

        return UnsupportedModelError
    raise AttributeError(name)


class ModelInputs:
    """What one model call's text conditioning looks like.

    The real-token mask is found only when an intervention asks for it: scanning the context on every
    model call would cost the nodes that never need it (Attention Temperature, Reweighting).
    """

    def __init__(self, text_rows: int, find_real_mask=None, image_tokens: int = 0, text_tokens: int | None = None,
                 text_offset: int = 0):
        self.text_rows = text_rows
        # Rows the model puts in front of the conditioning's rows in the text stream (HunyuanVideo 1.5: vision
        # and ByT5 rows).
        self.text_offset = text_offset
        self.image_tokens = image_tokens          # Wan i2v: CLIP image tokens in front of the text
        # Text tokens the blocks see, where the model pads the conditioning itself (Z-Image: to a multiple of
        # 32); None = the blocks report it.
        self.text_tokens = text_tokens
        self._find_real_mask = find_real_mask
        self._real_mask = None

    @property
    def real_mask(self) -> torch.Tensor | None:
        """[B, text_rows] bool, True for the prompt's real tokens; None = all rows count."""
        if self._find_real_mask is not None:
            self._real_mask, self._find_real_mask = self._find_real_mask(), None
        return self._real_mask


class TextView:
    """The text tokens one block receives, which of them are real, and how to hand back edited ones.

    tokens: [B, T, d]. real: [B, T] bool (None = all real), or a callable that finds it: looked at only
    when an edit is computed, not when a cached one is reused. put: callable(new_tokens) -> new block args.
    take_back: callable(block_output, delta) -> block output with delta ([B, T, d]) subtracted from the
    text it carries on to the next block; None where the text is not carried from block to block (Wan).
    """

    def __init__(self, tokens: torch.Tensor, real, put, take_back=None):
        self.tokens = tokens
        self._real = real
        self.put = put
        self.take_back = take_back

    @property
    def real(self) -> torch.Tensor | None:
        if callable(self._real):
            self._real = self._real()
        return self._real


@dataclass(frozen=True)
class Adapter:
    # True where the text tokens are the same in every block and every step (Wan's cross-attention
    # context): edits of them are computed once per run and reused.
    static_text = False

    name: str
    n_double: int
    n_single: int = 0
    kinds: frozenset = frozenset()
    profile: object = None      # families.base.ModelProfile: the family's facts about this model

    @property
    def encoder(self) -> str:
        """Key of the text-encoder layout that conditions this model (runtime/tokens.py)."""
        return self.profile.encoder

    def inspect_inputs(self, context: torch.Tensor | None, extra: dict) -> ModelInputs:
        rows = 0 if context is None else context.shape[1]
        return ModelInputs(text_rows=rows)

    # True where the kind of an attention call follows from its place in the block (the hook then counts
    # the calls); False where it follows from the query length alone.
    counts_calls = True

    # How the runtime reaches the blocks: BLOCK_REPLACE = a patches_replace["dit"] hook per block; MARKED =
    # the model sets transformer_options["block_index"] itself and offers only a patch after each block
    # (patches["double_block"]), so attention calls are placed by that mark and block inputs are edited
    # after the block before.
    block_access = BLOCK_REPLACE

    def conditioning_keys(self, text_keys: int, rows: int, inputs: ModelInputs) -> slice | None:
        """Where the `rows` rows of the positive conditioning sit among a call's `text_keys` text keys (inputs:
        this model call's), or None where they cannot be told apart (the weights do not fit this call)."""
        return slice(0, rows) if text_keys == rows else None

    def classify(self, ctx, call_index: int | None, query_tokens: int) -> str | None:
        """The kind of an attention call inside a hooked block (the call_index-th, with query_tokens
        queries), or None for a call we don't know."""
        raise NotImplementedError

    def block_text_len(self, block: tuple, args: dict) -> int | None:
        """How many text tokens the block's attention sees (joint models), read from the block's inputs."""
        return None

    def text_span(self, block: tuple, text_len: int, seq_len: int) -> slice | None:
        """Where the text tokens sit in a joint attention sequence."""
        return None

    def block_image_len(self, args: dict) -> int | None:
        """How many image (or joint) tokens the block receives."""
        image = args.get("img")
        return image.shape[1] if image is not None else None

    def text_view(self, block: tuple, args: dict, ctx) -> TextView | None:
        """The block's text tokens, or None where this block carries none we can find."""
        raise NotImplementedError


@dataclass(frozen=True)
class WanAdapter(Adapter):
    static_text = True
    i2v_cross_attention: bool = False

    def inspect_inputs(self, context, extra):
        # Wan's T5 context is zero-padded to 512 rows and carries no mask: real rows are the non-zero ones.
        find_real = (lambda: context.ne(0).any(dim=-1)) if context is not None else None
        clip = extra.get("clip_fea")
        image_tokens = int(clip.shape[-2]) if (clip is not None and self.i2v_cross_attention) else 0
        return ModelInputs(context.shape[1] if context is not None else 0, find_real, image_tokens)

    def classify(self, ctx, call_index, query_tokens):
        # A Wan block calls self-attention, then (i2v) the CLIP-image cross-attention, then the text one.
        if call_index == 0:
            return SELF
        if not self.i2v_cross_attention:
            return CROSS_TEXT if call_index == 1 else None
        if call_index == 1:
            # The image branch, with its own key/value projections; without CLIP features (Animate and the camera
            # models take them as optional) it attends to the text rows, but the block's text cross-attention is
            # still the next call.
            return CROSS_IMAGE
        return CROSS_TEXT if call_index == 2 else None

    def text_view(self, block, args, ctx):
        # Every Wan block gets the same context: (i2v) 257 CLIP image rows, then the text rows.
        context = args["txt"]
        skip = ctx.plan.inputs.image_tokens

        def put(new_text):
            edited = dict(args)
            edited["txt"] = torch.cat([context[:, :skip], new_text], dim=1) if skip else new_text
            return edited

        inputs = ctx.plan.inputs
        return TextView(context[:, skip:] if skip else context, lambda: inputs.real_mask, put)


class _JointTextViews:
    """Joint-attention models: `txt` in double/joint blocks, a slice of the joint sequence in single blocks."""

    def text_view(self, block, args, ctx):
        if block[0] == DOUBLE:
            if args.get("txt") is None:
                return None

            def put_txt(new_text):
                edited = dict(args)
                edited["txt"] = new_text
                return edited

            return TextView(args["txt"], self.real_mask(args, ctx, args["txt"].shape[1]), put_txt, _take_back_txt)
        if ctx.text_len is None:
            return None
        sequence = args["img"]
        span = self.text_span(block, ctx.text_len, sequence.shape[1])

        def put_slice(new_text):
            edited = dict(args)
            edited["img"] = torch.cat([sequence[:, : span.start], new_text, sequence[:, span.stop :]], dim=1)
            return edited

        def take_back_slice(out, delta):
            joint = out["img"]
            carried = joint[:, span] - delta
            return {**out, "img": joint.slice_scatter(carried, dim=1, start=span.start, end=span.stop)}

        return TextView(sequence[:, span], self.real_mask(args, ctx, ctx.text_len), put_slice, take_back_slice)

    def real_mask(self, args, ctx, rows):
        inputs = ctx.plan.inputs
        if inputs.real_mask is not None and inputs.real_mask.shape[1] == rows:
            return inputs.real_mask
        return None


def _take_back_txt(out, delta):
    # The text stream a double/joint block hands on (None after SD3's last, context-pre-only block).
    if out.get("txt") is None:
        return out
    return {**out, "txt": out["txt"] - delta}


@dataclass(frozen=True)
class MMDiTAdapter(_JointTextViews, Adapter):
    # ComfyUI runs a replaced MMDiT block under torch.utils.checkpoint, where torch.compile cannot trace a
    # change to an object made outside it (a call counter): the kind comes from the query length instead.
    counts_calls = False

    def classify(self, ctx, call_index, query_tokens):
        # One joint call (text + image queries) per block; MMDiT-X blocks add an image-only self-attention.
        if ctx.text_len is not None and query_tokens == ctx.text_len + ctx.image_len:
            return JOINT
        return SELF if query_tokens == ctx.image_len else None

    def block_text_len(self, block, args):
        return args["txt"].shape[1] if args.get("txt") is not None else None

    def text_span(self, block, text_len, seq_len):
        return slice(0, text_len)


@dataclass(frozen=True)
class MarkedJointAdapter(_JointTextViews, Adapter):
    """One attention call per block over [txt; img], on a model that marks its blocks itself and pads the
    text conditioning up to a multiple of `text_multiple` tokens inside the model (1 = no padding).

    Block inputs are edited after the block before (a post-block patch): block 0's input is out of reach.
    """

    counts_calls = False
    block_access = MARKED
    text_multiple: int = 1

    def inspect_inputs(self, context, extra):
        if context is None:
            return ModelInputs(0)
        batch, rows = context.shape[:2]
        tokens = rows + (-rows) % self.text_multiple

        def find_real():
            real = torch.zeros(batch, tokens, dtype=torch.bool, device=context.device)
            real[:, :rows] = True       # the rows past the conditioning are the model's pad token
            return real

        return ModelInputs(rows, find_real if tokens != rows else None, text_tokens=tokens)

    def classify(self, ctx, call_index, query_tokens):
        # The refiners before the blocks attend over the text alone or the image alone, and run before the
        # model marks any block: a marked call longer than the text is the joint one.
        return JOINT if ctx.text_len is not None and query_tokens > ctx.text_len else None

    def text_span(self, block, text_len, seq_len):
        return slice(0, text_len)

    def conditioning_keys(self, text_keys, rows, inputs):
        return slice(0, rows) if rows <= text_keys < rows + self.text_multiple else None


@dataclass(frozen=True)
class MarkedCrossAttentionAdapter(Adapter):
    """Each block: self-attention of the image tokens, then cross-attention to a text context, on a model that
    marks its blocks itself (transformer_options["block_index"]) and offers no patch that reaches a block's
    inputs (Kandinsky 5): attention calls are placed by the mark and told apart by their order in the block; the
    text cannot be edited (the family says why, and the nodes that edit it refuse)."""

    block_access = MARKED

    def classify(self, ctx, call_index, query_tokens):
        return {0: SELF, 1: CROSS_TEXT}.get(call_index)

    def text_view(self, block, args, ctx):
        return None


@dataclass(frozen=True)
class FluxAdapter(_JointTextViews, Adapter):
    text_first: bool = True
    # True where ComfyUI pads the text with zero rows (Flux.2, up to 512 in front): those rows are not text.
    zero_rows_are_padding: bool = False

    # Rows the model adds to the text stream itself from other conds, in the order it puts them around the
    # conditioning's rows: ((cond key, BEFORE or AFTER), ...). HunyuanVideo 1.5: vision then ByT5 rows in front;
    # HunyuanImage 2.1: ByT5 rows after. They are not prompt text.
    extra_text_rows: tuple = ()

    def inspect_inputs(self, context, extra):
        if context is None:
            return super().inspect_inputs(context, extra)
        if self.zero_rows_are_padding:
            return ModelInputs(context.shape[1], lambda: context.ne(0).any(dim=-1))
        if self.extra_text_rows:
            return _with_extra_rows(context, extra, self.extra_text_rows)
        return super().inspect_inputs(context, extra)

    def conditioning_keys(self, text_keys, rows, inputs):
        if self.zero_rows_are_padding:
            # The positive conditioning's rows, after the zero rows ComfyUI puts in front of them.
            return slice(text_keys - rows, text_keys) if rows <= text_keys else None
        if self.extra_text_rows:
            start = inputs.text_offset
            fits = text_keys == inputs.text_tokens and rows == inputs.text_rows
            return slice(start, start + rows) if fits else None
        return super().conditioning_keys(text_keys, rows, inputs)

    def classify(self, ctx, call_index, query_tokens):
        return JOINT if call_index == 0 else None

    def block_text_len(self, block, args):
        return args["txt"].shape[1] if block[0] == DOUBLE else None

    def text_span(self, block, text_len, seq_len):
        return slice(0, text_len) if self.text_first else slice(seq_len - text_len, seq_len)


@dataclass(frozen=True)
class MaskedCrossAttentionAdapter(Adapter):
    """Each block: self-attention, then cross-attention to a text context that is the same in every block and
    step, whose padding the conditioning marks with an attention mask (1 = token, 0 = padding)."""

    static_text = True

    def inspect_inputs(self, context, extra):
        mask = extra.get("attention_mask")
        if context is None or mask is None or mask.ndim != 2 or mask.shape[-1] != context.shape[1]:
            return ModelInputs(0 if context is None else context.shape[1])
        return ModelInputs(context.shape[1], lambda: mask.to(context.device) > 0)

    text_key = "txt"        # the block argument that carries the text context

    def classify(self, ctx, call_index, query_tokens):
        return {0: SELF, 1: CROSS_TEXT}.get(call_index)

    def text_view(self, block, args, ctx):
        def put(new_text):
            edited = dict(args)
            edited[self.text_key] = new_text
            return edited

        inputs = ctx.plan.inputs
        return TextView(args[self.text_key], lambda: inputs.real_mask, put)


@dataclass(frozen=True)
class AudioVideoAdapter(MaskedCrossAttentionAdapter):
    """Audio-video blocks that carry both streams (`img` = (video, audio)): the video's self-attention, then its
    cross-attention to its own text context (`v_context`, the same in every block and step), then the audio's
    self- and text cross-attention and the audio<->video cross-attentions. Only the video's two calls are told
    apart; the audio's are left alone."""

    text_key = "v_context"

    def block_image_len(self, args):
        # None where the block skips its video stream (transformer_options["run_vx"]): no call is the video's.
        if not (args.get("transformer_options") or {}).get("run_vx", True):
            return None
        return args["img"][0].shape[1]

    def classify(self, ctx, call_index, query_tokens):
        return super().classify(ctx, call_index, query_tokens) if ctx.image_len is not None else None

    def text_view(self, block, args, ctx):
        return None if self.block_image_len(args) is None else super().text_view(block, args, ctx)


def _with_extra_rows(context, extra, layout) -> ModelInputs:
    """The inputs of a model that adds rows from other conds around the conditioning's rows; the prompt's rows
    are the conditioning's, less those its attention mask (if any) marks as padding."""
    def rows_of(key):
        value = extra.get(key)
        return int(value.shape[-2]) if isinstance(value, torch.Tensor) else 0

    before = sum(rows_of(key) for key, where in layout if where == BEFORE)
    after = sum(rows_of(key) for key, where in layout if where == AFTER)
    batch, rows = context.shape[:2]

    def find_real():
        real = torch.zeros(batch, before + rows + after, dtype=torch.bool, device=context.device)
        mask = extra.get("attention_mask")
        real[:, before:before + rows] = mask.to(context.device).bool() if isinstance(mask, torch.Tensor) else True
        return real

    return ModelInputs(rows, find_real, text_tokens=before + rows + after, text_offset=before)
