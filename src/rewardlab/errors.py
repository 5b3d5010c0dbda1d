"""User-facing errors.

Anything the user can fix (a bad config field, a missing file, a dataset row without a prompt) raises
:class:`RewardlabError` with one line that names the problem. The CLI prints that line and exits with
code 2; everything else is a bug and keeps its traceback.
"""


class RewardlabError(Exception):
    """A problem with the user's input, described in one line."""


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
