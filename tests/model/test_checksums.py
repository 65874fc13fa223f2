"""Checksums of local model files: computed as the store that pinned them did, and remembered
across processes only while the file is provably the same one."""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys

import pytest

from model import caches, checksums

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setattr(caches, "_chosen", {"checksums": str(tmp_path / "checksums")})
  monkeypatch.setattr(checksums, "_LOCAL_CHECKSUMS", {})
  return tmp_path / "checksums"


def forget_in_memory(monkeypatch):
  monkeypatch.setattr(checksums, "_LOCAL_CHECKSUMS", {})


def refuse_hashing(monkeypatch):
  def hashed(*args):
    raise AssertionError("hashed the file again")
  monkeypatch.setattr(checksums, "_compute_checksum", hashed)


@pytest.mark.parametrize("kind", ["sha256", "md5Hash", "git-blob", "ETag"])
def test_each_kind_is_what_its_store_computes(tmp_path, cache, kind):
  path, data = tmp_path / "w.bin", os.urandom(3 << 20)
  path.write_bytes(data)
  expected = {"sha256": "sha256:" + hashlib.sha256(data).hexdigest(),
              "md5Hash": "md5Hash:" + base64.b64encode(hashlib.md5(data).digest()).decode(),
              "git-blob": "git-blob:" + hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest(),
              "ETag": f'ETag:"{hashlib.md5(data).hexdigest()}"'}[kind]
  assert checksums.local(str(path), expected) == expected
  assert checksums.local(str(path), 'ETag:"abc-3"') is None  # multipart: not from the bytes


def test_an_unchanged_file_is_hashed_once_across_processes(tmp_path, cache, monkeypatch):
  monkeypatch.setattr(checksums, "RACY_SECONDS", 0.0)
  path = tmp_path / "model.safetensors"
  path.write_bytes(b"weights" * 1000)
  first = checksums.local(str(path), "sha256:")
  # Another process finds it on disk; this one, with its memory cleared, too, without hashing.
  env = dict(os.environ, KOEDU_CHECKSUM_CACHE=str(cache), PYTHONPATH=REPO)
  code = ("import sys; from model import checksums as c; c._compute_checksum = None; "
          "print(c.local(sys.argv[1], 'sha256:'))")
  other = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
  forget_in_memory(monkeypatch)
  refuse_hashing(monkeypatch)
  assert checksums.local(str(path), "sha256:") == first == other


def test_a_rewritten_file_is_hashed_again_even_with_its_old_size_and_mtime(tmp_path, cache, monkeypatch):
  monkeypatch.setattr(checksums, "RACY_SECONDS", 0.0)
  path = tmp_path / "model.safetensors"
  path.write_bytes(b"a" * 4096)
  before = os.stat(path)
  first = checksums.local(str(path), "sha256:")
  with open(path, "r+b") as f:  # in place: same inode, same size
    f.write(b"b" * 4096)
  os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `cp -p` or rsync -t leave it
  after = os.stat(path)
  assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
  forget_in_memory(monkeypatch)
  assert checksums.local(str(path), "sha256:") == "sha256:" + hashlib.sha256(b"b" * 4096).hexdigest() != first


def test_a_file_changed_moments_ago_is_not_remembered(tmp_path, cache, monkeypatch):
  path = tmp_path / "model.safetensors"
  path.write_bytes(b"fresh")
  assert checksums.local(str(path), "sha256:") == "sha256:" + hashlib.sha256(b"fresh").hexdigest()
  assert not cache.exists() and checksums._LOCAL_CHECKSUMS == {}


def test_an_unwritable_cache_only_means_hashing_again(tmp_path, monkeypatch):
  blocker = tmp_path / "not-a-directory"
  blocker.write_text("")
  monkeypatch.setattr(caches, "_chosen", {"checksums": str(blocker / "checksums")})
  monkeypatch.setattr(checksums, "_LOCAL_CHECKSUMS", {})
  monkeypatch.setattr(checksums, "RACY_SECONDS", 0.0)
  path = tmp_path / "model.safetensors"
  path.write_bytes(b"x")
  assert checksums.local(str(path), "sha256:") == "sha256:" + hashlib.sha256(b"x").hexdigest()


def test_cache_directories_follow_the_option_then_the_variable(monkeypatch, tmp_path):
  monkeypatch.setattr(caches, "_chosen", {})
  monkeypatch.setenv("KOEDU_KERNEL_CACHE", str(tmp_path / "env"))
  monkeypatch.delenv("KOEDU_TOKENIZER_CACHE", raising=False)
  assert caches.directory("kernels") == str(tmp_path / "env")
  assert caches.directory("tokenizers") == os.path.join(os.path.expanduser("~"), ".cache", "koedu", "tokenizers")
  caches.use(kernels=str(tmp_path / "flag"), tokenizers=None)
  assert caches.directory("kernels") == str(tmp_path / "flag")
  assert caches.directory("tokenizers").endswith(os.path.join("koedu", "tokenizers"))
  with pytest.raises(ValueError, match="unknown cache"):
    caches.use(kernel=str(tmp_path))
