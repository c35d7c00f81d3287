"""pre_caption follows the references' caption cleaning step by step."""
import pytest

from dataset.captions import pre_caption


@pytest.mark.parametrize("text, expected", [
    ("A Dog", "a dog"),
    ("Hello, World! (yes) \"quoted\" it's *#:;~?.", "hello world yes quoted its"),
    ("t-shirt and/or jeans", "t shirt and or jeans"),
    ("a <person> waves", "a person waves"),
    ("a   dog \n\n runs", "a dog runs"),
    ("a\tdog", "a\tdog"),          # a single tab survives (only runs of 2+ are collapsed)
    ("  padded words \n", "padded words"),
    ("ends with newline\n", "ends with newline"),
    ("", ""),
])
def test_pre_caption_cases(text, expected):
    assert pre_caption(text) == expected


def test_pre_caption_truncates_to_max_words():
    words = [f"w{i}" for i in range(40)]
    assert pre_caption(" ".join(words)) == " ".join(words[:30])
    assert pre_caption("one two three four", max_words=2) == "one two"
    assert pre_caption("one two", max_words=2) == "one two"
