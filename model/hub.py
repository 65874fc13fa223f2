"""Where a model comes from: a local directory, an fsspec URL (gs://...) or a Hugging Face hub id.

The launching process calls `describe()` (config.json and checksums only, no weights) so that a
wrong or unreachable `--model` fails before anything is built, and pins what every worker then
`fetch()`es: the hub revision and every file's checksum. Workers keep remote models in a cache
keyed by those checksums and verify every file against them, so a model directory changed in
place is fetched anew, and one changed during a run stops the run instead of mixing two models.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import uuid

import fsspec
import fsspec.implementations.local

from model import caches, checkpoint, checksums
from model.config import ModelConfig

log = logging.getLogger(__name__)
DEFAULT_MODEL = "devngho/ko_edu_classifier_v2_nlpai-lab_KoE5"


class ModelUnavailable(RuntimeError):
  pass


class ModelChanged(RuntimeError):
  """A file no longer has the checksum `describe()` pinned when the run started."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  name: str  # as the user gave it
  revision: str | None  # hub commit every worker loads; None for paths
  weights: tuple[tuple[str, str], ...]  # (file, checksum) of every weight file
  config: dict  # the checkpoint's config.json
  files: tuple[tuple[str, str], ...] = ()  # (file, checksum) of every file a worker fetches

  @property
  def digest(self) -> str:
    """One sha256 over the weight files' checksums: equal digests, equal weights."""
    return "sha256:" + hashlib.sha256(json.dumps(self.weights).encode()).hexdigest()

  @property
  def content_digest(self) -> str:
    """One sha256 over every file's checksum, config and tokenizer included: the cache key."""
    return "sha256:" + hashlib.sha256(json.dumps([self.name, self.files]).encode()).hexdigest()


def kind(model: str) -> str:
  if "://" in model:
    return "url"
  if os.path.exists(model) or model.startswith((".", "/", "~")) or model.count("/") != 1:
    return "local"
  return "hub"


def _unavailable(model: str, err: Exception) -> ModelUnavailable:
  return ModelUnavailable(
      f"cannot fetch model {model!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
      "Without access to the hub, pass --model PATH: a local or gs:// directory holding "
      "config.json, model.safetensors and the tokenizer files.")


def _choose_files(names: list[str], allow_pickle: bool) -> list[str]:
  """Config, tokenizer and exactly one kind of weights (never safetensors and msgpack both)."""
  present = set(names)
  if checkpoint.CONFIG not in present:
    raise FileNotFoundError(f"no {checkpoint.CONFIG} among {sorted(present)[:10]}")
  chosen = [checkpoint.CONFIG] + [n for n in checkpoint.TOKENIZER_FILES if n in present]
  for weights in checkpoint.WEIGHT_FILES:
    if weights in present:
      if weights in (checkpoint.PICKLE, checkpoint.PICKLE_INDEX) and not allow_pickle:
        raise checkpoint.PickleRefused(
            f"the model holds only pickled PyTorch weights ({weights}); unpickling runs code, so "
            "koedu refuses it. Pass --allow_pickle if you trust its source.")
      chosen.append(weights)
      if weights.endswith(".index.json"):
        stem = weights[:-len(".index.json")].rsplit(".", 1)
        chosen += [n for n in names if n.startswith(stem[0] + "-") and n.endswith("." + stem[1])]
      return chosen
  raise FileNotFoundError(f"no weights ({', '.join(checkpoint.WEIGHT_FILES)}) among {sorted(present)[:10]}")


