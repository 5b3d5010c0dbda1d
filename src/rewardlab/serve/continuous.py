"""Continuous batching: the server schedules every decoding step, not every batch.

A static batch runs until its longest row is done, so one heavy request holds up every request behind it.
Here one worker thread loops over steps, and each step:

1. takes the requests that arrived (a request whose client already left is never generated);
2. prefills waiting prompts, at most ``prefill_chunk`` tokens of them (a longer prompt is prefilled a chunk
   per step), so a long prompt delays the running rows by one bounded slice at a time;
3. places prefilled rows into free slots of the running batch (each of a prompt's ``n`` samples shares its
   prefill);
4. samples one token for every running row, each with its own request's parameters: temperature, top-p,
   top-k, penalties, logit bias, response format, log-probs, and, for a request with a seed, a random
   generator of its own per row (seed and row number), so a seeded completion does not depend on what else
   is running;
5. ends rows that are done (a stop token or string, ``max_tokens``, or a client that left) and answers a
   request as soon as its last row ends; their slots are free for the next step;
6. runs one decoding step for the rows still running, each row on its own adapter
   (:mod:`rewardlab.models.routed_lora`).

The keys and values live in :class:`~rewardlab.serve.slots.SlotCache`. Runs on the fused Llama-family decoder;
other architectures are served by the batch-at-a-time :class:`~rewardlab.serve.engine.Engine`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from rewardlab.errors import ResponseFormatError
from rewardlab.models.lean import HALF_DTYPES, KVCache, attention_mask
from rewardlab.models.routed_lora import Unsupported, routed_decoder
from rewardlab.sampling.base import Generation
from rewardlab.sampling.local import GREEDY_BELOW, adjusted_logits, sample_by_cdf
from rewardlab.sampling.structured import Constraint, parse_response_format
from rewardlab.serve.batching import Job
from rewardlab.serve.engine import Engine, settle
from rewardlab.serve.errors import AdapterError, UnknownModelError
from rewardlab.serve.registry import ServedModels
from rewardlab.serve.slots import SlotCache
from rewardlab.threads import release_openmp_threads

logger = logging.getLogger("rewardlab.serve")

# Distinct seeds for the rows of one request: row j of a request seeded s draws from seed s + j * SPREAD.
SEED_SPREAD = 0x9E3779B97F4A7C15


@dataclass(eq=False)
class Request:
    """A job being served: its completions as they end, and what its rows share."""

    job: Job
    adapter: str | None  # peft adapter name (None: the base)
    started: float
    results: list[Generation | None]
    remaining: int
    bias: torch.Tensor | None = None  # (V,) the request's logit bias
    failed: bool = False

    @property
    def gone(self) -> bool:
        return self.failed or self.job.future.done()


@dataclass(eq=False)
class PromptWork:
    """One prompt of a request, waiting for (the rest of) its prefill."""

    request: Request
    index: int  # prompt number within the request
    ids: list[int]
    staging: KVCache | None = None  # a prompt prefilled in chunks: the chunks so far


@dataclass(eq=False)
class Prefilled:
    """Prompts prefilled together: their keys and values, first logits, and the rows still to place."""

    staging: KVCache
    width: int
    logits: torch.Tensor  # (prompts, V)
    waiting: deque  # (staging row, PromptWork, sample number), in choice order


@dataclass(eq=False)
class Row:
    request: Request
    choice: int  # index among the request's choices: prompt * n + sample
    prompt: list[int]
    length: int  # tokens whose keys and values are in the slot
    generator: torch.Generator | None = None
    counts: torch.Tensor | None = None  # (1, V) tokens generated so far, for penalties
    constraint: Constraint | None = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list = field(default_factory=list)
    cut: str | None = None  # the text before a stop string
    done: bool = False

    @property
    def job(self) -> Job:
        return self.request.job


class ContinuousEngine(Engine):
    """The engine of :mod:`this module <rewardlab.serve.continuous>`; same interface as :class:`Engine`."""

    scheduler = "continuous"

    def __init__(self, models: ServedModels, max_batch_size: int = 128, prefill_chunk: int = 256):
        super().__init__(models, max_batch_size=max_batch_size, batch_wait_ms=0, mix_adapters=True)
        self.prefill_chunk = prefill_chunk
        self._build_decoder()  # an architecture or adapter it cannot run fails here, before serving
        self._work: deque[PromptWork] = deque()
        self._prefilled: deque[Prefilled] = deque()
        self._rows: list[Row] = []
        self._live: dict[int, Request] = {}  # requests taken from the queue, not yet answered
        self._logits: torch.Tensor | None = None  # (B, V): what each running row samples from next
        self._routed: list[int] | None = None  # the adapters the decoder is routed to now
        self._plan: tuple | None = None  # this step's prefill slice: (prompts, width, start, end)
        self._commands: deque = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the event loop's side ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # From here on the model computes on the worker only: the OpenMP threads this thread started while
        # loading would otherwise slow every step (see release_openmp_threads).
        release_openmp_threads()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="rewardlab-steps", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        for job in [*self._pending, *(w.request.job for w in self._work), *(r.job for r in self._rows)]:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._pending.clear()

    def submit(self, *args, **kwargs) -> Job:
        job = super().submit(*args, **kwargs)
        self._wake.set()
        return job

    @property
    def queued_completions(self) -> int:
        """Completions of prompts not yet prefilled (those whose client left are not counted)."""
        waiting = sum(job.rows for job in list(self._pending) if not job.future.done())
        return waiting + sum(w.request.job.n for w in list(self._work) if not w.request.gone)

    async def load_adapter(self, name: str, path: str) -> None:
        await self._command(self._load, name, path)

    async def unload_adapter(self, name: str) -> None:
        await self._command(self._unload, name)

    async def _command(self, action, *args) -> None:
        """Run ``action`` on the worker between two steps (the model is never changed mid-step)."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.append((action, args, done))
        self._wake.set()
        await asyncio.wrap_future(done)

    # -- the worker ------------------------------------------------------------------------------------

    def _serve(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stopping.is_set():
            while self._commands:
                action, args, done = self._commands.popleft()
                try:
                    with self._lock:
                        action(*args)
                    done.set_result(None)
                except Exception as error:  # reported to the request that asked
                    done.set_exception(error)
            self._wake.clear()
            with self._lock:
                try:
                    busy = self._step()
                except Exception as error:
                    # The requests running fail, the server does not: each gets a 500 and the loop goes on.
                    logger.exception("a decoding step failed; failing its %d rows", len(self._rows))
                    self.metrics.failed_batches += 1
                    self._fail_running(error)
                    busy = False
            if not busy and not self._commands:
                self._wake.wait(0.5)

    def _has_work(self) -> bool:
        return bool(self._pending or self._work or self._prefilled or self._rows)

    @torch.inference_mode()
    def _step(self) -> bool:
        self._admit()
        self._place()
        self._plan = None
        self._prefill()  # plans this step's prefill slice; the decoding step below carries it
        if not self._rows and self._plan is not None:  # nothing decoding: the slice runs alone, at once
            self._run_prefill(*self._plan)
            self._plan = None
            self._place()
        if not self._rows:
            if not self._has_work():
                self._slots.release()  # an idle server holds no keys and values
                self._live = {key: r for key, r in self._live.items() if not r.gone}
            return self._has_work()
        started = time.perf_counter()
        tokens = self._sample()
        self._record(tokens)
        kept = self._compact(tokens)
        if self._rows:
            self._decode(kept)
        else:
            self._logits = None
            if self._plan is not None:
                self._run_prefill(*self._plan)
        self._plan = None
        self.metrics.generation_seconds += time.perf_counter() - started
        return True

    # -- 1. requests in --------------------------------------------------------------------------------

    def _admit(self) -> None:
        while self._pending:
            job = self._pending.pop(0)
            if job.future.done():  # its client left while it waited
                self.metrics.abandoned += 1
                continue
            try:
                adapter = self.models.adapter_of(job.model)
            except UnknownModelError as error:  # its adapter was unloaded while it waited
                self._settle(job, error)
                continue
            request = Request(job, adapter, time.perf_counter(), [None] * job.rows, job.rows)
            if job.logit_bias:
                try:
                    request.bias = self.sampler._logit_bias(job.logit_bias, self._vocab)
                except ValueError as error:
                    self._settle(job, error)
                    continue
            self._live[id(request)] = request
            self.metrics.prompt_tokens += sum(len(ids) for ids in job.prompts)
            self._work.extend(PromptWork(request, index, ids) for index, ids in enumerate(job.prompts))

    # -- 2. prefill ------------------------------------------------------------------------------------

    def _prefill(self) -> None:
        while self._work and self._work[0].request.gone:
            self._work.popleft()
        placing = sum(len(p.waiting) for p in self._prefilled)
        if not self._work or placing >= self.max_batch_size - len(self._rows):
            return  # rows already prefilled fill the free slots: prefilling more would only hold memory
        head = self._work[0]
        if head.staging is not None or len(head.ids) > self.prefill_chunk:
            self._prefill_chunk_of(head)
            return
        batch, width, rows = [], 0, placing + len(self._rows)
        for work in self._work:
            if work.request.gone:
                continue
            wider = max(width, len(work.ids))
            job = work.request.job
            if batch and (
                len(work.ids) > self.prefill_chunk
                or (len(batch) + 1) * wider > self.prefill_chunk
                or rows + job.n > self.max_batch_size
            ):
                break
            batch.append(work)
            width, rows = wider, rows + job.n
        for work in batch:
            self._work.remove(work)
        self._plan = (batch, width, 0, width)

    def _prefill_chunk_of(self, work: PromptWork) -> None:
        """The next ``prefill_chunk`` tokens of a long prompt; it joins the batch when the last is done."""
        if work.staging is None:
            work.staging = KVCache.allocate(self._decoder, 1, len(work.ids), like=self._decoder.embed)
        start = work.staging.length
        end = min(start + self.prefill_chunk, len(work.ids))
        if end == len(work.ids):
            self._work.popleft()
        self._plan = ([work], len(work.ids), start, end)

    def _prefill_segment(self, batch: list[PromptWork], width: int, start: int, end: int) -> tuple:
        """(input ids, positions, mask, keys and values) of prompts ``batch`` (right-padded to ``width``) from
        column ``start`` to ``end``."""
        decoder, device = self._decoder, self._device
        staging = batch[0].staging if len(batch) == 1 and batch[0].staging is not None else None
        if staging is None:
            staging = KVCache.allocate(decoder, len(batch), width, like=decoder.embed)
        ids = torch.tensor(
            [w.ids[start:end] + [self.sampler.pad_id] * (end - start - len(w.ids[start:end])) for w in batch],
            device=device,
        )
        positions = torch.arange(start, end, device=device).expand(len(batch), -1)
        # Right-padded rows: causality alone keeps every real query off the padding after its prompt.
        mask = attention_mask(torch.ones(len(batch), end, dtype=torch.bool, device=device), start)
        return ids, positions, mask, staging

    def _run_prefill(self, batch: list[PromptWork], width: int, start: int, end: int) -> None:
        """A prefill slice on its own (nothing is decoding to share the forward with)."""
        segment = self._prefill_segment(batch, width, start, end)
        self._route([self._adapter_index[w.request.adapter] for w in batch])
        hidden = self._decoder.forward(*segment)
        self._prefilled_slice(batch, width, start, end, segment[3], hidden)

    def _prefilled_slice(
        self,
        batch: list[PromptWork],
        width: int,
        start: int,
        end: int,
        staging: KVCache,
        hidden: torch.Tensor,
    ) -> None:
        """After a prefill slice: a prompt with slices to go keeps its keys and values; finished prompts
        wait, with their first logits, for slots."""
        decoder, device = self._decoder, self._device
        self.metrics.batches += 1
        if end < width:  # a long prompt with chunks to go
            batch[0].staging = staging
            return
        last = torch.tensor([len(w.ids) - 1 - start for w in batch], device=device)
        logits = decoder.logits(hidden[torch.arange(len(batch), device=device), last])
        waiting = deque(
            (row, work, sample) for row, work in enumerate(batch) for sample in range(work.request.job.n)
        )
        self._prefilled.append(Prefilled(staging, width, logits, waiting))

    # -- 3. rows join the batch ------------------------------------------------------------------------

    def _place(self) -> None:
        while self._prefilled and len(self._rows) < self.max_batch_size:
            prefilled = self._prefilled[0]
            placed: list[tuple[int, PromptWork, int]] = []
            while prefilled.waiting and len(self._rows) + len(placed) < self.max_batch_size:
                entry = prefilled.waiting.popleft()
                if not entry[1].request.gone:
                    placed.append(entry)
            if not prefilled.waiting:
                self._prefilled.popleft()
            if not placed:
                continue
            first = len(self._rows)
            sources = torch.tensor([row for row, _, _ in placed], device=self._device)
            self._slots.reserve(first + len(placed), prefilled.width + 1)
            self._slots.place(first, prefilled.staging, sources, prefilled.width)
            new_logits = prefilled.logits[sources]
            self._logits = new_logits if self._logits is None else torch.cat([self._logits, new_logits])
            self._rows += [self._new_row(work, sample) for _, work, sample in placed]
            if first:
                self.metrics.joined_running += len(placed)

    def _new_row(self, work: PromptWork, sample: int) -> Row:
        request, job = work.request, work.request.job
        choice = work.index * job.n + sample
        row = Row(request, choice, work.ids, len(work.ids))
        if job.seed is not None and job.temperature >= GREEDY_BELOW:
            seed = (job.seed + choice * SEED_SPREAD) % 2**64
            row.generator = torch.Generator(device=self._device).manual_seed(seed)
        if job.presence_penalty or job.frequency_penalty:
            row.counts = torch.zeros(1, self._vocab, device=self._device)
        if job.response_format is not None:
            row.constraint = self.sampler.grammars.constraint(parse_response_format(job.response_format), 1)
        return row

    # -- 4. sampling -----------------------------------------------------------------------------------

    def _sample(self) -> list[int]:
        logits = self._logits
        rows = self._rows
        adjusted = [i for i, row in enumerate(rows) if row.request.bias is not None or row.counts is not None]
        constrained = [i for i, row in enumerate(rows) if row.constraint is not None]
        if adjusted or constrained:
            logits = logits.float().clone()
        for i in adjusted:
            row = rows[i]
            logits[i : i + 1] = adjusted_logits(logits[i : i + 1], row.request.bias, row.counts, row.job)
        not_finished = torch.zeros(1, dtype=torch.bool)
        for i in constrained:
            try:
                logits[i : i + 1] = rows[i].constraint.mask(logits[i : i + 1], not_finished)
            except ResponseFormatError as error:  # the schema needs text this tokenizer cannot write
                self._fail(rows[i].request, error)
        tokens = torch.empty(len(rows), dtype=torch.long, device=logits.device)
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(rows):
            if row.generator is not None:
                job = row.job
                tokens[i] = sample_by_cdf(
                    logits[i : i + 1], job.temperature, job.top_p, row.generator, job.top_k
                )[0]
            else:
                groups.setdefault((row.job.temperature, row.job.top_p, row.job.top_k), []).append(i)
        for (temperature, top_p, top_k), members in groups.items():
            if len(members) == len(rows):
                tokens = sample_by_cdf(logits, temperature, top_p, None, top_k)
            else:
                index = torch.tensor(members, device=logits.device)
                tokens[index] = sample_by_cdf(logits[index], temperature, top_p, None, top_k)
        if any(row.job.logprobs for row in rows):  # a pass over the vocabulary: only for rows that ask
            self._logprobs(logits, tokens)
        return tokens.tolist()

    def _logprobs(self, logits: torch.Tensor, tokens: torch.Tensor) -> None:
        """Each row that asks: its token's log-prob under what it sampled from, and the alternatives."""
        for i, row in enumerate(self._rows):
            job = row.job
            if not job.logprobs:
                continue
            scale = job.temperature if job.temperature >= GREEDY_BELOW else 1.0
            step = torch.log_softmax(logits[i].float() / scale, -1)
            row.logprobs.append(float(step[tokens[i]]))
            if job.top_logprobs:
                values, ids = step.topk(min(job.top_logprobs, step.shape[-1]))
                pairs = [(t, v) for t, v in zip(ids.tolist(), values.tolist(), strict=True)]
                row.top.append([(t, v) for t, v in pairs if v != float("-inf")])

    # -- 5. rows end -----------------------------------------------------------------------------------

    def _record(self, tokens: list[int]) -> None:
        stop_ids = set(self.sampler.stop_ids)
        streamed: dict[int, tuple[Job, list]] = {}
        for row, token in zip(self._rows, tokens, strict=True):
            job = row.job
            if row.request.gone:
                row.done = True
                continue
            row.tokens.append(token)
            self.metrics.completion_tokens += 1  # every token generated, a row that is then left included
            if row.counts is not None:
                row.counts[0, token] += 1
            if row.constraint is not None:
                row.constraint.advance([token], [False])
            if job.stream is not None:
                streamed.setdefault(id(job), (job, []))[1].append((row.choice, [token]))
            if token in stop_ids:
                row.done = True
            elif job.stop:
                text = self.models.tokenizer.decode(row.tokens, skip_special_tokens=True)
                hits = [text.find(s) for s in job.stop if s in text]
                if hits:
                    row.done, row.cut = True, text[: min(hits)]
            if len(row.tokens) >= job.max_tokens:
                row.done = True
        self.metrics.decode_steps += 1
        self.metrics.largest_batch = max(self.metrics.largest_batch, len(self._rows))
        if streamed:
            items = [(job.stream, item) for job, chunk in streamed.values() for item in chunk]
            self._loop.call_soon_threadsafe(_put_all, items)
        for row in self._rows:
            if row.done and not row.request.gone:
                self._finish(row)

    def _finish(self, row: Row) -> None:
        request = row.request
        stopped = row.cut is not None or (row.tokens and row.tokens[-1] in self.sampler.stop_ids)
        text = row.cut
        if text is None:
            text = self.models.tokenizer.decode(row.tokens, skip_special_tokens=True)
        job = request.job
        request.results[row.choice] = Generation(
            text=text,
            token_ids=row.tokens,
            prompt_ids=list(row.prompt),
            logprobs=row.logprobs if job.logprobs else None,
            top_logprobs=row.top if job.top_logprobs else None,
            finish_reason="stop" if stopped else "length",
            latency_s=time.perf_counter() - request.started,
        )
        self.metrics.completions += 1
        request.remaining -= 1
        if request.remaining == 0:
            self._settle(job, request.results)
            self._live.pop(id(request), None)

    def _compact(self, tokens: list[int]) -> list[int]:
        """Drop the rows that ended: the last rows move into their slots. Returns the kept rows' tokens."""
        rows = self._rows
        ended = [i for i, row in enumerate(rows) if row.done or row.request.gone]
        if not ended:
            return tokens
        keep = len(rows) - len(ended)
        holes = [i for i in ended if i < keep]
        ended_set = set(ended)
        movers = [i for i in range(keep, len(rows)) if i not in ended_set]
        self._slots.move(holes, movers)
        order = list(range(len(rows)))
        for hole, mover in zip(holes, movers, strict=True):
            order[hole] = mover
        order = order[:keep]
        self._rows = [rows[i] for i in order]
        if self._logits is not None:
            self._logits = self._logits[torch.tensor(order, dtype=torch.long, device=self._logits.device)]
        return [tokens[i] for i in order]

    # -- 6. one decoding step --------------------------------------------------------------------------

    def _decode(self, tokens: list[int]) -> None:
        rows = self._rows
        device = self._device
        lengths = torch.tensor([row.length for row in rows], device=device)
        self._slots.reserve(len(rows), max(row.length for row in rows) + 1)
        adapters = [self._adapter_index[row.request.adapter] for row in rows]
        step = self._slots.step(lengths)
        token = torch.tensor(tokens, device=device)
        decoding = (token[:, None], lengths[:, None], step.mask(), step)
        if self._plan is None:
            self._route(adapters)
            hidden = self._decoder.forward(*decoding)
        else:  # this step's prefill slice shares the pass over the weights (routed token by token)
            batch, width, start, end = self._plan
            prefill = self._prefill_segment(batch, width, start, end)
            adapters += [self._adapter_index[w.request.adapter] for w in batch for _ in range(end - start)]
            self._route(adapters)
            hidden, prefilled = self._decoder.forward_together([decoding, prefill])
            self._prefilled_slice(batch, width, start, end, prefill[3], prefilled)
            self._plan = None
        self._logits = self._decoder.logits(hidden[:, -1])
        for row in rows:
            row.length += 1

    # -- the model -------------------------------------------------------------------------------------

    def _build_decoder(self) -> None:
        """The fused decoder over the base and every loaded adapter, rows routed to theirs."""
        names = [None, *sorted({a for a in self.models.routes.values() if a is not None})]
        self._decoder, self._routing = routed_decoder(self.models.model, names)
        self._adapter_index = {name: index for index, name in enumerate(names)}
        self._device = self._decoder.embed.device
        self._vocab = self._decoder.head.weight.shape[0]
        whole = self._decoder.embed.dtype in HALF_DTYPES and self._device.type == "cpu"
        self._slots = SlotCache(self._decoder, whole=whole)
        self._routed = None

    def _route(self, adapters: list[int]) -> None:
        if adapters != self._routed:
            self._routing.route(adapters, self._device)
            self._routed = adapters
            if len(set(adapters)) > 1:
                self.metrics.mixed_batches += 1

    def _load(self, name: str, path: str) -> None:
        self.models.load(name, path)
        try:
            self._rebuild()
        except Unsupported as error:
            self.models.unload(name)
            self._rebuild()
            raise AdapterError(
                f"cannot serve adapter '{name}' with continuous batching: {error} (serve it with "
                "--scheduler static)"
            ) from None

    def _unload(self, name: str) -> None:
        internal = self.models.routes.get(name)
        self.models.unload(name)
        for request in self._requests():
            if request.adapter == internal and internal is not None:
                self._fail(request, UnknownModelError(f"The adapter '{name}' was unloaded"))
        with torch.inference_mode():  # the slots are inference tensors
            self._compact([0] * len(self._rows))
        self._rebuild()

    def _rebuild(self) -> None:
        """A new decoder for the adapters now loaded. The running rows keep their slots and next logits:
        their adapters' weights did not change, only the adapters' numbering did."""
        slots = self._slots
        self._build_decoder()
        self._slots.keys, self._slots.values = slots.keys, slots.values

    # -- answers ---------------------------------------------------------------------------------------

    def _settle(self, job: Job, outcome) -> None:
        self._loop.call_soon_threadsafe(settle, job, outcome)

    def _fail(self, request: Request, error: Exception) -> None:
        self._live.pop(id(request), None)
        if not request.gone:
            request.failed = True
            self._settle(request.job, error)

    def _requests(self) -> list[Request]:
        """Every request taken from the queue and not yet answered."""
        return [request for request in self._live.values() if not request.gone]

    def _fail_running(self, error: Exception) -> None:
        for request in self._requests():
            self._fail(request, error)
        self._rows, self._logits, self._routed = [], None, None
        self._work.clear()
        self._prefilled.clear()
        self._slots.release()


def _put_all(items: list[tuple[asyncio.Queue, tuple]]) -> None:
    for queue, item in items:
        queue.put_nowait(item)
