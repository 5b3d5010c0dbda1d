"""Putting a server together: load the base model and its adapters, then run uvicorn on the app."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

from rewardlab.config import ServeConfig
from rewardlab.errors import RewardlabError
from rewardlab.models.adapters import check_base
from rewardlab.models.loading import load_model, locate, resolve
from rewardlab.models.routed_lora import Unsupported
from rewardlab.serve.app import create_app
from rewardlab.serve.continuous import ContinuousEngine
from rewardlab.serve.engine import Engine
from rewardlab.serve.errors import AdapterError
from rewardlab.serve.limits import ServeLimits
from rewardlab.serve.registry import ServedModels, adapter_dir, parse_adapter_specs
from rewardlab.sockets import bind

logger = logging.getLogger("rewardlab.serve")


def build_engine(
    model: str,
    adapters: dict[str, str] | None = None,
    served_name: str | None = None,
    dtype: str = "float32",
    device: str = "auto",
    max_batch_size: int = 128,
    batch_wait_ms: float = 5.0,
    mix_adapters: bool = False,
    scheduler: str = "continuous",
    prefill_chunk: int = 256,
) -> Engine:
    """The engine over ``model`` (anything ``load_model`` takes) and ``adapters`` ({name: adapter or run}).

    ``scheduler="continuous"`` (:class:`ContinuousEngine`) schedules every decoding step; a model or adapter
    it cannot run (an architecture other than Llama and Qwen2, DoRA) is served batch by batch instead, as
    ``"static"`` (:class:`Engine`) always is."""
    adapters = adapters or {}
    base_dir, _ = resolve(model)
    for path in adapters.values():
        # A wrong adapter path, or one trained on another base, fails now, not after the base has loaded.
        try:
            check_base(adapter_dir(path), base_dir, served_name or model)
        except RewardlabError as error:
            raise AdapterError(str(error)) from None
    base, tokenizer = load_model(model, dtype=dtype, device=device)
    served = ServedModels(base, tokenizer, served_name or model)
    for name, path in adapters.items():
        served.load(name, path)
    if scheduler == "continuous":
        try:
            return ContinuousEngine(served, max_batch_size=max_batch_size, prefill_chunk=prefill_chunk)
        except Unsupported as error:
            logger.warning("serving batch by batch: continuous batching cannot run this model (%s)", error)
    return Engine(
        served, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, mix_adapters=mix_adapters
    )


def run_server(
    engine: Engine,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    sock: socket.socket | None = None,
    limits: ServeLimits | None = None,
    adapter_dirs: list[str] | None = None,
) -> None:
    import uvicorn

    app = create_app(engine, api_key, limits, adapter_dirs)
    config = uvicorn.Config(app, host=host, port=port, log_level="info")
    uvicorn.Server(config).run(sockets=[sock if sock is not None else bind(host, port)])


def serve(
    config: ServeConfig,
    adapter_specs: list[str] | None = None,
    api_key: str | None = None,
    say: Callable[[str], None] = print,
) -> None:
    """``rewardlab serve``: the port bound first (a port in use is said before anything loads), then the base
    model and its adapters (``config.adapters`` and ``name=path`` specs; run ids name their runs), then the
    server, until it is stopped. ``say`` gets the warnings and the address."""
    if config.model is None:
        raise RewardlabError("serve needs a base model: --model NAME (or model = ... in the config)")
    specs = {**config.adapters, **parse_adapter_specs(adapter_specs or [], base_name=config.model)}
    adapter_dirs = runtime_adapter_dirs(config)
    sock = bind(config.host, config.port)
    try:
        engine = build_engine(
            locate(config.model, config.runs_dir),
            {name: locate(path, config.runs_dir) for name, path in specs.items()},
            served_name=config.model,
            dtype=config.dtype,
            device=config.device,
            max_batch_size=config.max_batch_size,
            batch_wait_ms=config.batch_wait_ms,
            mix_adapters=config.mix_adapters,
            scheduler=config.scheduler,
            prefill_chunk=config.prefill_chunk_tokens,
        )
    except BaseException:
        sock.close()
        raise
    for warning in [*engine.models.warnings, *exposure_warnings(config, api_key)]:
        say(f"[yellow]warning:[/] {warning}")
    say(
        f"serving {', '.join(engine.models.names)} at http://{config.host}:{sock.getsockname()[1]}/v1"
        + (" (API key required)" if api_key else "")
        + f", {engine.scheduler} batching of up to {engine.max_batch_size} completions"
    )
    limits = ServeLimits(
        max_request_bytes=config.max_request_bytes,
        max_n=config.max_n,
        max_tokens=config.max_tokens,
        max_concurrent_requests=config.max_concurrent_requests,
        max_queued_completions=config.max_queued_completions,
    )
    run_server(
        engine,
        host=config.host,
        port=config.port,
        api_key=api_key or None,
        sock=sock,
        limits=limits,
        adapter_dirs=adapter_dirs,
    )


def runtime_adapter_dirs(config: ServeConfig) -> list[str] | None:
    """The directories runtime loads may read from (each must exist), or ``None``: runtime loading off."""
    if not config.allow_runtime_adapters:
        return None
    for directory in config.adapter_dirs:
        if not Path(directory).is_dir():
            raise RewardlabError(f"--adapter-dir is not a directory: {directory}")
    return [str(Path(directory).resolve()) for directory in config.adapter_dirs]


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def exposure_warnings(config: ServeConfig, api_key: str | None) -> list[str]:
    """What a server reachable from the network would let anyone do: said at startup."""
    if api_key or config.host in LOOPBACK:
        return []
    also = (
        f" and load adapters from {', '.join(config.adapter_dirs)}" if config.allow_runtime_adapters else ""
    )
    return [
        f"listening on {config.host} without an API key: anyone who can reach it can generate{also}; "
        "give it --api-key"
    ]
