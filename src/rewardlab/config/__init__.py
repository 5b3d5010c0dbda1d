"""One documented config object per command, loaded from TOML and overridable from the command line.

Every field has a description (``rewardlab train --help-config`` prints them) and ``--print-config``
writes the config a command would run with as TOML, ready to save and pass back with ``--config``.

* :mod:`~rewardlab.config.sections`: the tables commands share (``model``, ``env``, ``sampling``,
  ``optimizer``, ``lora``);
* :mod:`~rewardlab.config.commands`: one config per command (``TrainConfig``, ``SFTConfig``, ``EvalConfig``,
  ``CompareConfig``, ``ServeConfig``, ``AuditConfig``, ``ExportConfig``, ``DashboardConfig``, ``DemoConfig``);
* :mod:`~rewardlab.config.files`: TOML files and ``key=value`` overrides in, one-line errors and TOML out;
* :mod:`~rewardlab.config.base`: what every table shares (renamed fields, a parent's defaults kept).
"""

from rewardlab.config.base import RenamedField, Section, deep_merge
from rewardlab.config.commands import (
    AuditConfig,
    CompareConfig,
    DashboardConfig,
    DataFilterConfig,
    DataGenerateConfig,
    DemoConfig,
    DemoEvalSettings,
    EvalConfig,
    EvalSettings,
    ExportConfig,
    ServeConfig,
    SFTConfig,
    SFTSettings,
    TrainConfig,
    TrainSettings,
)
from rewardlab.config.files import (
    describe_fields,
    describe_validation_error,
    endpoint,
    load_config,
    load_endpoints,
    parse_override,
    read_config,
    resume_config,
    served_model,
    to_toml,
    validated,
)
from rewardlab.config.sections import (
    BudgetConfig,
    CurriculumConfig,
    DynamicSamplingConfig,
    EntropyControlConfig,
    EnvConfig,
    EvalModelConfig,
    HealthConfig,
    LoraConfig,
    ModelConfig,
    OptimizerConfig,
    SamplingConfig,
)

__all__ = [
    "AuditConfig",
    "BudgetConfig",
    "CompareConfig",
    "CurriculumConfig",
    "DashboardConfig",
    "DataFilterConfig",
    "DataGenerateConfig",
    "DemoConfig",
    "DynamicSamplingConfig",
    "EntropyControlConfig",
    "DemoEvalSettings",
    "EnvConfig",
    "EvalConfig",
    "EvalModelConfig",
    "EvalSettings",
    "ExportConfig",
    "HealthConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimizerConfig",
    "RenamedField",
    "SFTConfig",
    "SFTSettings",
    "SamplingConfig",
    "Section",
    "ServeConfig",
    "TrainConfig",
    "TrainSettings",
    "deep_merge",
    "describe_fields",
    "describe_validation_error",
    "endpoint",
    "load_config",
    "load_endpoints",
    "parse_override",
    "read_config",
    "resume_config",
    "served_model",
    "to_toml",
    "validated",
]
