"""Keys and values of a continuously batched server: one slot per running row, rows joining and leaving.

Row ``i`` of the running batch keeps its tokens in slot ``i`` at columns ``0 .. length - 1``: no left padding,
so a row that joins late needs nothing from the rows already there, and its positions are its columns.
Running rows are packed into slots ``0 .. B - 1``: each decoding step attends over a plain slice of the
buffers, and a row that leaves is replaced by the last row (one row's keys and values copied, not all).

The buffers grow by doubling (rows up to the batch limit, columns up to the longest row) and are dropped when
the server is idle, so memory follows the traffic instead of the worst request the limits allow. Columns past
a row's length hold whatever an earlier row left there; the attention mask hides them (they are never NaN:
buffers start zeroed and only ever receive computed keys and values).
"""

from __future__ import annotations

import torch

from rewardlab.models.lean import KVCache, LeanDecoder


def _grown(size: int, needed: int, at_least: int) -> int:
    size = max(size, at_least)
    while size < needed:
        size *= 2
    return size


class SlotCache:
    def __init__(self, decoder: LeanDecoder, whole: bool = False):
        self.decoder = decoder
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        # Attend over every column (masked) instead of a slice: see KVCache.whole (half precision on CPU).
        self.whole = whole

    @property
    def rows(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0

    @property
    def columns(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def reserve(self, rows: int, columns: int) -> None:
        """Room for ``rows`` slots of ``columns`` each, the slots' contents kept."""
        if rows <= self.rows and columns <= self.columns:
            return
        new_rows, new_columns = _grown(self.rows, rows, 8), _grown(self.columns, columns, 64)
        decoder, like = self.decoder, self.decoder.embed
        shape = (new_rows, decoder.num_kv_heads, new_columns, decoder.head_dim)
        old_rows, old_columns = self.rows, self.columns
        for buffers in (self.keys, self.values):
            old = buffers or [None] * len(decoder.layers)
            grown = [like.new_zeros(shape) for _ in old]
            for new, previous in zip(grown, old, strict=True):
                if previous is not None:
                    new[:old_rows, :, :old_columns] = previous
            buffers[:] = grown

    def release(self) -> None:
        self.keys, self.values = [], []

    def move(self, destinations: list[int], sources: list[int]) -> None:
        """Copy slots ``sources`` into ``destinations`` (a leaving row's slot taken by a row from the end)."""
        if not destinations:
            return
        device = self.decoder.embed.device
        to, source = torch.tensor(destinations, device=device), torch.tensor(sources, device=device)
        for buffers in (self.keys, self.values):
            for buffer in buffers:
                buffer[to] = buffer[source]

    def place(self, first: int, staging: KVCache, sources: torch.Tensor, width: int) -> None:
        """Slots from ``first`` on receive rows ``sources`` of ``staging`` (columns up to ``width``)."""
        end = first + sources.shape[0]
        for buffers, staged in ((self.keys, staging.keys), (self.values, staging.values)):
            for buffer, rows in zip(buffers, staged, strict=True):
                buffer[first:end, :, :width] = rows[sources, :, :width]

    def step(self, lengths: torch.Tensor) -> DecodeStep:
        """The keys and values one decoding step of the first ``len(lengths)`` slots writes and reads."""
        return DecodeStep(self, lengths)


class DecodeStep:
    """One decoding step over slots ``0 .. B - 1``: row ``i`` writes its new key and value at column
    ``lengths[i]`` and attends over columns up to it (the mask says which)."""

    def __init__(self, cache: SlotCache, lengths: torch.Tensor):
        self.cache = cache
        self.batch = lengths.shape[0]
        self.rows = torch.arange(self.batch, device=lengths.device)
        self.lengths = lengths
        self.width = cache.columns if cache.whole else int(lengths.max()) + 1

    def mask(self) -> torch.Tensor:
        keys = torch.arange(self.width, device=self.lengths.device)
        return (keys[None, :] <= self.lengths[:, None])[:, None, None, :]

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        keys[self.rows, :, self.lengths] = k[:, :, 0]
        values[self.rows, :, self.lengths] = v[:, :, 0]
        return keys[: self.batch, :, : self.width], values[: self.batch, :, : self.width]

    def advance(self, length: int) -> None:
        pass
