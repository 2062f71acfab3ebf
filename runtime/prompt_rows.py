"""Which rows of a positive conditioning are the prompt's, when it has more rows than the prompt's weights.

Some nodes put rows that are not prompt text into the text stream, and nothing in the conditioning marks
them: StyleModelApply (Flux Redux) appends the image's rows after the prompt's; TextEncodeQwenImageEdit (and
…Plus) put the input image's vision tokens, between <|vision_start|> and <|vision_end|>, in front of the
prompt inside the chat template's user turn. The prompt's token weights know how many rows the prompt has:

- weights that carry a digest of their rows (TokenFocus Prompt) are placed where the digest matches:
  exact (a digest of the leading rows: StyleModelApply and ConditioningConcat keep the prompt's rows first);
- weights that carry a signature of their rows (Token Importance: a projection compared up to rounding)
  are placed where the signature matches, first or, where the family puts other rows in front, last;
- weights with only a row count (made outside the nodes) are placed where the model's family says the other
  rows are not (ModelProfile.added_rows), and the run's log says so once, naming what it counted;
- on a family whose conditioning carries no such rows the counts must match: anything else is an error.
"""
from __future__ import annotations

from dataclasses import dataclass

from .adapters import AFTER, BEFORE
from .prompt_weights import COND_KEY, fingerprint, mismatch_message, same_rows


@dataclass(frozen=True)
class PromptRows:
    """Where a prompt's weights sit among a conditioning's rows."""

    rows: slice             # the prompt's rows
    total: int              # the conditioning's rows
    note: str = ""          # what was counted, where it is not exact (said once in the log)

    def spread(self, values, fill) -> tuple:
        """One value per conditioning row: the prompt's values on its rows, `fill` on the others."""
        values = tuple(values)
        return (fill,) * self.rows.start + values + (fill,) * (self.total - self.rows.stop)


def locate(weights, total: int, context=None, profile=None, label: str = "") -> PromptRows | None:
    """Where `weights` (len = the prompt's rows) sit among `total` conditioning rows; None: they do not fit.
    context: the conditioning tensor [1, total, d], to check the digest or signature the weights carry."""
    n = len(weights)
    if n > total:
        return None
    known = _identity(weights)
    if known is not None and context is not None:
        if known(context[:, :n]):
            return PromptRows(slice(0, n), total)
        if n < total and _side(profile) == BEFORE and known(context[:, total - n:]):
            return PromptRows(slice(total - n, total), total)
        return None
    if n == total:
        return PromptRows(slice(0, n), total)
    side = _side(profile)
    if not side:
        return None
    rows = slice(0, n) if side == AFTER else slice(total - n, total)
    where = "first" if side == AFTER else "last"
    other = f"{total - n} rows {'after' if side == AFTER else 'in front of'} them"
    note = (f"{label}: the positive conditioning has {total} rows and the token weights describe {n}: the {where} "
            f"{n} rows are taken as the prompt's and the {other} as {profile.added_rows_note}, which are left out "
            "(the weights carry no digest of their rows to check this; TokenFocus Prompt's do)")
    return PromptRows(rows, total, note)


def place_prompts(positive: list, connected, profile, label: str, run) -> list:
    """(cond, context, weights, place) per positive cond with a text context: the connected weights where they
    fit, else the weights the cond carries (TokenFocus Prompt), else (None, None). Errors here, before the
    first step: carried weights that do not fit their cond, connected weights that fit no positive cond. A
    placement that is not exact is said once in the log."""
    found, connected_fit = [], False
    for cond in positive:
        context = cond.get("cross_attn")
        if context is None:
            continue
        weights, place = connected, None
        if connected is not None:
            place = locate(connected, context.shape[1], context, profile, label)
            connected_fit = connected_fit or place is not None
        if place is None:
            weights = cond.get(COND_KEY)
            place = None if weights is None else locate(weights, context.shape[1], context, profile, label)
            if weights is not None and place is None:
                raise ValueError(mismatch_message(label, weights, context))
        if place is not None and place.note:
            run.warn_once(f"{label}-rows-{place.total}", place.note)
        found.append((cond, context, weights if place is not None else None, place))
    if connected is not None and found and not connected_fit:
        raise ValueError(mismatch_message(label, connected, found[0][1]))
    return found


def _identity(weights):
    """A test of rows against what the weights know of theirs: the exact digest (TokenFocus Prompt), the
    signature up to rounding (Token Importance); None for weights that only count rows."""
    digest = getattr(weights, "fingerprint", "")
    if digest:
        return lambda rows: fingerprint(rows) == digest
    signed = getattr(weights, "signature", b"")
    if signed:
        return lambda rows: same_rows(signed, rows)
    return None


def _side(profile) -> str:
    return getattr(profile, "added_rows", "") if profile is not None else ""
