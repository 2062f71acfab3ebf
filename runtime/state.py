"""The runtime's small state objects and the transformer_options keys they travel under.

Nothing here is module-level mutable state: a config lives on the model clone, a RunState for one sampling
run, a StepPlan for one model call, a BlockContext for one hooked block. Each is dropped when its scope ends.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

CONFIG_KEY = "tokenfocus"          # on the clone: the TokenFocusConfig
RUN_KEY = "tokenfocus_run"         # during one sampling run: the RunState
STEP_KEY = "tokenfocus_step"       # during one model call: the StepPlan
BLOCK_KEY = "tokenfocus_block"     # during one hooked block: the BlockContext
INSIDE_KEY = "tokenfocus_inside"   # on the options an edited attention call hands down: already edited
PASS_KEY = "tokenfocus_pass"       # during an extra model pass a node runs itself (e.g. guidance): its name

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
    """Per sampling run: caches keyed by tensor identity, what was touched, and warnings already given."""

    cache: dict = field(default_factory=dict)
    touched: dict = field(default_factory=dict)
    warned: set = field(default_factory=set)
    active_calls: int = 0          # model calls in which some intervention was active

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
    cond_or_uncond: tuple = ()
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
        self.scratch.setdefault("touched", set()).add((label, block))

    def finish(self) -> None:
        """Hand what the call found to the run: touched blocks, warnings."""
        for label, block in self.scratch.get("touched", ()):
            self.run.note_touch(label, block, self.sigma)
        for key, message in self.scratch.get("warnings", {}).items():
            self.run.warn_once(key, message)

    def uncond_samples(self, batch: int) -> list[bool]:
        """Per sample of the batch: True where it belongs to an uncond chunk (ComfyUI: 1 = uncond)."""
        if not self.cond_or_uncond or batch % len(self.cond_or_uncond):
            return [False] * batch
        per_chunk = batch // len(self.cond_or_uncond)
        return [self.cond_or_uncond[i // per_chunk] == 1 for i in range(batch)]


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
