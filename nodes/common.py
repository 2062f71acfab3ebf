"""What every TokenFocus node shares: the block and step inputs, their validation, and the result."""
from __future__ import annotations

import math

from comfy_api.latest import io

from ..core.blocklist import format_blocks, parse_block_list, resolve_blocks
from ..core.schedule import check_percents, step_range
from ..families import detect
from ..runtime.install import add_intervention
from ..runtime.state import log

CATEGORY = "TokenFocus"

BLOCKS_TOOLTIP = (
    "Which transformer blocks to act on: 'all', or indices and ranges such as 0,2-7,10-20. Flux and "
    "HunyuanVideo single-stream blocks take an s prefix (s0-7). Empty = no block (the node does nothing). "
    "Indices are checked against the model's depth when the node runs."
)
START_TOOLTIP = "Where in the denoising to start acting: 0 = the first step (pure noise), 1 = the end."
END_TOOLTIP = "Where in the denoising to stop acting. start = end acts on no step."


def model_input() -> io.Model.Input:
    return io.Model.Input("model", tooltip="The diffusion model to patch. A patched clone is returned.")


def block_and_step_inputs(blocks="all", start=0.0, end=1.0) -> list:
    return [
        io.String.Input("blocks", default=blocks, tooltip=BLOCKS_TOOLTIP),
        io.Float.Input("start_percent", default=start, min=0.0, max=1.0, step=0.01, tooltip=START_TOOLTIP),
        io.Float.Input("end_percent", default=end, min=0.0, max=1.0, step=0.01, tooltip=END_TOOLTIP),
    ]


def report_output() -> io.String.Output:
    return io.String.Output(display_name="report", tooltip="What the node will do on this model, in words.")


def check_number(name: str, value, low=None, high=None) -> None:
    """A finite number inside [low, high]. ComfyUI's own range check lets NaN through (every comparison
    with NaN is false), and a NaN factor would crash or blank the sampling half-way."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value:g}")


def check_choice(name: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")


def check_widgets(node_cls, **values) -> None:
    """Everything about the given widget values that needs no model, as the node's schema declares them:
    numbers finite and in range, combo values among the options, block lists in the grammar, start not
    after end. A value of None is a linked input (unknown at queue time): checked when the node runs."""
    declared = {item.id: item for item in node_cls.define_schema().inputs}
    for name, value in values.items():
        item = declared[name]
        if value is None:
            continue
        if isinstance(item, (io.Float.Input, io.Int.Input)):
            check_number(name, value, getattr(item, "min", None), getattr(item, "max", None))
        elif isinstance(item, io.Combo.Input):
            check_choice(name, value, item.options)
        elif name == "blocks":
            parse_block_list(value)
    start, end = values.get("start_percent"), values.get("end_percent")
    if start is not None and end is not None:
        check_percents(start, end)


def queue_verdict(check, *args, **kwargs):
    """What a V3 validate_inputs returns: True, or the check's message, so that ComfyUI refuses the prompt
    when it is queued (POST /prompt answers 400 with it) before any model loads."""
    try:
        check(*args, **kwargs)
    except ValueError as error:
        return str(error)
    return True


class Target:
    """A model, its adapter, and the validated blocks and steps a node will act on."""

    def __init__(self, model, blocks_text: str, start_percent: float, end_percent: float):
        self.model = model
        self.adapter = detect(model)
        selection = parse_block_list(blocks_text)
        self.blocks = resolve_blocks(selection, self.adapter.n_double, self.adapter.n_single, self.adapter.name)
        sampling = model.get_model_object("model_sampling")
        self.steps = step_range(start_percent, end_percent, sampling.percent_to_sigma)

    def percent_to_sigma(self, percent: float) -> float:
        return float(self.model.get_model_object("model_sampling").percent_to_sigma(percent))

    @property
    def reaches_nothing(self) -> bool:
        return not self.blocks or self.steps.empty

    def where(self) -> str:
        return (
            f"blocks {format_blocks(self.blocks)} of {self.adapter.name}; steps {self.steps.start_percent:g}-"
            f"{self.steps.end_percent:g} of the denoising (sigma {self.steps.sigma_start:.4g} down to "
            f"{self.steps.sigma_end:.4g})"
        )


def finish(target: Target, intervention, neutral: bool, report: str) -> io.NodeOutput:
    """Return a patched clone, or the model untouched when the settings cannot change anything."""
    if neutral or target.reaches_nothing:
        report = f"{report}\nNeutral settings: the model is returned unchanged."
        log.info("TokenFocus: %s", report.replace("\n", " | "))
        return io.NodeOutput(target.model, report)
    log.info("TokenFocus: %s", report.replace("\n", " | "))
    return io.NodeOutput(add_intervention(target.model, target.adapter, intervention), report)
