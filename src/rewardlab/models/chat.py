"""Rendering chat messages to token ids, once, so the ids can travel with the text.

The trainer never re-tokenizes a completion: the sampler returns generated ids, and in multi-turn
episodes only the environment's replies are tokenized here, as the text the chat template would put
between the model's last token and the next assistant turn.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from rewardlab.errors import RewardlabError
from rewardlab.types import Messages

# For tokenizers without a chat template: plain "role: content" lines.
PLAIN_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def check_text(text: str, what: str) -> None:
    """``text`` can be tokenized: no lone surrogate, which UTF-8 (and so every tokenizer) cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = error.object[error.start : error.end]
        raise RewardlabError(
            f"{what} holds {bad!r} at position {error.start}, a lone surrogate: not text "
            "(UTF-8 cannot encode it)"
        ) from None


def check_messages(messages: Any) -> None:
    """A conversation the renderer can take: a non-empty list of ``{"role": text, "content": text}``; anything
    else is one line naming the first message that is not."""
    if not isinstance(messages, list | tuple) or not messages:
        got = "an empty list" if isinstance(messages, list | tuple) else type(messages).__name__
        raise RewardlabError(f"a conversation must be a non-empty list of chat messages, got {got}")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise RewardlabError(
                f"chat message {i} must be an object with 'role' and 'content', got {type(message).__name__}"
            )
        for key in ("role", "content"):
            value = message.get(key)
            if not isinstance(value, str):
                got = "nothing" if key not in message else type(value).__name__
                raise RewardlabError(f"chat message {i}: '{key}' must be text, got {got}")
            check_text(value, f"chat message {i}: '{key}'")


class ChatRenderer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.template = tokenizer.chat_template or PLAIN_TEMPLATE
        self.uses_plain_template = tokenizer.chat_template is None
        self._warned = False

    def render(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        check_messages(messages)
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=self.template
        )

    def encode(self, text: str) -> list[int]:
        try:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        except TypeError:  # a tokenizer takes no lone surrogate: say so, whatever else went wrong stays
            check_text(text, "the text to tokenize")
            raise

    def prompt_ids(self, messages: Messages) -> list[int]:
        return self.encode(self.render(messages, add_generation_prompt=True))

    @property
    def stop_token_ids(self) -> set[int]:
        """End-of-sequence and end-of-turn ids: generation of a turn stops at any of them."""
        ids: set[int] = set()
        eos = self.tokenizer.eos_token_id
        if eos is not None:
            ids.add(eos)
        for token in ("<|im_end|>", "<|end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id and token_id >= 0:
                ids.add(token_id)
        return ids

    def continuation_ids(
        self, history: Messages, generated_ids: list[int], new_history: Messages
    ) -> list[int]:
        """Ids that follow ``generated_ids`` when the environment appends messages to ``history``.

        ``history`` ends with the assistant message the model just produced (from ``generated_ids``);
        ``new_history`` is ``history`` plus the environment's messages, ready for the next assistant turn.
        The generated ids are kept as they are, special tokens the text cannot carry included; what follows
        is what the template puts after the assistant's text, less the end-of-turn token the model already
        generated (a turn cut off at ``max_new_tokens`` gets the template's own end of turn here).
        """
        target = self.render(new_history, add_generation_prompt=True)
        visible = self.render(history[:-1], add_generation_prompt=True) + history[-1]["content"]
        if target.startswith(visible):
            after = target[len(visible) :]
            stop = self._trailing_stop_text(generated_ids)
            return self.encode(after[len(stop) :] if stop and after.startswith(stop) else after)
        # The template renders the assistant turn otherwise than the model wrote it (it drops reasoning,
        # say). The generated ids are still kept and the environment's part appended as rendered after the
        # assistant message, so sampling and training see the same ids; but a prompt rendered afresh from
        # these messages would differ from the ids trained on.
        if not self._warned:
            warnings.warn(
                "the chat template renders assistant turns differently from the text the model generated, so "
                "episodes are trained on the generated ids plus the environment's replies as rendered after "
                "them, not on a fresh rendering of the conversation; a template that renders assistant "
                "content verbatim avoids the difference",
                stacklevel=2,
            )
            self._warned = True
        through_assistant = self.render(history, add_generation_prompt=False)
        if target.startswith(through_assistant):
            return self.encode(target[len(through_assistant) :])
        return self.encode(self.render(new_history[len(history) :], add_generation_prompt=True))

    def _trailing_stop_text(self, generated_ids: list[int]) -> str:
        """The text of the end-of-turn token the generated ids end with, or "" (a cut-off turn)."""
        if not generated_ids or generated_ids[-1] not in self.stop_token_ids:
            return ""
        return self.tokenizer.decode(generated_ids[-1:], skip_special_tokens=False)
