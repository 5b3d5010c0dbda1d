"""What every config section shares: unknown fields refused, renamed fields still accepted for a while, and
a section given in part keeping the defaults its parent chose for the rest.

The last one matters wherever a command sets a section's defaults differently from the section's own (SFT
turns LoRA off, the demo trains for 150 steps): ``--set lora.rank=8`` on ``sft`` changes the rank and leaves
LoRA off, rather than rebuilding the whole section from the section's defaults.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator


class RenamedField(FutureWarning):
    """A config field given under its old name. The old name works until the next release."""


def deep_merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied, nested dictionaries merged key by key."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def put(data: dict, path: list[str], value: Any) -> None:
    """Set ``data[a][b]...`` for the dotted ``path``, making (copies of) the tables on the way."""
    node = data
    for part in path[:-1]:
        child = node.get(part, {})
        if isinstance(child, BaseModel):
            child = child.model_dump(exclude_unset=True)
        if not isinstance(child, dict):
            raise ValueError(f"config field '{'.'.join(path)}': '{part}' is not a section")
        node[part] = child = dict(child)
        node = child
    node[path[-1]] = value


def has(data: dict, path: list[str]) -> bool:
    node: Any = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


class Section(BaseModel):
    """A table of a config file. Subclasses may declare:

    * ``renamed``: ``{old name: new dotted name, or several}``; a config that uses an old name works, with a
      :class:`RenamedField` warning that names the new one.
    * ``not_here``: ``{field: why}`` for fields that belong to another command's version of this section;
      giving one is still an unknown field, with the reason next to it.
    * ``default_follows``: ``{field: other}``: the parent's default for ``field`` only holds while ``other``
      keeps the parent's default too (an environment's arguments belong to that environment).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    renamed: ClassVar[dict[str, str | tuple[str, ...]]] = {}
    not_here: ClassVar[dict[str, str]] = {}
    default_follows: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _old_names_and_section_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return with_section_defaults(cls, upgrade(cls, data))


def upgrade(cls: type[Section], data: dict) -> dict:
    """``data`` with the old names ``cls`` still accepts moved to their new places, each with a warning."""
    old_names = [old for old in cls.renamed if old in data]
    if not old_names:
        return data
    data = dict(data)
    for old in old_names:
        value = data.pop(old)
        targets = cls.renamed[old]
        targets = (targets,) if isinstance(targets, str) else targets
        for target in targets:
            if has(data, target.split(".")):
                raise ValueError(f"'{old}' is the old name of '{target}': give only '{target}'")
            put(data, target.split("."), value)
        warnings.warn(
            f"config field '{old}' is now {' and '.join(repr(t) for t in targets)}; the old name works until "
            "the next release",
            RenamedField,
            stacklevel=2,
        )
    return data


def with_section_defaults(cls: type[Section], data: dict) -> dict:
    """``data`` with every section it gives in part completed from the parent's default for that section."""
    for name, field in cls.model_fields.items():
        given = data.get(name)
        if not isinstance(given, dict) or field.default_factory is None:
            continue
        default = field.default_factory()  # type: ignore[call-arg]
        if not isinstance(default, Section):
            continue
        preset = default.model_dump(exclude_unset=True)
        given = upgrade(type(default), given)
        for dependent, owner in type(default).default_follows.items():
            if owner in given and given[owner] != preset.get(owner):
                preset.pop(dependent, None)
        data = {**data, name: deep_merge(preset, given)}
    return data


def preset(section: type[Section], **values: Any):
    """A default factory: ``section`` with ``values`` set, validated like a config file's table, so the
    section's own defaults for its sub-sections still apply around them."""
    return lambda: section.model_validate(values)
