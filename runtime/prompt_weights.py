"""Token weights that travel inside the CONDITIONING they were made for (TokenFocus Prompt).

TokenFocus Prompt puts its weights in each cond's dict under COND_KEY, so ConditioningCombine, SetArea,
SetTimestepRange... keep every prompt's weights with its own rows. ComfyUI copies that dict into the
sampler's conds and gives each a uuid; every model call names the uuid of each of its batch chunks
(transformer_options["uuids"]), so the weights are looked up per chunk, whatever the guider batches.

The weights also carry a fingerprint of the rows they were made for: weights that meet another
conditioning (a stale prompt, a blended or re-encoded one, another prompt of the same length) are an
error when sampling starts. ConditioningConcat keeps the first prompt's dict and appends rows: its
weights still match the leading rows, and the appended ones are left unweighted.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..core.importance import TokenWeights

COND_KEY = "tokenfocus_weights"


@dataclass(frozen=True)
class PromptWeights(TokenWeights):
    """TokenWeights that know the conditioning rows they belong to (a digest of their values)."""

    fingerprint: str = ""


def fingerprint(context: torch.Tensor, rows: int | None = None) -> str:
    """Digest of the first `rows` rows of a [1, rows, dim] conditioning tensor (exact values)."""
    part = context if rows is None else context[:, :rows]
    data = part.detach().to("cpu").contiguous()
    if data.dtype == torch.bfloat16:        # numpy has no bfloat16: digest the same bits as int16
        data = data.view(torch.int16)
    return hashlib.sha1(data.numpy().tobytes() + str(tuple(part.shape)).encode()).hexdigest()


def attach(conditioning: list, weights: TokenWeights) -> tuple[list, list]:
    """(conditioning with the weights in each cond's dict, one PromptWeights per cond)."""
    out, attached = [], []
    for context, extras in conditioning:
        if context.shape[1] != len(weights):
            raise ValueError(
                f"TokenFocus Prompt: the {weights.encoder} encoder gave {context.shape[1]} rows where its "
                f"tokenizer laid out {len(weights)}; this text encoder is not supported")
        bound = PromptWeights(labels=weights.labels, weights=weights.weights, real=weights.real,
                              encoder=weights.encoder, prompt=weights.prompt, fingerprint=fingerprint(context))
        out.append([context, {**extras, COND_KEY: bound}])
        attached.append(bound)
    return out, attached


def mismatch_message(label: str, weights: TokenWeights, context: torch.Tensor) -> str:
    if len(weights) > context.shape[1] or not getattr(weights, "fingerprint", ""):
        return (f"{label}: the token weights have {len(weights)} rows ({weights.encoder} encoding of their "
                f"prompt) but the positive conditioning has {context.shape[1]}. Build the weights from the same "
                "CLIP and the same prompt text that encode the positive conditioning.")
    return (f"{label}: the token weights were made for another conditioning than the positive prompt they meet "
            f"(their prompt: {weights.prompt[:80]!r}). Connect them with the CONDITIONING of the same "
            "TokenFocus Prompt node, or leave token_weights unconnected: the weights then come with the "
            "conditioning itself.")
