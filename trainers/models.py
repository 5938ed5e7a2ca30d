"""Where models come from: hub ids, local folders, and models shipped inside Python packages."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

PACKAGE_PREFIX = "pkg:"


def resolve_model_ref(ref: str, base_dir: Path | None = None) -> str:
    """A hub id stays as it is; `pkg:package/sub/dir` and relative folders become absolute paths.

    `pkg:` lets a sweep file name a model that a pip package carries (the offline demo's encoder)
    without hard-coding a site-packages path.
    """
    if ref.startswith(PACKAGE_PREFIX):
        package, _, sub = ref[len(PACKAGE_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"model {ref!r}: Python package {package!r} is not installed (pip install it)")
        path = Path(list(spec.submodule_search_locations)[0]) / sub
        if not path.exists():
            raise ValueError(f"model {ref!r}: {path} does not exist inside package {package!r}")
        return str(path)
    local = Path(ref).expanduser()
    if not local.is_absolute() and base_dir is not None and (base_dir / local).exists():
        local = base_dir / local
    if local.exists():
        return str(local.resolve())
    if ref.startswith((".", "/", "~")):
        raise ValueError(f"model {ref!r}: no such folder")
    return ref  # a hub id


def model_fingerprint(resolved: str) -> str:
    """Content hash of a local model's config and weights; the id itself for a hub model."""
    path = Path(resolved)
    if not path.is_dir():
        return hashlib.sha256(resolved.encode()).hexdigest()
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.suffix in {".safetensors", ".bin"} or file.name in {"config.json", "vocab.txt", "tokenizer.json"}:
            digest.update(file.name.encode())
            with file.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def unloaded(cls: type, config):
    """`cls(config)` without initialising its weights (transformers' `no_init_weights`): for a model whose
    every weight is loaded next, strictly; the random initialisation would be thrown away (0.3 s for MiniLM-L6)."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return cls(config)
