from rewardlab.envs.base import Environment, MultiTurnEnv, SingleTurnEnv
from rewardlab.envs.dataset import load_examples
from rewardlab.envs.registry import list_environments, load_environment

__all__ = [
    "Environment",
    "MultiTurnEnv",
    "SingleTurnEnv",
    "list_environments",
    "load_environment",
    "load_examples",
]
