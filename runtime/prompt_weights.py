"""Token weights that travel inside the CONDITIONING they were made for (TokenFocus Prompt).

TokenFocus Prompt puts its weights in each cond's dict under COND_KEY, so ConditioningCombine, SetArea,
SetTimestepRange... keep every prompt's weights with its own rows. ComfyUI copies that dict into the
sampler's conds and gives each a uuid; every model call names the uuid of each of its batch chunks
(transformer_options["uuids"]), so the weights are looked up per chunk, whatever the guider batches.

The weights also carry a fingerprint of the rows they were made for: weights that meet another
conditioning (a stale prompt, a blended or re-encoded one, another prompt of the same length) are an
error when sampling starts. Token Importance's weights carry a signature instead: it encodes its text
once, as CLIP Text Encode does, and keeps a small random projection of each row, compared with a
tolerance (the CLIP Text Encode next to it made the conditioning in another call, maybe on another
device or precision). Another prompt of the same length differs in at least the row of a changed token.

ConditioningConcat keeps the first prompt's dict and drops the appended prompt's: the first prompt's
weights still match the leading rows, and the appended rows are left unweighted, said in the log. Finding
the appended prompt's weights again would need a table of every weight made, kept across nodes; the pack
keeps no state outside the model options and the conditioning.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..core.importance import TokenWeights
from .tokens import rows_mismatch_note

COND_KEY = "tokenfocus_weights"


@dataclass(frozen=True)
class PromptWeights(TokenWeights):
    """TokenWeights that know the conditioning rows they belong to: a digest of their exact values
    (TokenFocus Prompt), or a signature compared with a tolerance (Token Importance)."""

    fingerprint: str = ""
    signature: bytes = b""     # float32 [rows, SIGNATURE_DIMS]: each row projected on fixed directions


# Per row: SIGNATURE_DIMS random directions keep a row's distance to another within ~25 % (Johnson-
# Lindenstrauss), and rows of the same prompt encoded twice differ by rounding only (well under 1 %).
SIGNATURE_DIMS = 32
SIGNATURE_TOLERANCE = 0.1

def fingerprint(context: torch.Tensor, rows: int | None = None) -> str:
    """Digest of the first `rows` rows of a [1, rows, dim] conditioning tensor (exact values)."""
    part = context if rows is None else context[:, :rows]
    data = part.detach().to("cpu").contiguous()
    if data.dtype == torch.bfloat16:        # numpy has no bfloat16: digest the same bits as int16
        data = data.view(torch.int16)
    return hashlib.sha1(data.numpy().tobytes() + str(tuple(part.shape)).encode()).hexdigest()


def signature(context: torch.Tensor, rows: int | None = None) -> bytes:
    """Each of the first `rows` rows of a [1, rows, dim] conditioning projected on SIGNATURE_DIMS fixed
    random directions (seeded by the width), as float32 bytes."""
    part = (context if rows is None else context[:, :rows])[0].detach().to("cpu", torch.float32)
    part = torch.nan_to_num(part)       # an encoder that overflows in half precision still signs the same way
    directions = torch.randn(part.shape[-1], SIGNATURE_DIMS, generator=torch.Generator().manual_seed(part.shape[-1]))
    return (part @ directions).contiguous().numpy().tobytes()


def same_rows(signed: bytes, context: torch.Tensor) -> bool:
    """Are these the rows the signature was taken of, up to rounding? Row by row, relative to its size."""
    n = len(signed) // (4 * SIGNATURE_DIMS)
    if n == 0 or n > context.shape[1]:
        return False
    theirs = torch.frombuffer(bytearray(signed), dtype=torch.float32).view(n, SIGNATURE_DIMS)
    ours = torch.frombuffer(bytearray(signature(context, n)), dtype=torch.float32).view(n, SIGNATURE_DIMS)
    size = torch.maximum(theirs.norm(dim=-1), ours.norm(dim=-1))
    floor = 1e-6 * float(size.max()) + 1e-12        # rows that are zero in both (padding) agree
    return bool(((theirs - ours).norm(dim=-1) <= SIGNATURE_TOLERANCE * size + floor).all())


def attach(conditioning: list, weights: TokenWeights, prompt_last: bool = False) -> tuple[list, list]:
    """(conditioning with the weights in each cond's dict, one PromptWeights per cond).

    prompt_last: the conditioning holds other rows in front of the prompt's (Qwen-Image-Edit's vision rows):
    the weights describe, and their digest is of, its last rows."""
    out, attached = [], []
    for context, extras in conditioning:
        if prompt_last and context.shape[1] > len(weights):
            rows = context[:, context.shape[1] - len(weights):]
        else:
            _check_rows(weights, context)
            rows = context
        bound = PromptWeights(labels=weights.labels, weights=weights.weights, real=weights.real,
                              encoder=weights.encoder, prompt=weights.prompt, fingerprint=fingerprint(rows))
        out.append([context, {**extras, COND_KEY: bound}])
        attached.append(bound)
    return out, attached


def recognising(weights: TokenWeights, conditioning: list) -> PromptWeights:
    """Token Importance's weights with the signature of the conditioning its text encodes to."""
    context = conditioning[0][0]
    _check_rows(weights, context)
    return PromptWeights(labels=weights.labels, weights=weights.weights, real=weights.real, encoder=weights.encoder,
                         prompt=weights.prompt, signature=signature(context))


def encode_like_clip_text_encode(clip, text: str) -> list:
    """The CONDITIONING CLIP Text Encode makes of `text` (older CLIPs: without scheduled hooks)."""
    tokens = clip.tokenize(text)
    if hasattr(clip, "encode_from_tokens_scheduled"):
        return clip.encode_from_tokens_scheduled(tokens)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def _check_rows(weights: TokenWeights, context: torch.Tensor) -> None:
    if context.shape[1] != len(weights):
        raise ValueError(
            f"The {weights.encoder} encoder gave {context.shape[1]} rows where its tokenizer laid out "
            f"{len(weights)}; this text encoder is not supported for token weights")


def mismatch_message(label: str, weights: TokenWeights, context: torch.Tensor) -> str:
    identified = getattr(weights, "fingerprint", "") or getattr(weights, "signature", b"")
    if len(weights) > context.shape[1] or not identified:
        return (f"{label}: the token weights have {len(weights)} rows ({weights.encoder} encoding of their "
                f"prompt) but the positive conditioning has {context.shape[1]}. Build the weights from the same "
                "CLIP and the same prompt text that encode the positive conditioning."
                + rows_mismatch_note(weights.encoder, len(weights), context.shape[1]))
    if not getattr(weights, "fingerprint", ""):
        return (f"{label}: the token weights were made for another prompt than the positive conditioning they "
                f"meet (their prompt: {weights.prompt[:80]!r}). Give Token Importance the same CLIP and exactly "
                "the text that CLIP Text Encode encodes for the positive prompt."
                + rows_mismatch_note(weights.encoder, len(weights), context.shape[1]))
    return (f"{label}: the token weights were made for another conditioning than the positive prompt they meet "
            f"(their prompt: {weights.prompt[:80]!r}). Connect them with the CONDITIONING of the same "
            "TokenFocus Prompt node, or leave token_weights unconnected: the weights then come with the "
            "conditioning itself.")
