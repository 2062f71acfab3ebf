"""The runtime's small state objects and the transformer_options keys they travel under.

Nothing here is module-level mutable state: a config lives on the model clone, a RunState for one sampling
run, a StepPlan for one model call, a BlockContext for one hooked block. Each is dropped when its scope ends.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..core.schedule import StepRange, step_range

CONFIG_KEY = "tokenfocus"          # on the clone: the TokenFocusConfig
RUN_KEY = "tokenfocus_run"         # during one sampling run: the RunState
STEP_KEY = "tokenfocus_step"       # during one model call: the StepPlan
BLOCK_KEY = "tokenfocus_block"     # during one hooked block: the BlockContext
INSIDE_KEY = "tokenfocus_inside"   # on the options an edited attention call hands down: already edited
PASS_KEY = "tokenfocus_pass"       # during an extra model pass a node runs itself (e.g. guidance): its name
HOOK_KEY = "tokenfocus_attention"  # on the clone: the AttentionHook installed there (found again at run time)
UNCOND_THIS_STEP = "uncond this step"  # in a StepPlan's scratch: the latest uncond text is from this step
NEGATIVE_CONDS_KEY = "negative conds"  # in a RunState's cache: the guider's negative conds, for the start of a run

POSITIVE, NEGATIVE, OTHER = "positive", "negative", "other"   # what a batch chunk's conditioning is

log = logging.getLogger("TokenFocus")


@dataclass(frozen=True)
class TokenFocusConfig:
    """Everything the TokenFocus nodes added to one model clone, in the order they were applied."""

    adapter: object
    interventions: tuple = ()

    def with_intervention(self, intervention) -> "TokenFocusConfig":
        return TokenFocusConfig(self.adapter, self.interventions + (intervention,))

    def blocks(self) -> frozenset:
        return frozenset().union(*(iv.blocks for iv in self.interventions)) if self.interventions else frozenset()


@dataclass
class RunState:
    """Per sampling run: caches keyed by tensor identity, what was changed, and warnings already given.

    Set up when sampling starts (OUTER_SAMPLE): which conditioning each cond uuid is, the step ranges
    converted with the model_sampling in effect then, and how many of the run's steps each range holds.
    """

    cache: dict = field(default_factory=dict)
    touched: dict = field(default_factory=dict)
    warned: set = field(default_factory=set)
    active_calls: int = 0          # model calls in which some intervention was active
    roles: dict = field(default_factory=dict)            # cond uuid -> POSITIVE / NEGATIVE / OTHER
    percent_to_sigma: object = None                      # the run's model_sampling.percent_to_sigma
    ranges: dict = field(default_factory=dict)           # (start %, end %) -> StepRange for this run
    steps_in_range: dict = field(default_factory=dict)   # label -> steps of this run inside its range
    active_by_label: dict = field(default_factory=dict)  # label -> model calls where it was active
    edits: dict = field(default_factory=dict)            # label -> attention calls / block inputs changed
    reasons: dict = field(default_factory=dict)          # label -> why it changed nothing (first seen)
    reached_by_label: dict = field(default_factory=dict)  # label -> model calls where its blocks ran

    def steps_for(self, steps: StepRange) -> StepRange:
        """The step range in this run's sigmas: percent as set on the node, sigma from the model_sampling
        in effect when sampling started (a ModelSampling node placed after TokenFocus counts)."""
        if self.percent_to_sigma is None or steps.empty:
            return steps
        key = (steps.start_percent, steps.end_percent)
        if key not in self.ranges:
            self.ranges[key] = step_range(steps.start_percent, steps.end_percent, self.percent_to_sigma)
        return self.ranges[key]

    def note_touch(self, label: str, block, sigma: float) -> None:
        blocks, sigmas = self.touched.setdefault(label, (set(), set()))
        blocks.add(block)
        sigmas.add(round(sigma, 6))

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            log.warning("TokenFocus: %s", message)


@dataclass
class StepPlan:
    """One model call: its sigma, the interventions active at that sigma, and what the inputs look like."""

    sigma: float
    active: tuple
    run: RunState
    inputs: object                   # adapter-specific ModelInputs (text rows, real-token mask, ...)
    chunk_roles: tuple = ()          # per batch chunk: POSITIVE, NEGATIVE or OTHER (see roles_of_chunks)
    uuids: tuple = ()                # the cond each batch chunk is (ComfyUI's uuid per chunk)
    latent_shape: tuple = ()         # shape of the model input x: [B, C, H, W] or [B, C, T, H, W]
    scratch: dict = field(default_factory=dict)   # per-call facts found on the way (text length, ...)

    # What the hooks find during the call is kept here and handed to the run when the call ends, outside
    # any compiled graph: there a logger call would break the graph, and a change to the run's own sets
    # (which outlive the call) would change its guards and recompile it at every new sigma.

    def warn_once(self, key: str, message: str) -> None:
        """A warning met during the model call, given (once per run) when the call ends."""
        self.scratch.setdefault("warnings", {}).setdefault(key, message)

    def note_touch(self, label: str, block) -> None:
        """`label` changed something (an attention call, a block's inputs) in `block`: counted where made."""
        self.scratch.setdefault("touched", set()).add((label, block))
        edits = self.scratch.setdefault("edits", {})
        edits[label] = edits.get(label, 0) + 1

    def note_reason(self, label: str, reason: str) -> None:
        """Why `label` could not act here (said once at the end of the run if it never acted)."""
        self.scratch.setdefault("reasons", {}).setdefault(label, reason)

    def finish(self) -> None:
        """Hand what the call found to the run: touched blocks, edits, warnings, reasons."""
        for label, block in self.scratch.get("touched", ()):
            self.run.note_touch(label, block, self.sigma)
        for label, count in self.scratch.get("edits", {}).items():
            self.run.edits[label] = self.run.edits.get(label, 0) + count
        for label, reason in self.scratch.get("reasons", {}).items():
            self.run.reasons.setdefault(label, reason)
        for label in self.scratch.get("reached", ()):
            self.run.reached_by_label[label] = self.run.reached_by_label.get(label, 0) + 1
        if self.scratch.get("attention_expected") and not self.scratch.get("attention_reached"):
            for label in self.scratch["attention_expected"]:
                self.run.reasons.setdefault(label, "override replaced")
        for key, message in self.scratch.get("warnings", {}).items():
            self.run.warn_once(key, message)

    def _samples(self, batch: int, role: str) -> list[bool]:
        if not self.chunk_roles or batch % len(self.chunk_roles):
            return [role == POSITIVE] * batch
        per_chunk = batch // len(self.chunk_roles)
        return [self.chunk_roles[i // per_chunk] == role for i in range(batch)]

    def uncond_samples(self, batch: int) -> list[bool]:
        """Per sample of the batch: True where it is NOT the positive prompt (the negative, DualCFG's middle
        prompt, PerpNeg's empty prompt): what acts on the positive prompt only leaves these alone."""
        return [not positive for positive in self._samples(batch, POSITIVE)]

    def negative_samples(self, batch: int) -> list[bool]:
        """Per sample: True where it is the negative prompt (the guider's uncond)."""
        return self._samples(batch, NEGATIVE)


def roles_of_chunks(run: RunState, cond_or_uncond, uuids) -> tuple:
    """Which conditioning each batch chunk is. Through the guider's conds (uuid -> key) where the run
    knows them: cond_or_uncond is only an index into the list a guider passed (DualCFG: [negative, middle,
    positive], PerpNeg: [positive, negative, empty]). Without a run: ComfyUI's CFG convention (0, 1)."""
    cond_or_uncond = tuple(cond_or_uncond or ())
    if run.roles and uuids is not None and len(uuids) == len(cond_or_uncond):
        return tuple(run.roles.get(u, OTHER) for u in uuids)
    return tuple(POSITIVE if c == 0 else NEGATIVE if c == 1 else OTHER for c in cond_or_uncond)


@dataclass
class BlockContext:
    """One hooked block call: which block, which interventions act there, and its attention call counter."""

    block: tuple
    interventions: tuple
    plan: StepPlan
    adapter: object
    text_len: int | None = None
    image_len: int | None = None     # image (or joint) tokens the block received
    calls: int = 0
    # Functions of the block's output, applied in order when it returns (e.g. a text edit taken back out
    # of the stream, so the next block does not receive it again).
    output_edits: list = field(default_factory=list)
