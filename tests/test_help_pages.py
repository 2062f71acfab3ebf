"""Every TokenFocus node has a help page js/docs/<node_id>.md, the file ComfyUI's frontend shows in its node
help panel (it fetches /extensions/<pack>/docs/<node_id>.md from the pack's WEB_DIRECTORY). Each page says
where the node comes from, documents every input, and how it combines with the common packs."""
import re

import pytest

import workflow_lib as wl

NODE_IDS = sorted(set(re.findall(r'node_id="(TokenFocus_\w+)"', "".join(p.read_text() for p in (wl.ROOT / "nodes").glob("*.py")))))
PACKS = ("Sage attention", "EasyCache", "TeaCache", "torch.compile", "SkipLayerGuidanceDiT")


def page(node_id):
    path = wl.HELP_DIR / f"{node_id}.md"
    assert path.is_file(), f"no help page {path.relative_to(wl.ROOT)}"
    return path.read_text(encoding="utf-8")


def test_the_nodes_were_found():
    assert "TokenFocus_AttentionTemperature" in NODE_IDS


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_every_node_has_a_help_page_with_its_sections(node_id):
    text = page(node_id)
    for section in ("## Source", "## Inputs", "## What to try per model", "## Combining"):
        assert section in text, f"{node_id}.md has no '{section}'"
    assert re.search(r"reconstructed|inference-only|published code|code \(github", text, re.I), "say what is reconstructed"


def test_no_page_for_a_node_that_does_not_exist():
    assert {p.stem for p in wl.HELP_DIR.glob("*.md")} <= set(NODE_IDS)


def test_pages_document_every_input_and_the_packs(registry_or_skip):
    for node_id in NODE_IDS:
        text, schema = page(node_id), registry_or_skip[node_id].GET_SCHEMA()
        for item in schema.inputs:
            assert f"`{item.id}`" in text, f"{node_id}.md does not document input `{item.id}`"
        if any(item.get_io_type() == "MODEL" for item in schema.inputs):
            for pack in PACKS:
                assert pack in text, f"{node_id}.md does not say how it combines with {pack}"


@pytest.fixture(scope="module")
def registry_or_skip():
    return wl.registry_or_skip("the help pages' input lists")
