"""An OpenAI-compatible HTTP server over a base model and its LoRA adapters (``rewardlab serve``)."""

from rewardlab.serve.app import create_app
from rewardlab.serve.engine import Engine, Metrics
from rewardlab.serve.registry import ServedModels, parse_adapter_specs
from rewardlab.serve.server import build_engine, run_server, serve

__all__ = [
    "Engine",
    "Metrics",
    "ServedModels",
    "build_engine",
    "create_app",
    "parse_adapter_specs",
    "run_server",
    "serve",
]
