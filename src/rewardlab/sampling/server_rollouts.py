"""Rollouts sampled by an inference server, in token ids, for training: ``rollout_engine = "server"``.

:class:`RolloutServer` talks to any OpenAI-compatible server that loads LoRA adapters at run time (``rewardlab
serve --allow-runtime-adapters``, or vLLM with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``): whether it answers,
``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (vLLM's routes, which rewardlab serve answers the
same way), and ``/v1/completions``.

:class:`ServerSampler` is the :class:`~rewardlab.sampling.base.Sampler` the trainer samples with. Nothing is
tokenized twice: every prompt goes to ``/v1/completions`` as the token ids the trainer's
:class:`~rewardlab.models.chat.ChatRenderer` made (the environment's turns of a multi-turn episode included,
rendered as the local path renders them), and the answer's ids come back through vLLM's ``return_token_ids``
extension, with the log-prob of each under the distribution it was sampled from (``logprobs``). The prompt ids
the server reports are checked against those sent, and every generated token must have its log-prob, so a
server that tokenizes otherwise or leaves a token out stops the run with one line rather than training on
ids that were never sampled. The sampling parameters are all sent, so a server's own defaults (vLLM reads a
model's ``generation_config``) cannot change the policy.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from rewardlab.errors import RewardlabError
from rewardlab.models.chat import ChatRenderer
from rewardlab.sampling.base import Generation, Prompt, SamplingParams
from rewardlab.sampling.openai_compat import MAX_MESSAGE_CHARS, EndpointError

RETRYABLE = {408, 409, 429}  # and every 5xx
START_COMMANDS = (
    "rewardlab serve --model BASE --allow-runtime-adapters --adapter-dir DIR, or "
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve BASE --enable-lora"
)


class AdapterLoadError(RewardlabError):
    """The rollout server did not load an adapter the trainer wrote."""


def server_message(response: httpx.Response) -> str:
    """The server's explanation on one line: OpenAI's ``{"error": {"message"}}``, FastAPI's ``{"detail"}``
    (vLLM's unknown routes), or the body as text."""
    try:
        body = response.json()
    except ValueError:
        body = response.text
    message = body
    if isinstance(body, dict):
        error = body.get("error")
        message = (error.get("message") if isinstance(error, dict) else error) or body.get("detail") or body
    message = " ".join(str(message).split()) or response.reason_phrase
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def error_code(response: httpx.Response) -> str | None:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


class RolloutServer:
    """The HTTP side of a rollout server: reachability, runtime adapters, completions (with retries on a
    dropped connection, 429 and 5xx; any other refusal is one line at once)."""

    def __init__(
        self,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 300.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_concurrency: int = 32,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise RewardlabError(f"rollout_base_url '{base_url}' must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        key = os.environ.get(api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        self._http = httpx.Client(headers=headers, timeout=timeout_s, limits=limits)

    def close(self) -> None:
        self._http.close()

    def check(self) -> list[str]:
        """The served model names; one line when the server cannot be reached or answers no ``/models``."""
        try:
            response = self._http.get(f"{self.base_url}/models", timeout=10)
        except httpx.TransportError as error:
            raise EndpointError(
                f"rollout server {self.base_url} cannot be reached ({describe(error)}); start it first "
                f"({START_COMMANDS}) or correct rollout_base_url"
            ) from None
        if response.status_code != 200:
            raise EndpointError(f"rollout server {self.base_url}: {self._refusal(response, '/models')}")
        return [model.get("id") for model in response.json().get("data", [])]

    def load_adapter(self, name: str, path: str) -> None:
        """``POST /load_lora_adapter``; an :class:`AdapterLoadError` saying whether the server cannot load
        adapters at all or could not read this one."""
        response = self._post("load_lora_adapter", {"lora_name": name, "lora_path": path})
        if response.status_code == 200:
            return
        message = f"{response.status_code}: {server_message(response)}"
        if cannot_load_adapters(response):
            raise AdapterLoadError(
                f"rollout server {self.base_url} cannot load LoRA adapters at run time ({message}); start it "
                f"with {START_COMMANDS}"
            )
        raise AdapterLoadError(
            f"rollout server {self.base_url} could not load the adapter written to {path} ({message}); "
            "rollout_adapter_dir must be a directory the server can read (for rewardlab serve, inside its "
            "--adapter-dir; on another machine, shared storage, with rollout_adapter_server_dir naming it as "
            "the server sees it)"
        )

    def unload_adapter(self, name: str) -> str | None:
        """``POST /unload_lora_adapter``; what went wrong, or ``None``."""
        try:
            response = self._post("unload_lora_adapter", {"lora_name": name})
        except EndpointError as error:
            return str(error)
        return None if response.status_code == 200 else f"{response.status_code}: {server_message(response)}"

    def complete(self, body: dict) -> dict:
        """``POST /completions``, retried as the class says; the answer's JSON."""
        response = self._post("completions", body, retry=True)
        if response.status_code != 200:
            refusal = self._refusal(response, body.get("model"))
            raise EndpointError(f"rollout server {self.base_url}: {refusal}")
        return response.json()

    def _post(self, route: str, body: dict, retry: bool = False) -> httpx.Response:
        url = f"{self.base_url}/{route}"
        for attempt in range(self.max_retries + 1 if retry else 1):
            try:
                response = self._http.post(url, json=body)
            except httpx.TransportError as error:
                if attempt == self.max_retries or not retry:
                    raise EndpointError(
                        f"rollout server {self.base_url}: cannot connect ({describe(error)})"
                    ) from None
            else:
                status = response.status_code
                if not retry or attempt == self.max_retries or not (status in RETRYABLE or status >= 500):
                    return response
            time.sleep(self.backoff_s * 2**attempt * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _refusal(self, response: httpx.Response, what: str | None) -> str:
        status, message = response.status_code, server_message(response)
        if status == 401:
            return f"unauthorized (401): {message}; is ${self.api_key_env} set to this server's key?"
        if status == 404 and what and what in message:
            return f"model '{what}' not found (404): {message}"
        if status == 404:
            return f"not found (404): {message}; does rollout_base_url name the API root (ending in /v1)?"
        return f"{'refused' if status < 500 else 'server error'} ({status}): {message}"


def describe(error: Exception) -> str:
    cause = error.__cause__ or error
    return " ".join(str(cause).split()) or type(cause).__name__


def cannot_load_adapters(response: httpx.Response) -> bool:
    """Whether a refused load says the server loads no adapters at run time (rather than not this one):
    rewardlab serve's 403 ``runtime_adapters_disabled``, or no such route (vLLM without
    ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``: FastAPI's bare 404 ``Not Found``, or 405)."""
    if response.status_code == 403:
        return error_code(response) == "runtime_adapters_disabled"
    return response.status_code == 405 or (
        response.status_code == 404 and server_message(response) == "Not Found"
    )


@dataclass
class _Request:
    prompt_ids: list[int]
    rows: list[int]  # the prompts (indices into the call's list) whose completions this request draws
    seed: int | None


class ServerSampler:
    """Samples from the served model named :attr:`model` (the adapter of one policy version), prompts and
    completions as token ids (see the module's docstring).

    The prompts of one ``generate`` call that are the same ids (the group of one example) go as one request
    asking for all their completions, every request in flight together (at most ``max_concurrency``).
    :meth:`begin` names the model and seeds each request from (seed, step, call, request), so a server that
    honours seeds samples a step the same way whenever it is sampled; a prompt's own ``seed`` is sent as is.
    """

    def __init__(self, server: RolloutServer, tokenizer, max_concurrency: int = 32):
        self.server = server
        self.tokenizer = tokenizer
        self.renderer = ChatRenderer(tokenizer)
        self.stop_ids = sorted(self.renderer.stop_token_ids)
        self.model: str | None = None
        self._seed: str | None = None
        self._calls = 0
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="rewardlab-rollout")
        self._lock = threading.Lock()

    def begin(self, model: str, seed: int, step: int) -> None:
        """Sample from ``model`` from now on, with seeds drawn from (``seed``, ``step``)."""
        with self._lock:
            self.model, self._seed, self._calls = model, f"{seed}:{step}", 0

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Generation]]:
        if self.model is None:
            raise RuntimeError("ServerSampler.begin names the model to sample from")
        with self._lock:
            call, self._calls = self._calls, self._calls + 1
        # A prompt with a seed of its own (Prompt.seed) is a request of its own, seeded with it.
        groups: dict[tuple, list[int]] = {}
        for index, prompt in enumerate(prompts):
            ids = prompt.token_ids
            if ids is None:
                ids = self.renderer.prompt_ids(prompt.messages)
            groups.setdefault((tuple(ids), getattr(prompt, "seed", None)), []).append(index)
        requests = [
            _Request(list(ids), rows, self._request_seed(call, number) if seed is None else seed)
            for number, ((ids, seed), rows) in enumerate(groups.items())
        ]
        answers = list(self._pool.map(lambda request: self._sample(request, params), requests))
        results: list[list[Generation]] = [[] for _ in prompts]
        for request, generations in zip(requests, answers, strict=True):
            for offset, row in enumerate(request.rows):
                results[row] = generations[offset * params.n : (offset + 1) * params.n]
        return results

    def _request_seed(self, call: int, number: int) -> int | None:
        if self._seed is None:
            return None
        return random.Random(f"{self._seed}:{call}:{number}").getrandbits(63)

    def body(self, prompt_ids: list[int], n: int, params: SamplingParams, seed: int | None) -> dict:
        """The request: every sampling parameter explicit, log-probs and token ids asked for."""
        body = {
            "model": self.model,
            "prompt": prompt_ids,
            "n": n,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k or -1,  # -1: vLLM's and rewardlab serve's "all tokens"
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
            "logprobs": 0,  # the sampled token's log-prob, no alternatives
            "return_token_ids": True,
            "stop_token_ids": self.stop_ids,  # vLLM: the end-of-turn tokens the trainer stops at too
        }
        if params.stop:
            body["stop"] = params.stop
        if params.logit_bias:
            body["logit_bias"] = {str(token): bias for token, bias in params.logit_bias.items()}
        if params.response_format is not None:
            body["response_format"] = params.response_format
        if seed is not None:
            body["seed"] = seed
        return body

    def _sample(self, request: _Request, params: SamplingParams) -> list[Generation]:
        n = len(request.rows) * params.n
        started = time.perf_counter()
        answer = self.server.complete(self.body(request.prompt_ids, n, params, request.seed))
        latency = time.perf_counter() - started
        choices = sorted(answer.get("choices") or [], key=lambda choice: choice.get("index", 0))
        if len(choices) != n:
            raise EndpointError(
                f"rollout server {self.server.base_url}: asked for {n} completions, got {len(choices)}"
            )
        return [self._generation(choice, answer, request.prompt_ids, latency) for choice in choices]

    def _generation(self, choice: dict, answer: dict, prompt_ids: list[int], latency: float) -> Generation:
        where = f"rollout server {self.server.base_url}"
        ids = choice.get("token_ids")
        if ids is None:
            raise EndpointError(
                f"{where} returned no token ids: it must answer vLLM's return_token_ids (rewardlab serve, or "
                "vLLM 0.10.2 or later)"
            )
        returned_prompt = choice.get("prompt_token_ids", answer.get("prompt_token_ids"))
        if returned_prompt is not None and list(returned_prompt) != prompt_ids:
            at = next(
                (i for i, (a, b) in enumerate(zip(returned_prompt, prompt_ids, strict=False)) if a != b),
                min(len(returned_prompt), len(prompt_ids)),
            )
            raise EndpointError(
                f"{where} took the prompt's token ids otherwise than the trainer sent them (from position "
                f"{at}: {list(returned_prompt[at : at + 5])} for {prompt_ids[at : at + 5]}); serve the model "
                "being trained with its own tokenizer"
            )
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
        if logprobs is None or len(logprobs) != len(ids) or any(value is None for value in logprobs):
            count = "no" if logprobs is None else len(logprobs)
            raise EndpointError(
                f"{where} returned {count} log-probs for {len(ids)} generated tokens: training needs the "
                "sampling log-prob of every one (vLLM: --logprobs-mode processed_logprobs)"
            )
        return Generation(
            text=choice.get("text") or "",
            token_ids=list(ids),
            prompt_ids=prompt_ids,
            logprobs=[float(value) for value in logprobs],
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            latency_s=latency,
        )
