"""Checksums of local model files, computed as the object store or hub that pinned them did
(sha256, GCS md5 and crc32c, the hub's git blob id, S3's single-part ETag), and remembered.

Remembered in memory (the launcher and a DirectRunner worker are one process) and on disk (a
scheduled rerun on the same model would hash gigabytes again: 0.8 s for a base model, 1.6 s for
a large one, on the launch's critical path), in --checksum_cache_dir (model/caches.py). Keyed as git keys its index: path, size, mtime,
ctime, inode and device; any write changes mtime and ctime, and ctime cannot be set back. A file
changed within the last RACY_SECONDS could change again within one tick of the file system's
clock unseen, so it is not remembered.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
import uuid

from model import caches

log = logging.getLogger(__name__)
RACY_SECONDS = 2.0
_LOCAL_CHECKSUMS: dict[tuple, str] = {}


def hash_file(f, h):
  while block := f.read(1 << 24):
    h.update(block)
  return h


def local(path: str, pinned: str) -> str | None:
  """The checksum of a local file in the kind `pinned` is, or None for a kind that cannot be
  computed from the bytes (an S3 multipart ETag)."""
  kind, _, value = pinned.partition(":")
  stat = os.stat(path)
  memo = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino,
          stat.st_dev, kind)
  if memo not in _LOCAL_CHECKSUMS:
    remembered = _remembered(memo)
    if remembered is not None:
      _LOCAL_CHECKSUMS[memo] = remembered
      return remembered
    computed = _compute_checksum(path, kind, value)
    if computed is None:
      return None
    if time.time() - max(stat.st_mtime_ns, stat.st_ctime_ns) / 1e9 < RACY_SECONDS:
      return computed
    _LOCAL_CHECKSUMS[memo] = computed
    _remember(memo, computed)
  return _LOCAL_CHECKSUMS[memo]


def _memo_path(memo: tuple) -> str:
  return os.path.join(caches.directory("checksums"), hashlib.sha256(json.dumps(memo).encode()).hexdigest()[:40])


def _remembered(memo: tuple) -> str | None:
  try:
    with open(_memo_path(memo), encoding="utf-8") as f:
      entry = json.load(f)
  except (OSError, ValueError):
    return None
  return entry["checksum"] if entry.get("memo") == list(memo) else None


def _remember(memo: tuple, checksum: str) -> None:
  """Best effort: a read-only home only means hashing again next time."""
  path = _memo_path(memo)
  try:
    os.makedirs(caches.directory("checksums"), exist_ok=True)
    with open(f"{path}.{uuid.uuid4().hex}", "w", encoding="utf-8") as f:
      json.dump({"memo": list(memo), "checksum": checksum}, f)
    os.replace(f.name, path)
  except OSError as err:
    log.debug("cannot remember the checksum of %s: %s", memo[0], err)


def _compute_checksum(path: str, kind: str, value: str) -> str | None:
  with open(path, "rb") as f:
    if kind == "sha256":
      return "sha256:" + hash_file(f, hashlib.sha256()).hexdigest()
    if kind == "md5Hash":  # GCS: base64 of the md5 digest
      return "md5Hash:" + base64.b64encode(hash_file(f, hashlib.md5()).digest()).decode()
    if kind == "crc32c":  # GCS: base64 of the big-endian crc32c
      import google_crc32c
      crc = google_crc32c.Checksum()
      while block := f.read(1 << 24):
        crc.update(block)
      return "crc32c:" + base64.b64encode(crc.digest()).decode()
    if kind == "git-blob":  # the hub's id of a file kept in git: sha1 of "blob <size>\0" + bytes
      h = hashlib.sha1(f"blob {os.fstat(f.fileno()).st_size}\0".encode())
      return "git-blob:" + hash_file(f, h).hexdigest()
    if kind.lower() == "etag" and "-" not in value:  # S3 single-part: the md5 in hex, quoted
      quote = '"' if value.startswith('"') else ""
      return f"{kind}:{quote}{hash_file(f, hashlib.md5()).hexdigest()}{quote}"
  return None
