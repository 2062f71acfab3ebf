import pytest

from tokenfocus.core.blocklist import (
    DOUBLE,
    SINGLE,
    BlockListError,
    format_blocks,
    parse_block_list,
    resolve_blocks,
)

WAN14B_ALIGNVID = "0,2-7,10-20,25-32,37,38"


def test_official_wan14b_preset_selects_its_28_blocks():
    blocks = resolve_blocks(parse_block_list(WAN14B_ALIGNVID), 40, 0, "Wan")
    assert len(blocks) == 28
    assert (DOUBLE, 1) not in blocks and (DOUBLE, 38) in blocks
    assert format_blocks(blocks) == "0,2-7,10-20,25-32,37-38"
    assert resolve_blocks(parse_block_list(format_blocks(blocks)), 40, 0, "Wan") == blocks


def test_single_blocks_use_the_s_prefix():
    sel = parse_block_list("0-1, s3-5 ,d7")
    assert sel.double == {0, 1, 7} and sel.single == {3, 4, 5}
    assert resolve_blocks(sel, 19, 38, "Flux") == {(DOUBLE, 0), (DOUBLE, 1), (DOUBLE, 7), (SINGLE, 3), (SINGLE, 4), (SINGLE, 5)}


def test_all_covers_every_kind_and_empty_covers_none():
    assert len(resolve_blocks(parse_block_list("all"), 20, 40, "HunyuanVideo")) == 60
    assert parse_block_list("").is_empty() and parse_block_list("   ").is_empty()
    assert resolve_blocks(parse_block_list(""), 20, 40, "HunyuanVideo") == frozenset()


@pytest.mark.parametrize("text, fragment", [
    ("1,,2", "empty item"),
    ("3-", "not a block index"),
    ("a", "not a block index"),
    ("7-3", "runs backwards"),
    ("-1", "not a block index"),
    ("1.5", "not a block index"),
])
def test_malformed_lists_are_rejected_with_a_message(text, fragment):
    with pytest.raises(BlockListError, match=fragment):
        parse_block_list(text)


def test_index_past_the_depth_names_the_depth():
    with pytest.raises(BlockListError, match=r"30 is past the model's depth: Wan has 30 blocks \(0-29\)"):
        resolve_blocks(parse_block_list("0-30"), 30, 0, "Wan")
    with pytest.raises(BlockListError, match="s38 is past"):
        resolve_blocks(parse_block_list("s38"), 19, 38, "Flux")


def test_single_blocks_on_a_model_without_them_is_an_error():
    with pytest.raises(BlockListError, match="single-block indices"):
        resolve_blocks(parse_block_list("s0"), 24, 0, "SD3")
