"""Reading shards and writing outputs through fsspec: local paths, gs:// (gcsfs), any URL."""
from __future__ import annotations

import hashlib
import io as _io
import os
import posixpath
import uuid
from typing import Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)
PARQUET_BATCH_ROWS = 1024


class ShardError(Exception):
  """A shard that cannot be read from `row` on (None: not at all)."""

  def __init__(self, reason: str, row: int | None):
    super().__init__(reason)
    self.reason, self.row = reason, row


def expand_globs(patterns: list[str]) -> list[str]:
  """Every shard the patterns match, as paths the user would recognise, sorted and unique."""
  found = []
  for pattern in patterns:
    fs, _ = fsspec.core.url_to_fs(pattern)
    matches = fs.glob(fsspec.core.strip_protocol(pattern)) if fsspec.core.has_magic(pattern) \
        else [fsspec.core.strip_protocol(pattern)]
    for path in matches:
      if fs.isdir(path):
        continue
      found.append(path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path))
  return sorted(set(found))


def shard_key(source: str) -> str:
  """A file name unique to this shard and stable across runs: outputs are one file per shard."""
  base = posixpath.basename(source.rstrip("/")) or "shard"
  return f"{base}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"


def is_supported(source: str) -> bool:
  return source.endswith(JSON_SUFFIXES + PARQUET_SUFFIXES)


def iter_rows(source: str) -> Iterator[tuple[int, bytes | dict]]:
  """(row, item) for every record: raw line bytes for JSON lines, a dict for Parquet.

  Raises ShardError when the shard cannot be opened (row None) or breaks off mid-way (the row
  where reading stopped): a truncated gzip, a corrupt Parquet row group.
  """
  if not is_supported(source):
    raise ShardError(f"unsupported_format: expected one of {', '.join(JSON_SUFFIXES + PARQUET_SUFFIXES)}", None)
  row = 0
  try:
    if source.endswith(PARQUET_SUFFIXES):
      import pyarrow.parquet as pq
      with fsspec.open(source, "rb") as f:
        try:
          parquet = pq.ParquetFile(f)
        except Exception as err:
          raise ShardError(f"unreadable_shard: {type(err).__name__}: {err}", None) from err
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
          for item in batch.to_pylist():
            yield row, item
            row += 1
    else:
      with fsspec.open(source, "rb", compression="infer") as f:
        # zstandard's reader has no readline; a buffer in front gives every codec lines.
        for line in _io.BufferedReader(f) if source.endswith(".zst") else f:
          yield row, line
          row += 1
  except ShardError:
    raise
  except FileNotFoundError as err:
    raise ShardError(f"unreadable_shard: {err}", None) from err
  except Exception as err:  # EOFError from gzip, zstd frame errors, Arrow errors, I/O
    reason = "truncated_shard" if row else "unreadable_shard"
    raise ShardError(f"{reason}: {type(err).__name__}: {err} (after {row} records)",
                     row if row else None) from err


def filesystem(path: str):
  # No listings cache: other workers write markers while this process runs, and a stale
  # listing would have it redo their chunks.
  fs, root = fsspec.core.url_to_fs(path, use_listings_cache=False) if "://" in path \
      else fsspec.core.url_to_fs(path)
  return fs, root


def write_bytes_atomic(path: str, data: bytes) -> None:
  """The file appears whole or not at all.

  Object stores publish an object only when its upload completes, so there a plain write is
  atomic and a rename (a copy on GCS) would only cost time; local files go through a rename.
  """
  fs, target = filesystem(path)
  if isinstance(fs, LocalFileSystem):
    directory, name = os.path.split(target)
    os.makedirs(directory, exist_ok=True)
    partial = os.path.join(directory, f".{name}.partial-{uuid.uuid4().hex}")
    with open(partial, "wb") as f:
      f.write(data)
    os.replace(partial, target)
  else:
    with fs.open(target, "wb") as f:
      f.write(data)


def read_bytes(path: str) -> bytes:
  fs, target = filesystem(path)
  return fs.cat_file(target)


def list_names(directory: str, suffix: str, prefix: str = "") -> list[str]:
  """Names (not paths) in a directory with the prefix and suffix; one listing call on GCS."""
  fs, root = filesystem(directory)
  if not fs.exists(root):
    return []
  paths = fs.glob(posixpath.join(root, f"{glob_escape(prefix)}*{suffix}")) if prefix else fs.ls(root, detail=False)
  return sorted(n for n in (posixpath.basename(p.rstrip("/")) for p in paths)
                if n.startswith(prefix) and n.endswith(suffix))


def glob_escape(name: str) -> str:
  return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def exists(path: str) -> bool:
  fs, target = filesystem(path)
  return fs.exists(target)


def join(directory: str, *names: str) -> str:
  return posixpath.join(directory.rstrip("/"), *names) if "://" in directory else os.path.join(directory, *names)
