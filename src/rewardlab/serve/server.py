"""Putting a server together: load the base model and its adapters, then run uvicorn on the app."""

from __future__ import annotations

from rewardlab.models.loading import load_model
from rewardlab.serve.app import create_app
from rewardlab.serve.engine import Engine
from rewardlab.serve.registry import ServedModels, adapter_dir


def build_engine(
    model: str,
    adapters: dict[str, str] | None = None,
    served_name: str | None = None,
    dtype: str = "float32",
    device: str = "auto",
    max_batch_size: int = 32,
    batch_wait_ms: float = 5.0,
    mix_adapters: bool = False,
) -> Engine:
    """The engine over ``model`` (anything ``load_model`` takes) and ``adapters`` ({name: adapter or run})."""
    adapters = adapters or {}
    for path in adapters.values():
        adapter_dir(path)  # a wrong adapter path fails now, not after the base model has loaded
    base, tokenizer = load_model(model, dtype=dtype, device=device)
    served = ServedModels(base, tokenizer, served_name or model)
    for name, path in adapters.items():
        served.load(name, path)
    return Engine(
        served, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, mix_adapters=mix_adapters
    )


def run_server(engine: Engine, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(engine, api_key), host=host, port=port, log_level="info")
