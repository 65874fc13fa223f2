"""Storage through fsspec (local paths, gs:// through gcsfs, any URL), and what a storage fault is.

A fault of the storage (a timeout, a reset connection, a 5xx, a full disk) is the machine's,
never a record's: it is retried with backoff, then raised as faults.StorageFault, which fails
the bundle (the runner retries it) or the run. Nothing here ever turns one into an errors/ record.
"""
from __future__ import annotations

import hashlib
import io as _io
import logging
import os
import posixpath
import random
import shutil
import time
import uuid
from typing import Callable, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.faults import PERMANENT, StorageFault

log = logging.getLogger(__name__)
T = TypeVar("T")
ATTEMPTS = 6  # a blip, a throttled burst, a node restarting: about a minute of backoff in all
BACKOFF_SECONDS = 0.5

def backoff(attempt: int) -> float:
  """Seconds before retry `attempt` (1, 2, ...): exponential with jitter, so that workers
  throttled together do not come back together."""
  return BACKOFF_SECONDS * (2 ** (attempt - 1)) * (0.5 + random.random())


def retrying(call: Callable[[], T], what: str, attempts: int = ATTEMPTS) -> T:
  """call(), retried on any fault but a permanent one; StorageFault when retries run out."""
  for attempt in range(1, attempts + 1):
    try:
      return call()
    except PERMANENT:
      raise
    except Exception as err:  # timeouts, resets, 5xx, throttling: whatever the storage raises
      if attempt == attempts:
        raise StorageFault(f"{what} failed {attempts} times; last: {type(err).__name__}: {err}") from err
      wait = backoff(attempt)
      log.warning("%s: %s: %s; retrying in %.1fs", what, type(err).__name__, err, wait)
      time.sleep(wait)
  raise AssertionError("unreachable")


def filesystem(path: str):
  # No listings cache: other workers write markers while this process runs, and a stale
  # listing would have it redo their chunks.
  return fsspec.core.url_to_fs(path, use_listings_cache=False) if "://" in path \
      else fsspec.core.url_to_fs(path)


class RetryingFile(_io.RawIOBase):
  """A shard's bytes, read with retries: a failed read reopens the file and goes on from the
  same position. What it raises after that is StorageFault, so that whatever else comes out
  of a decoder reading through it (gzip, zstd, Arrow) is about the shard's bytes."""

  def __init__(self, source: str):
    self.source = source
    self._fs, self._path = filesystem(source)
    self._file = None
    self._position = 0

  def readable(self) -> bool:
    return True

  def seekable(self) -> bool:
    return True

  def _open(self):
    if self._file is None:
      self._file = self._fs.open(self._path, "rb")
      self._file.seek(self._position)
    return self._file

  def _reset(self) -> None:
    try:
      if self._file is not None:
        self._file.close()
    except Exception:  # a broken connection may not close cleanly; it is dropped either way
      pass
    self._file = None

  def _with_retries(self, call, what: str):
    def attempt():
      try:
        return call(self._open())
      except PERMANENT:
        raise
      except Exception:
        self._reset()
        raise
    return retrying(attempt, f"{what} {self.source} at byte {self._position}")

  def readinto(self, buffer) -> int:
    data = self._with_retries(lambda f: f.read(len(buffer)), "reading")
    buffer[:len(data)] = data
    self._position += len(data)
    return len(data)

  def seek(self, offset: int, whence: int = 0) -> int:
    if whence == 2:
      offset += retrying(lambda: self._fs.size(self._path), f"sizing {self.source}")
    elif whence == 1:
      offset += self._position
    if self._file is not None:
      self._with_retries(lambda f: f.seek(offset), "seeking")
    self._position = offset
    return offset

  def tell(self) -> int:
    return self._position

  def close(self) -> None:
    self._reset()
    super().close()


def write_bytes_atomic(path: str, data: bytes) -> None:
  """The file appears whole or not at all, written with retries.

  Object stores publish an object only when its upload completes, so there a plain write is
  atomic and a rename (a copy on GCS) would only cost time; local files go through a rename.
  A retry rewrites the whole object, so a failed attempt leaves nothing half-written behind.
  """
  fs, target = filesystem(path)

  def write():
    if isinstance(fs, LocalFileSystem):
      _replace_locally(target, lambda partial: _write_file(partial, data))
    else:
      with fs.open(target, "wb") as f:
        f.write(data)
  retrying(write, f"writing {path}")


