"""Where a koedu process keeps what it can fetch or compute again, one directory per kind.

Each kind is an option of the entry points that fill it (--model_cache_dir,
--checksum_cache_dir, --tokenizer_cache_dir, --kernel_cache_dir: options/catalog.py), applied
with `use()` by the process that reads it (a worker, the launcher, train.run). Unset, the
environment variable it had before it was an option is read, so images and scripts that set
one keep working (the CPU image ships the built kernel in $KOEDU_KERNEL_CACHE), then
~/.cache/koedu/<kind>. Read at each use, not at import: a worker applies its options after
koedu is imported. (JAX's compilation cache is JAX's: model/text_scorer.py sets it.)
"""
from __future__ import annotations

import os

# kind -> the environment variable read when no option chose a directory
ENV = {"models": None, "checksums": "KOEDU_CHECKSUM_CACHE", "tokenizers": "KOEDU_TOKENIZER_CACHE",
       "kernels": "KOEDU_KERNEL_CACHE"}
_chosen: dict[str, str] = {}


def use(**directories: str | None) -> None:
  """use(models=..., checksums=..., tokenizers=..., kernels=...): None keeps the default."""
  for kind, directory in directories.items():
    if kind not in ENV:
      raise ValueError(f"unknown cache {kind!r}; known: {sorted(ENV)}")
    if directory:
      _chosen[kind] = os.path.expanduser(directory)


def directory(kind: str) -> str:
  if kind in _chosen:
    return _chosen[kind]
  env = ENV[kind]
  return (env and os.environ.get(env)) or os.path.join(os.path.expanduser("~"), ".cache", "koedu", kind)
