"""The served models: one base model and any number of LoRA adapters on it, under their own names.

Every adapter is loaded onto the same ``PeftModel`` (one copy of the base weights in memory) under an
internal peft name (``adapter1``, ``adapter2``...): served names may hold characters peft refuses in module
names, and a name that is unloaded and loaded again must not find the old weights. The base model is served
with adapters off; when ``--model`` is itself an adapter or a train run, the base name routes to that adapter.

Nothing here is thread-safe on its own: the engine holds one lock around generation, loading and unloading.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rewardlab.errors import RewardlabError
from rewardlab.models.adapters import check_base, find_adapter
from rewardlab.models.loading import resolve
from rewardlab.serve.errors import AdapterError, AdapterPathForbidden, UnknownModelError

logger = logging.getLogger("rewardlab.serve")


def parse_adapter_specs(specs: list[str], base_name: str | None = None) -> dict[str, str]:
    """``["name=path", ...]`` → ``{name: path}``; a malformed or repeated name is a one-line error."""
    adapters: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise RewardlabError(f"--adapter expects name=path, got '{spec}'")
        if name == base_name:
            raise RewardlabError(f"--adapter name '{name}' is already the base model's name")
        if name in adapters:
            raise RewardlabError(f"--adapter name '{name}' is used twice")
        adapters[name] = path
    return adapters


def adapter_dir(path: str) -> str:
    """The PEFT adapter directory that ``path`` (an adapter directory or a train run) holds."""
    if not Path(path).exists():
        raise AdapterError(f"adapter path does not exist: {path}")
    found = find_adapter(path)
    if found is not None:
        return str(found.resolve())  # its base is checked against the served model, not loaded
    try:
        resolve(path)
    except RewardlabError as error:
        raise AdapterError(str(error)) from None
    raise AdapterError(f"{path} is a full model, not a LoRA adapter (serve it with --model)")


def confined_adapter_path(path: str, allowed: list[str]) -> str:
    """``path`` (relative: to the working directory) resolved, if it lies inside one of the ``allowed``
    directories and so does every file of the adapter it holds, else :class:`AdapterPathForbidden`.

    Resolving follows symlinks and folds ``..``, so neither leads out; a symlinked file inside the adapter
    (its weights, say) counts where it points. Nothing is said about paths outside, not even whether they
    exist.
    """
    roots = [Path(directory).resolve() for directory in allowed]

    def inside(candidate: Path) -> bool:
        return any(candidate == root or root in candidate.parents for root in roots)

    refused = AdapterPathForbidden(
        f"lora_path must lie inside the adapter directories ({', '.join(map(str, roots))}); '{path}' does not"
    )
    try:
        resolved = Path(path).resolve()
        if not inside(resolved):
            raise refused
        found = find_adapter(resolved)
        if found is not None:
            for entry in [found, *found.iterdir()]:
                if not inside(entry.resolve()):
                    raise AdapterPathForbidden(
                        f"lora_path '{path}': {entry.name} leads outside the adapter directories"
                    )
    except (OSError, RuntimeError):  # a symlink loop, a directory that cannot be read
        raise refused from None
    return str(resolved)


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def base_of(model) -> str:
    """Where the served base weights came from (the directory or Hub id ``from_pretrained`` was given)."""
    return (model.get_base_model() if _is_peft(model) else model).name_or_path


def _summary(error: Exception) -> str:
    """The first two lines of an error in one: torch puts the heading first and the mismatch second."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(lines[:2])[:400] or type(error).__name__


def _strip_lora_layers(model) -> None:
    """Put back the original layers where a failed first load already injected LoRA layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    # peft marks the model as wrapped; left behind, the next load would stack onto a ghost config.
    if hasattr(model, "peft_config"):
        del model.peft_config


class ServedModels:
    """Served name → peft adapter name (``None``: the base with adapters off), and the model they share."""

    def __init__(self, model, tokenizer, base_name: str):
        self.model = model
        # The transformers model under any peft wrapper: adapters load into its layers in place, so it stays
        # the same object whatever is loaded or unloaded, and its forward can be picked once.
        self.transformers_model = model.get_base_model() if _is_peft(model) else model
        self.tokenizer = tokenizer
        self.base_name = base_name
        # load_model names a loaded adapter "default": when --model is a run, the base name serves it.
        self.routes: dict[str, str | None] = {base_name: model.active_adapter if _is_peft(model) else None}
        self.paths: dict[str, str] = {}
        self.warnings: list[str] = []  # adapters whose base could not be checked, said once each
        self._loaded = 0

    @property
    def names(self) -> list[str]:
        return list(self.routes)

    @property
    def context_length(self) -> int | None:
        """Prompt plus completion tokens the model can attend over (``max_position_embeddings``)."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def adapter_of(self, name: str) -> str | None:
        if name not in self.routes:
            raise UnknownModelError(f"The model '{name}' does not exist (served: {', '.join(self.routes)})")
        return self.routes[name]

    def load(self, name: str, path: str) -> None:
        if name in self.routes:
            raise AdapterError(f"the adapter '{name}' is already loaded")
        directory = adapter_dir(path)
        # Same-shaped weights load onto any base without complaint, and then answer nonsense.
        try:
            warning = check_base(directory, base_of(self.model), self.base_name)
        except RewardlabError as error:
            raise AdapterError(str(error)) from None
        if warning:
            logger.warning(warning)
            self.warnings.append(warning)
        from peft import PeftModel

        self._loaded += 1
        internal = f"adapter{self._loaded}"
        try:
            if _is_peft(self.model):
                self.model.load_adapter(directory, adapter_name=internal)
            else:
                self.model = PeftModel.from_pretrained(self.model, directory, adapter_name=internal)
        except Exception as error:
            # A half-loaded adapter (weights that do not fit this base) must not stay in the model.
            if _is_peft(self.model):
                if internal in self.model.peft_config:
                    self.model.delete_adapter(internal)
            else:
                _strip_lora_layers(self.model)
            raise AdapterError(f"cannot load adapter '{name}' from {path}: {_summary(error)}") from None
        self.model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.routes[name] = internal
        self.paths[name] = directory

    def unload(self, name: str) -> None:
        if name == self.base_name:
            raise AdapterError(f"the base model '{name}' cannot be unloaded")
        if name not in self.routes:
            raise UnknownModelError(f"The adapter '{name}' is not loaded")
        internal = self.routes.pop(name)
        self.paths.pop(name, None)
        if len(self.model.peft_config) == 1:
            # peft cannot run with no adapter at all: give the plain base model back instead.
            self.model = self.model.unload()
        else:
            self.model.delete_adapter(internal)
