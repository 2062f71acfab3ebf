"""What every TokenFocus node shares: the block and step inputs, their validation, and the result."""
from __future__ import annotations

from comfy_api.latest import io

from ..core.blocklist import format_blocks, parse_block_list, resolve_blocks
from ..core.schedule import step_range
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