def put_file_atomic(local: str, path: str) -> None:
  """A local file copied to `path`, appearing whole or not at all, with retries: for files too
  large to hold in memory (a published dataset's). As write_bytes_atomic, through a rename
  locally; an object store publishes the upload when it completes."""
  fs, target = filesystem(path)

  def put():
    if isinstance(fs, LocalFileSystem):
      _replace_locally(target, lambda partial: shutil.copyfile(local, partial))
    else:
      fs.put_file(local, target)
  retrying(put, f"writing {path}")


def _write_file(path: str, data: bytes) -> None:
  with open(path, "wb") as f:
    f.write(data)


def _replace_locally(target: str, fill) -> None:
  """`fill(partial)` writes a file beside `target`, which then replaces it by a rename: readers
  see the old file or the new one whole, never a part; a failed fill leaves nothing behind."""
  directory, name = os.path.split(target)
  os.makedirs(directory, exist_ok=True)
  partial = os.path.join(directory, f".{name}.partial-{uuid.uuid4().hex}")
  try:
    fill(partial)
    os.replace(partial, target)
  finally:
    if os.path.exists(partial):
      os.unlink(partial)


def remove(path: str) -> None:
  """Deletes the file if it is there (a stale output of an earlier attempt)."""
  fs, target = filesystem(path)

  def rm():
    try:
      fs.rm_file(target)
    except FileNotFoundError:
      pass
  retrying(rm, f"removing {path}")


def read_bytes(path: str) -> bytes:
  fs, target = filesystem(path)
  return retrying(lambda: fs.cat_file(target), f"reading {path}")


def exists(path: str) -> bool:
  """Whether the file is there. Not fsspec's exists(), which answers False to any error: a
  timeout would read as "no _run.json yet", and the run's settings would be overwritten."""
  fs, target = filesystem(path)

  def look():
    try:
      fs.info(target)
      return True
    except FileNotFoundError:
      return False
  return retrying(look, f"looking for {path}")


def list_names(directory: str, suffix: str = "") -> list[str]:
  """Names (not paths) of the files under `directory`, recursively, relative to it: one
  listing (paged by the store), whatever the number of files."""
  fs, root = filesystem(directory)

  def find():
    try:
      return fs.find(root)
    except FileNotFoundError:
      return []
  root = root.rstrip("/")
  names = [p[len(root) + 1:] if p.startswith(root + "/") else posixpath.basename(p)
           for p in retrying(find, f"listing {directory}")]
  return sorted(n for n in names if n.endswith(suffix) and not posixpath.basename(n).startswith("."))


def join(directory: str, *names: str) -> str:
  return posixpath.join(directory.rstrip("/"), *names) if "://" in directory else os.path.join(directory, *names)


def shard_key(source: str) -> str:
  """A file name unique to this shard and stable across runs: outputs are named after it."""
  base = posixpath.basename(source.rstrip("/")) or "shard"
  return f"{base}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"


def match(pattern: str) -> list[tuple[str, int]]:
  """(path or URL, size) of every file a glob (or a plain path) matches, sorted."""
  return [(source, int(info.get("size") or 0)) for source, info in match_info(pattern)]


def match_info(pattern: str) -> list[tuple[str, dict]]:
  """(path or URL, the store's metadata of it) of every file a glob (or a plain path) matches,
  sorted: one listing (or one lookup for a plain path)."""
  fs, _ = filesystem(pattern)
  path = fsspec.core.strip_protocol(pattern)
  if fsspec.core.has_magic(pattern):
    found = retrying(lambda: fs.glob(path, detail=True), f"matching {pattern}")
  else:
    try:
      found = {path: retrying(lambda: fs.info(path), f"looking up {pattern}")}
    except FileNotFoundError:
      found = {}
  return [(local_or_url(fs, p), info) for p, info in sorted(found.items()) if info.get("type") != "directory"]


def local_or_url(fs, path: str) -> str:
  """A path as the user would recognise it: absolute for local files, the full URL otherwise."""
  return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)
