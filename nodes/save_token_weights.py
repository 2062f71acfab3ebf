"""Save Token Weights: write what Token Importance made into ComfyUI's token_weights folder, as a table
Token Importance can pick from its list and reuse."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..runtime import table_folder
from .common import CATEGORY, queue_verdict
from .dare import DARE, TokenWeightsType


class SaveTokenWeightsNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenFocus_SaveTokenWeights",
            display_name="Save Token Weights",
            category=CATEGORY,
            description=(
                "Saves the per-token weights Token Importance made (labels, weights, encoder and prompt) as a table in "
                "ComfyUI's models/token_weights folder, named <filename_prefix>_00001.safetensors and so on, never "
                "overwriting one. Pick it in Token Importance's 'table' list to reuse it for the same prompt (refresh "
                "the page to see a new one). " + DARE
            ),
            inputs=[
                TokenWeightsType.Input("token_weights", tooltip="From Token Importance."),
                io.String.Input(
                    "filename_prefix", default="token_weights",
                    tooltip="Name of the table: letters, digits, '-', '_', '.' and spaces; a number is appended. "
                    "No folder: tables go to ComfyUI's models/token_weights.",
                ),
            ],
            outputs=[io.String.Output(display_name="table", tooltip="The saved table's name, as Token Importance lists it.")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix=None):
        return queue_verdict(table_folder.check_prefix, filename_prefix)

    @classmethod
    def execute(cls, token_weights, filename_prefix="token_weights") -> io.NodeOutput:
        name = table_folder.save_table(token_weights, filename_prefix)
        text = f"saved {name} ({sum(token_weights.real)} prompt tokens, encoder {token_weights.encoder})"
        return io.NodeOutput(name, ui=ui.PreviewText(text))
