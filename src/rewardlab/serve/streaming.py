"""Turning a row's tokens, as they are sampled, into text deltas that add up to the final completion.

Text is decoded from all of the row's tokens so far (a token alone may be half a character, or decode
differently from its place in a word) and only what extends the text already sent goes out. With stop
strings, the last ``len(longest stop) - 1`` characters are held back, since they could begin a stop string
the final text will not contain; a completed stop string ends the row, as it does in the sampler. Whatever
the stream did not send is sent from the final text when the row's batch is done, so the deltas always add
up to the non-streamed completion.
"""

from __future__ import annotations


class TextDeltas:
    def __init__(self, tokenizer, stop_ids: set[int], stop: list[str]):
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.stop = stop
        self.hold_back = max((len(s) for s in stop), default=1) - 1
        self.ids: list[int] = []
        self.sent = ""
        self.done = False

    def push(self, token: int) -> str:
        """The new text that ``token`` makes safe to send ("" when nothing is)."""
        if self.done:
            return ""  # finished rows keep receiving pad tokens until the batch is done
        if token in self.stop_ids:
            self.done = True
            return ""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        hits = [text.find(s) for s in self.stop if s in text]
        if hits:  # the sampler stops this row here and cuts the text before the stop string
            self.done = True
            safe = text[: min(hits)]
        else:
            safe = text[: len(text) - self.hold_back]
        # An incomplete multi-byte character decodes to U+FFFD until its last byte arrives.
        safe = safe.rstrip("\ufffd")
        if len(safe) <= len(self.sent) or not safe.startswith(self.sent):
            return ""
        delta = safe[len(self.sent) :]
        self.sent = safe
        return delta

    def finish(self, final_text: str) -> str:
        """The rest of ``final_text`` after what was sent."""
        self.done = True
        if final_text.startswith(self.sent):
            return final_text[len(self.sent) :]
        return ""  # cannot happen with a prefix-stable tokenizer; never send text twice
