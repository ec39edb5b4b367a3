"""A Hugging Face model folder converted once to CTranslate2 (float32), cached by the folder's content.

    python -m shared.engine.local.serving.conversion MODEL_DIR OUT_DIR [TOKENIZER_DIR]

The deployment server runs this module in a child process: converting loads the model with torch, and the serving
process's peak memory then holds the CTranslate2 weights only once. Weights under IN_PROCESS_MAX_BYTES (the tiny test
model) are converted in the caller instead: a new interpreter costs seconds, and the copy is small. The cache key is
the folder's path and its files' sizes and modification times; a conversion is written beside its final place and
renamed into it, so a cache entry is whole or absent. An entry is touched when used, and only the KEEP_CONVERTED
most recently used are kept (a SmolLM2 entry is about 540 MB; one pruned is converted again when next needed).

CTranslate2 4.8.5's converter reads transformers 4's configuration: with transformers 5, the rotary settings moved to
`rope_parameters` and Phi-3's attention no longer holds a `rotary_emb`. `_Converter` restores what the converter reads,
for the default (unscaled) rotary embedding only; other rotary types are refused and the model is served with
transformers instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

MODULE = "shared.engine.local.serving.conversion"
CONVERT_TIMEOUT_S = 600
KEEP_CONVERTED = 4
IN_PROCESS_MAX_BYTES = 64 * 1024 * 1024


def cache_key(model_dir: Path, tokenizer_dir: Path | None = None) -> str:
    digest = hashlib.sha256()
    for folder in (model_dir, tokenizer_dir):
        if folder is None:
            continue
        digest.update(str(folder.resolve()).encode())
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def converted(
    model_dir: Path,
    cache_dir: Path,
    *,
    tokenizer_dir: Path | None = None,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> Path:
    """The CTranslate2 folder for `model_dir` (its tokenizer in `tokenizer_dir` when not beside the weights, as in a
    registered model), converted unless cached; RuntimeError (with the converter's last lines) when it cannot be."""
    target = cache_dir / cache_key(model_dir, tokenizer_dir)
    if (target / "model.bin").exists():
        _used(target)
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f".{target.name}.{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    if sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) <= IN_PROCESS_MAX_BYTES:
        try:
            convert(model_dir, partial, tokenizer_dir)
        except Exception as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(f"CTranslate2 could not convert {model_dir}: {type(exc).__name__}: {exc}") from None
    else:
        done = subprocess.run(
            [python, "-m", MODULE, str(model_dir), str(partial), *([str(tokenizer_dir)] if tokenizer_dir else [])],
            capture_output=True,
            text=True,
            timeout=CONVERT_TIMEOUT_S,
            env=env,
        )
        if done.returncode != 0 or not (partial / "model.bin").exists():
            shutil.rmtree(partial, ignore_errors=True)
            last = [line for line in (done.stderr or "").splitlines() if line.strip()][-3:]
            raise RuntimeError(f"CTranslate2 could not convert {model_dir}: {' | '.join(last) or 'no output'}")
    try:
        os.rename(partial, target)
    except OSError:  # another deployment of the same model converted it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    _used(target)
    return target


def _used(target: Path) -> None:
    """Mark `target` as just used, and drop all but the most recently used entries beside it."""
    os.utime(target)
    entries = [p for p in target.parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
    entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in entries[KEEP_CONVERTED:]:
        if stale != target:
            shutil.rmtree(stale, ignore_errors=True)


def convert(model_dir: Path, out_dir: Path, tokenizer_dir: Path | None = None) -> None:
    from ctranslate2.converters import TransformersConverter

    class _Converter(TransformersConverter):
        def load_model(self, model_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            model = super().load_model(model_class, model_name_or_path, **kwargs)
            _as_the_converter_reads_it(model)
            return model

        def load_tokenizer(self, tokenizer_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            return super().load_tokenizer(tokenizer_class, str(tokenizer_dir or model_name_or_path), **kwargs)

    _Converter(str(model_dir), low_cpu_mem_usage=True).convert(str(out_dir), quantization=None)


class NotConvertible(ValueError):
    """A model this module does not convert (the deployment then serves it with transformers)."""


def _as_the_converter_reads_it(model: Any) -> None:
    config = model.config
    rope = getattr(config, "rope_parameters", None)
    if not isinstance(rope, dict):
        return
    if rope.get("rope_type", "default") != "default" or rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise NotConvertible(f"rotary embedding {rope} is not converted here")
    theta = rope.get("rope_theta")
    config.rope_scaling = None
    if theta is not None:
        config.rope_theta = theta
    for layer in getattr(getattr(model, "model", None), "layers", []):
        attention = getattr(layer, "self_attn", None)
        if attention is not None and not hasattr(attention, "rotary_emb"):
            attention.rotary_emb = types.SimpleNamespace(long_factor=None, short_factor=None)


def main(argv: list[str] | None = None) -> int:
    paths = [Path(arg) for arg in (argv if argv is not None else sys.argv[1:])]
    convert(paths[0], paths[1], paths[2] if len(paths) > 2 else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
