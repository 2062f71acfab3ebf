"""The list of nodes ComfyUI loads from this pack."""
from __future__ import annotations

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .attention_temperature import AttentionTemperatureNode
from .dare import ImportanceGuidanceNode, TokenImportanceNode, TokenReweightNode
from .inspector import AttentionInspectorNode, AttentionInspectorViewNode
from .prompt import TokenFocusPromptNode
from .save_token_weights import SaveTokenWeightsNode
from .tora import ResidualAlignmentNode, TokenSpacingNode


class TokenFocusExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            AttentionTemperatureNode,
            TokenSpacingNode,
            ResidualAlignmentNode,
            TokenFocusPromptNode,
            TokenImportanceNode,
            SaveTokenWeightsNode,
            TokenReweightNode,
            ImportanceGuidanceNode,
            AttentionInspectorNode,
            AttentionInspectorViewNode,
        ]