def describe(model: str, allow_pickle: bool = False) -> ModelInfo:
  """Config and weight checksums, without downloading weights. Fails at once when unreachable."""
  k = kind(model)
  if k == "hub":
    from huggingface_hub import HfApi, hf_hub_download
    try:
      info = HfApi().model_info(model, files_metadata=True)
      cfg_path = hf_hub_download(model, checkpoint.CONFIG, revision=info.sha)
    except Exception as err:  # offline, unknown repo, gated: all mean the same to the user
      raise _unavailable(model, err) from err
    siblings = {s.rfilename: s for s in info.siblings}
    chosen = _choose_files(list(siblings), allow_pickle)
    files = tuple((n, "sha256:" + siblings[n].lfs.sha256 if siblings[n].lfs
                   else f"git-blob:{siblings[n].blob_id}") for n in chosen)
    with open(cfg_path, encoding="utf-8") as f:
      return ModelInfo(model, info.sha, _weights(files), json.load(f), files)
  fs, root = _filesystem(os.path.expanduser(model))
  if not fs.isdir(root):
    raise FileNotFoundError(f"--model {model}: no such directory")
  names = [os.path.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)]
  chosen = _choose_files(names, allow_pickle)
  config = json.loads(fs.cat_file(f"{root}/{checkpoint.CONFIG}"))
  ModelConfig.from_hf_dict(config)  # a broken config fails here, not on a worker
  files = tuple((n, _checksum(fs, f"{root}/{n}")) for n in chosen)
  return ModelInfo(model, None, _weights(files), config, files)


def _filesystem(path: str):
  """No listings cache: a checksum read from an earlier listing would pin a model directory as it
  was, not as it is."""
  if "://" not in path:
    return fsspec.core.url_to_fs(path)
  fs, root = fsspec.core.url_to_fs(path, use_listings_cache=False)
  fs.invalidate_cache()
  return fs, root


def _weights(files) -> tuple[tuple[str, str], ...]:
  return tuple((n, c) for n, c in files if n != checkpoint.CONFIG and n not in checkpoint.TOKENIZER_FILES)


def _checksum(fs, path: str) -> str:
  info = fs.info(path)
  for key in ("md5Hash", "crc32c", "ETag", "etag"):  # what object stores already computed
    if info.get(key):
      return f"{key}:{info[key]}"
  if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
    return checksums.local(path, "sha256:")
  with fs.open(path, "rb") as f:
    return "sha256:" + checksums.hash_file(f, hashlib.sha256()).hexdigest()


def verify(directory: str, info: ModelInfo) -> None:
  """Every file of `directory` as `describe()` pinned it; raises ModelChanged otherwise."""
  for name, pinned in info.files:
    got = checksums.local(os.path.join(directory, name), pinned)
    if got is None:
      log.warning("%s: cannot verify a %s checksum locally", name, pinned.split(":", 1)[0])
    elif got != pinned:
      raise ModelChanged(
          f"model {info.name!r}: {name} has changed since the run started (checksum {got}, "
          f"pinned {pinned}). A model directory must not change during a run; rerun to score "
          "with the new one (the output directory refuses a different model).")


def fetch(info: ModelInfo, cache_dir: str | None = None) -> str:
  """A local directory holding the model `describe()` pinned, each file verified against it
  (downloaded once per machine for remote models)."""
  model = info.name
  k = kind(model)
  if k == "local":
    directory = os.path.expanduser(model)
  elif k == "hub":
    from huggingface_hub import snapshot_download
    try:
      directory = snapshot_download(model, revision=info.revision, allow_patterns=[n for n, _ in info.files])
    except Exception as err:
      raise _unavailable(model, err) from err
  else:
    return _fetch_url(info, cache_dir)
  verify(directory, info)
  return directory


def _fetch_url(info: ModelInfo, cache_dir: str | None) -> str:
  # Keyed by content, not by URL: a directory changed in place is another model.
  key = hashlib.sha256(info.content_digest.encode()).hexdigest()[:20]
  target = os.path.join(cache_dir or caches.directory("models"), key)
  if os.path.exists(os.path.join(target, ".complete")):
    verify(target, info)
    return target
  fs, root = _filesystem(info.name)
  # Download beside the target and rename: several processes on one worker may race here.
  partial = f"{target}.partial-{uuid.uuid4().hex}"
  os.makedirs(partial)
  try:
    for name, _ in info.files:
      fs.get(f"{root}/{name}", os.path.join(partial, name))
    verify(partial, info)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  open(os.path.join(partial, ".complete"), "w").close()
  try:
    os.rename(partial, target)
  except OSError:  # another process finished first, or a crashed one left a partial target
    shutil.rmtree(partial, ignore_errors=True)
    if not os.path.exists(os.path.join(target, ".complete")):
      raise RuntimeError(f"{target} exists but is incomplete; remove it and rerun")
  return target
