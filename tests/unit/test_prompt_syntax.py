import pytest

from tokenfocus.core.importance import CLIP_BPE, SENTENCEPIECE
from tokenfocus.core.prompt_syntax import (
    char_weights, check_prompt_syntax, escaped, plain_text, prompt_syntax_error, rows_from_chars,
)


@pytest.mark.parametrize("text", [
    "", "a red kite", "a (red:1.5) kite over (snowy mountains:1.3)", "((very)) nested (a (b:0.5):1.2)",
    "a \\(literal\\) parenthesis", "(gone:0)", "style: photo, time: 12:30", "(a:1e1)",
    "(spaced : 1.5 )",
])
def test_well_formed_prompts_pass(text):
    assert prompt_syntax_error(text) is None
    check_prompt_syntax(text)


@pytest.mark.parametrize("text, message", [
    ("a (red kite", "'(' at character 3 is never closed"),
    ("a red) kite", "')' at character 6 closes nothing"),
    ("a \\(red) kite", "closes nothing"),
    ("(red:abc)", "'abc' is not a number"),
    ("(red:-1)", "finite number ≥ 0"),
    ("(red:inf)", "finite number ≥ 0"),
    ("(red:nan)", "finite number ≥ 0"),
    ("(red:)", "is not a number"),
    ("(a:1.2 (b))", "is not a number"),
    ("(:1.5)", "the text before ':' is empty"),
])
def test_malformed_prompts_say_what_is_wrong(text, message):
    assert message in prompt_syntax_error(text)
    with pytest.raises(ValueError, match="Prompt weights"):
        check_prompt_syntax(text)


def test_plain_text_keeps_literal_parentheses_escaped_for_the_parser():
    segments = [("a ", 1.0), ("red", 1.5), (" kite (", 1.0)]
    assert plain_text(segments) == "a red kite ("
    assert escaped(plain_text(segments)) == "a red kite \\("
    assert char_weights(segments) == [1.0, 1.0, 1.5, 1.5, 1.5] + [1.0] * 7


def test_rows_take_the_weight_of_the_characters_they_spell():
    segments = [("a ", 1.0), ("red", 1.5), (" kite over ", 1.0), ("snowy mountains", 0.0)]
    text = plain_text(segments)
    pieces = ["▁a", "▁red", "▁k", "ite", "▁over", "▁snow", "y", "▁mountains", "</s>", "<pad>"]
    real = [True] * 8 + [False, False]
    rows = rows_from_chars(pieces, real, SENTENCEPIECE, text, char_weights(segments))
    assert rows == [1.0, 1.5, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_a_piece_across_two_weights_takes_the_stronger_one():
    segments = [("red", 1.2), ("kite", 3.0), (" now", 1.0)]     # '(red:1.2)(kite:3) now'
    pieces = ["<|startoftext|>", "redk</w>", "ite</w>", "now</w>", "<|endoftext|>"]
    rows = rows_from_chars(pieces, [False, True, True, True, False], CLIP_BPE, plain_text(segments), char_weights(segments))
    assert rows == [1.0, 3.0, 3.0, 1.0, 1.0]
