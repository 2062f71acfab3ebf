"""The family registry: one module per family, the source of the preview's depth table (no ComfyUI needed)."""
from pathlib import Path

from tokenfocus import families
from tokenfocus.families.base import Family

ROOT = Path(__file__).resolve().parent.parent


def test_the_preview_depth_table_is_generated_from_the_family_modules():
    checked_in = (ROOT / "js" / "families.js").read_text(encoding="utf-8")
    assert checked_in == families.preview_module(), (
        "js/families.js is stale: run `python tests/generate_families_js.py` after changing a family module")


def test_every_family_module_declares_one_family_and_every_preview_key_is_unique():
    keys = [row["key"] for row in families.preview_table()]
    assert len(keys) == len(set(keys))
    for module in families.FAMILY_MODULES:
        assert isinstance(module.FAMILY, Family), module.__name__
        assert module.FAMILY.detect is not None
    served = [f for f in families.FAMILIES if f.supported]
    assert all(f.preview for f in served), "a served family gives the preview its depths"


def test_every_encoder_a_family_names_has_a_layout_and_each_layout_names_its_families():
    from tokenfocus.runtime.tokens import ENCODERS

    for family in families.FAMILIES:
        assert set(family.encoders) <= set(ENCODERS), family.name
    for encoder in ENCODERS:
        assert families.families_for_encoder(encoder), f"no family is conditioned by {encoder}"
