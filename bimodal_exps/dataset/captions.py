"""Caption normalisation shared by training and retrieval (ALBEF's `pre_caption`)."""
import re

_DELETED_CHARS = re.compile(r"[,.'!?\"()*#:;~]")
_WHITESPACE_RUN = re.compile(r"\s{2,}")


def pre_caption(text: str, max_words: int = 30) -> str:
    """Lower-case, drop punctuation, normalise spaces and keep at most `max_words` words."""
    text = _DELETED_CHARS.sub("", text.lower())
    text = text.replace("-", " ").replace("/", " ").replace("<person>", "person")
    text = _WHITESPACE_RUN.sub(" ", text)
    text = text.rstrip("\n").strip(" ")
    words = text.split(" ")
    if len(words) > max_words:
        text = " ".join(words[:max_words])
    return text
