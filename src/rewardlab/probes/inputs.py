"""What both probes start from: a model loaded by any name ``--model`` takes, a prompt turned into the ids
the samplers would feed it, and tokens shown so that whitespace and special tokens can be read."""

from __future__ import annotations

from pathlib import Path

from rewardlab.errors import RewardlabError
from rewardlab.models.chat import ChatRenderer


def load_probe_model(name: str, dtype: str = "float32", runs_dir: str | Path = "runs"):
    """``(model, tokenizer)`` for a probe, frozen: a built-in or packaged name, a path, a run id or a Hub id
    (whatever ``--model`` takes elsewhere); an unknown one is the loader's one-line error."""
    from rewardlab.models.loading import load_model, locate

    return load_model(locate(name, runs_dir), dtype=dtype)


def load_probe_tokenizer(name: str, runs_dir: str | Path = "runs"):
    from rewardlab.models.loading import load_tokenizer, locate

    return load_tokenizer(locate(name, runs_dir))


def checked_prompt(prompt: str | None) -> str:
    if prompt is None or not prompt.strip():
        raise RewardlabError("the prompt is empty: give the text to probe with --prompt TEXT")
    return prompt


def render_prompt(tokenizer, prompt: str, raw: bool = False) -> tuple[str, list[int]]:
    """The prompt as the model sees it when sampled: one user message through the chat template (as
    :class:`~rewardlab.sampling.local.LocalSampler` renders it), or with ``raw`` the text as it is."""
    renderer = ChatRenderer(tokenizer)
    text = (
        checked_prompt(prompt)
        if raw
        else renderer.render([{"role": "user", "content": checked_prompt(prompt)}])
    )
    ids = renderer.encode(text)
    if not ids:
        raise RewardlabError(f"the prompt {prompt!r} tokenizes to nothing")
    return text, ids


def token_text(tokenizer, token_id: int) -> str:
    """One token as a label: its decoded characters with newlines and tabs escaped, a leading space (and a
    space-only token) as ``␣``, and a token that decodes to nothing as its vocabulary entry."""
    text = tokenizer.decode([token_id], skip_special_tokens=False)
    text = text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if not text.strip():
        return "␣" * len(text) if text else str(tokenizer.convert_ids_to_tokens(token_id))
    if text.startswith(" "):
        text = "␣" + text[1:]
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
