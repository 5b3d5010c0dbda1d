"""User-facing errors.

Anything the user can fix (a bad config field, a missing file, a dataset row without a prompt) raises
:class:`RewardlabError` with one line that names the problem. The CLI prints that line and exits with
code 2; everything else is a bug and keeps its traceback.
"""

# Every character at which ``str.splitlines`` breaks a line, and the escape written in its place.
_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_LINE_BREAKS = {ord(c): c.encode("unicode_escape").decode() for c in _BREAKS}


def one_line(text: str) -> str:
    """``text`` with its line breaks written as escapes (``\\n``), so it prints as one line, and any lone
    surrogate (from a file's ``\\ud800`` escape) as its escape too, so it can be printed at all."""
    return text.translate(_LINE_BREAKS).encode("utf-8", "backslashreplace").decode("utf-8")


class RewardlabError(Exception):
    """A problem with the user's input, described in one line: a line break in a message (from a file name,
    a config key, a dataset's text) is written as its escape, and so is a character UTF-8 cannot encode."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (one_line(args[0]),)
        super().__init__(*args)


class ConfigError(RewardlabError):
    """A config file or override that does not validate."""


class DatasetError(RewardlabError):
    """A dataset row or file that cannot be used."""


class EnvironmentLoadError(RewardlabError):
    """An environment that cannot be found or loaded."""


class ModelLoadError(RewardlabError):
    """A model or tokenizer path that cannot be loaded."""


class ResponseFormatError(RewardlabError, ValueError):
    """A ``response_format`` that cannot be enforced: malformed, or a schema the grammar cannot express."""
