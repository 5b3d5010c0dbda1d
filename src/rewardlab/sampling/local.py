"""Batched sampling from a local Hugging Face model with a KV cache.

All completions of a batch advance one token per forward pass: prompts are left-padded, the prompt is
encoded once (prefill), then each step feeds only the newest token. Rows that share a prompt (the ``n``
samples of a group) share its prefill. The model's :class:`~rewardlab.models.forward.Forward` does the
computing; this module chooses tokens. Finished sequences keep padding along until the whole batch is done
or ``max_new_tokens`` is reached. The generated ids are returned as they were sampled, so the trainer
scores exactly what the model produced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import torch

from rewardlab import faults
from rewardlab.models.chat import ChatRenderer
from rewardlab.models.forward import Forward, forward_for
from rewardlab.sampling.base import Generation, Prompt, SamplingParams, derived_seed
from rewardlab.sampling.structured import Grammars, parse_response_format

# Called after every decoding step with (first flat row of the chunk, the new token of each row in it); it may
# return rows of the chunk (0-based) to end now: a server's rows whose client has left.
StepCallback = Callable[[int, list[int]], list[int] | None]

# Below this a temperature is greedy, as in vLLM: logits divided by a temperature near zero overflow (and one
# under float32's smallest number is zero), and a softmax of infinities is NaN.
GREEDY_BELOW = 1e-5


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
    top_k: int = 0,
) -> torch.Tensor:
    """One token per row of ``logits`` (B, V): greedy at temperature 0, else sampling from the tempered
    distribution, cut to the ``top_k`` likeliest tokens (0: all) and then to the nucleus of mass ``top_p``.

    Top-k comes first, as in transformers and vLLM: the nucleus is taken over what top-k left.
    """
    return _sample(
        logits, temperature, top_p, top_k, lambda probs: torch.multinomial(probs, 1, generator=generator)
    )


def sample_by_cdf(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
    top_k: int = 0,
) -> torch.Tensor:
    """:func:`sample_next`'s distribution (the same greedy, top-k and top-p cuts), drawn by inverting each
    row's cumulative distribution at one uniform number: ``B`` random numbers instead of the ``B * V`` that
    ``torch.multinomial`` draws, which on a CPU and a 49k-token vocabulary is most of a decoding step (34 ms
    of a 90 ms step at 32 rows). The server samples this way; the local sampler keeps ``torch.multinomial``
    unless ``SamplingParams.draw`` asks for this, so training and evaluation draw what they drew before.
    """

    def invert(probs: torch.Tensor) -> torch.Tensor:
        cumulative = probs.cumsum(dim=-1)
        # A point uniform in [0, mass): the first token whose cumulative mass exceeds it. A token of
        # probability zero adds no mass, so it is never the first to exceed anything.
        uniform = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device) * cumulative[:, -1:]
        return torch.searchsorted(cumulative, uniform, right=True).clamp_(max=probs.shape[-1] - 1)

    return _sample(logits, temperature, top_p, top_k, invert)


def sample_by_uniforms(
    logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor, top_k: int = 0
) -> torch.Tensor:
    """:func:`sample_by_cdf` with each row's uniform number given (``uniforms``, (B,)): rows that draw from
    streams of their own (``Prompt.seed``) take them from their own generators, all of a generation's at
    once, and one pass over the batch picks every row's token."""

    def invert(probs: torch.Tensor) -> torch.Tensor:
        cumulative = probs.cumsum(dim=-1)
        point = uniforms[:, None].to(cumulative.dtype) * cumulative[:, -1:]
        return torch.searchsorted(cumulative, point, right=True).clamp_(max=probs.shape[-1] - 1)

    return _sample(logits, temperature, top_p, top_k, invert)


def _sample(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    top_k: int,
    draw: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The tempered distribution cut by ``top_k`` and ``top_p``, one token per row picked by ``draw``
    (probabilities (B, V) -> token indices (B, 1))."""
    if temperature < GREEDY_BELOW:
        return logits.argmax(dim=-1)
    logits = logits.float()
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)  # ties with the k-th token stay
    # At temperature 1 the division changes no bit: skipping it saves a pass over (B, V).
    probs = torch.softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
        return order.gather(-1, draw(sorted_probs.masked_fill(drop, 0.0))).squeeze(-1)
    return draw(probs).squeeze(-1)


def adjusted_logits(
    logits: torch.Tensor, bias: torch.Tensor | None, counts: torch.Tensor | None, params: SamplingParams
) -> torch.Tensor:
    """``logits`` (B, V) plus ``logit_bias``, less OpenAI's presence and frequency penalties on the tokens
    each row has generated (``counts``: occurrences so far, (B, V))."""
    logits = logits.float()
    if bias is not None:
        logits = logits + bias
    if counts is not None:
        logits = logits - params.frequency_penalty * counts - params.presence_penalty * (counts > 0).float()
    return logits


class LocalSampler:
    """The :class:`~rewardlab.sampling.base.Sampler` for an in-process model.

    ``max_batch_size`` bounds how many sequences share one forward pass (memory); the rest wait for the
    next chunk. ``forward`` is the model's forward, :func:`~rewardlab.models.forward.forward_for` picks it
    by default: the fused one for Llama and Qwen2 (same tokens, a fraction of the time), transformers' own
    for other models, or always with ``lean=False``.
    """

    def __init__(
        self,
        model,
        tokenizer,
        max_batch_size: int = 256,
        renderer: ChatRenderer | None = None,
        lean: bool = True,
        forward: Forward | None = None,
    ):
        self.model = model
        self.forward = forward or forward_for(model, lean=lean)
        self.tokenizer = tokenizer
        self.renderer = renderer or ChatRenderer(tokenizer)
        self.max_batch_size = max_batch_size
        self.stop_ids = sorted(self.renderer.stop_token_ids)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self._grammars: Grammars | None = None

    @property
    def grammars(self) -> Grammars:
        """Response formats compiled for this tokenizer (built on first use; plain sampling never is)."""
        if self._grammars is None:
            vocab_size = getattr(self.model.config, "vocab_size", None) or len(self.tokenizer)
            self._grammars = Grammars(self.tokenizer, vocab_size, self.stop_ids)
        return self._grammars

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(
        self,
        prompts: list[Prompt],
        params: SamplingParams,
        on_step: StepCallback | None = None,
        forward: Forward | None = None,
    ) -> list[list[Generation]]:
        """``on_step`` sees each step's tokens as they are sampled (a server streams them); flat row
        ``i * n + j`` is sample ``j`` of prompt ``i``. Finished rows keep receiving the pad id. Rows
        ``on_step`` returns are finished there and then (their text is what they had), and a chunk whose
        rows are all finished stops decoding.
        ``forward`` replaces the sampler's own for this call (a server routing rows to adapters)."""
        forward = forward or self.forward
        response_format = parse_response_format(params.response_format)
        if response_format is not None:
            self.grammars.compile(response_format)  # a schema it cannot compile fails before any work
        prompt_ids = [
            p.token_ids if p.token_ids is not None else self.renderer.prompt_ids(p.messages) for p in prompts
        ]
        flat = [ids for ids in prompt_ids for _ in range(params.n)]
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        row_generators = self._row_generators(prompts, params.n)
        results: list[Generation] = []
        with forward.sampling():  # the weights as they are now, for every chunk
            for start in range(0, len(flat), self.max_batch_size):
                step_callback = None if on_step is None else partial(on_step, start)
                chunk = flat[start : start + self.max_batch_size]
                if row_generators is not None:  # every row its own stream, however the rows are chunked
                    generator = row_generators[start : start + self.max_batch_size]
                results.extend(
                    self._generate_batch(forward, chunk, params, generator, step_callback, response_format)
                )
        return [results[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _row_generators(self, prompts: list[Prompt], n: int) -> list[torch.Generator] | None:
        """One generator per flat row when the prompts carry seeds (``Prompt.seed``), else None."""
        seeded = [p.seed is not None for p in prompts]
        if not any(seeded):
            return None
        if not all(seeded):
            raise ValueError("either every prompt of a batch has a seed or none has")
        device = self.device
        seeds = [derived_seed(p.seed, j) for p in prompts for j in range(n)]
        return [torch.Generator(device=device).manual_seed(seed) for seed in seeds]

    def _left_padded(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row, the repeats of a group included (the forward finds them), as one tensor each: rows
        are assembled as lists and converted once, since a tensor per row costs more than the rows."""
        width = max(len(p) for p in prompts)
        ids = [[self.pad_id] * (width - len(p)) + list(p) for p in prompts]
        attention = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        device = self.device
        return torch.tensor(ids, device=device), torch.tensor(attention, device=device)

    @torch.inference_mode()
    def _generate_batch(
        self,
        forward: Forward,
        prompts: list[list[int]],
        params: SamplingParams,
        generator: torch.Generator | list[torch.Generator] | None,
        on_step: Callable[[list[int]], list[int] | None] | None = None,
        response_format: dict | None = None,
    ) -> list[Generation]:
        started = time.perf_counter()
        device = self.device
        batch = len(prompts)
        stop_ids = torch.tensor(self.stop_ids, device=device)
        input_ids, prompt_attention = self._left_padded(prompts)
        logits, state = forward.prefill(input_ids, prompt_attention, params.max_new_tokens)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        tokens: list[torch.Tensor] = []
        logprobs: list[torch.Tensor] = []
        string_stop_at: list[int | None] = [None] * batch  # length at which a stop string appeared
        texts_cut: list[str | None] = [None] * batch
        top_values: list[torch.Tensor] = []
        top_ids: list[torch.Tensor] = []
        scale = params.temperature if params.temperature >= GREEDY_BELOW else 1.0
        # Only what a request asks for touches the logits: at the defaults they are the model's, untouched.
        bias = self._logit_bias(params.logit_bias, logits.shape[-1]) if params.logit_bias else None
        counts = None
        if params.presence_penalty or params.frequency_penalty:
            counts = torch.zeros(batch, logits.shape[-1], device=device)
        # A response format masks, before each step, every token that cannot continue the row's JSON.
        constraint = None if response_format is None else self.grammars.constraint(response_format, batch)
        uniforms = None
        if isinstance(generator, list):  # a stream per row: its uniform numbers for every step, drawn now
            steps = params.max_new_tokens
            uniforms = torch.stack([torch.rand(steps, generator=g, device=device) for g in generator])
        for step in range(params.max_new_tokens):
            if bias is not None or counts is not None:
                logits = adjusted_logits(logits, bias, counts, params)
            if constraint is not None:
                logits = constraint.mask(logits, finished)
            if uniforms is not None:
                token = sample_by_uniforms(
                    logits, params.temperature, params.top_p, uniforms[:, step], params.top_k
                )
            else:
                draw = sample_by_cdf if params.draw == "inverse_cdf" else sample_next
                token = draw(logits, params.temperature, params.top_p, generator, params.top_k)
            token = torch.where(finished, torch.full_like(token, self.pad_id), token)
            if constraint is not None:
                constraint.advance(token.tolist(), finished.tolist())
            if params.logprobs:  # a pass over the vocabulary per step: only for callers that read them
                step_logprobs = torch.log_softmax(logits.float() / scale, -1)
                logprobs.append(step_logprobs.gather(-1, token[:, None])[:, 0])
                if params.top_logprobs:
                    values, ids = step_logprobs.topk(min(params.top_logprobs, step_logprobs.shape[-1]), -1)
                    top_values.append(values)
                    top_ids.append(ids)
            tokens.append(token)
            if counts is not None:
                counts.scatter_add_(1, token[:, None], torch.ones(batch, 1, device=device))
            if on_step is not None and (ended := on_step(token.tolist())):
                finished[ended] = True
            finished |= torch.isin(token, stop_ids)
            if params.stop:
                self._check_stop_strings(tokens, finished, params.stop, string_stop_at, texts_cut)
            if bool(finished.all()) or step + 1 == params.max_new_tokens:
                break
            logits = forward.decode(state, token)
            if step == 0:
                faults.pause_point("sampling")  # a crash test's kill lands mid-generation

        elapsed = time.perf_counter() - started
        generated = torch.stack(tokens, 1).tolist() if tokens else [[] for _ in range(batch)]
        token_logprobs = torch.stack(logprobs, 1).tolist() if logprobs else [[] for _ in range(batch)]
        top = None
        if top_ids:  # per row, per step: [(token id, log-prob), ...], likeliest first
            pairs = zip(torch.stack(top_ids, 1).tolist(), torch.stack(top_values, 1).tolist(), strict=True)
            top = [[list(zip(i, v, strict=True)) for i, v in zip(*row, strict=True)] for row in pairs]
            if constraint is not None:  # tokens the grammar ruled out are no alternatives (log-prob -inf)
                top = [[[(i, v) for i, v in step if v != float("-inf")] for step in row] for row in top]
        stop_set = set(self.stop_ids)
        results = []
        for row in range(batch):
            ids, lps = generated[row], token_logprobs[row]
            end = next((i + 1 for i, t in enumerate(ids) if t in stop_set), None)
            if string_stop_at[row] is not None and (end is None or string_stop_at[row] < end):
                end = string_stop_at[row]
            if end is not None:
                ids, lps = ids[:end], lps[:end]
                reason = "stop"
            else:
                reason = "length"
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if texts_cut[row] is not None:
                text = texts_cut[row]
            results.append(
                Generation(
                    text=text,
                    token_ids=ids,
                    prompt_ids=list(prompts[row]),
                    logprobs=lps if params.logprobs else None,
                    top_logprobs=top[row][: len(ids)] if top is not None else None,
                    finish_reason=reason,
                    latency_s=elapsed,
                )
            )
        return results

    def _logit_bias(self, logit_bias: dict[int, float], vocab_size: int) -> torch.Tensor:
        bias = torch.zeros(vocab_size, device=self.device)
        for token, value in logit_bias.items():
            if not 0 <= token < vocab_size:
                raise ValueError(f"logit_bias names token {token}, outside the vocabulary [0, {vocab_size})")
            bias[token] = value
        return bias

    def _check_stop_strings(
        self,
        tokens: list[torch.Tensor],
        finished: torch.Tensor,
        stop: list[str],
        stop_at: list[int | None],
        texts_cut: list[str | None],
    ) -> None:
        """Mark rows whose text now contains a stop string; the text is cut before it."""
        history = torch.stack(tokens, 1)
        for row in torch.nonzero(~finished).flatten().tolist():
            text = self.tokenizer.decode(history[row].tolist(), skip_special_tokens=True)
            hits = [text.find(s) for s in stop if s in text]
            if hits:
                finished[row] = True
                stop_at[row] = len(tokens)
                texts_cut[row] = text[: min(hits)]
