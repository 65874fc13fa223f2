"""Where a model comes from: a local directory, an fsspec URL (gs://...) or a Hugging Face hub id.

The launching process calls `describe()` (config.json and checksums only, no weights) so that a
wrong or unreachable `--model` fails before anything is built, and pins what every worker then
`fetch()`es: the hub revision, the checksums.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid

import fsspec

from model import checkpoint
from model.config import ModelConfig

DEFAULT_MODEL = "devngho/ko_edu_classifier_v2_nlpai-lab_KoE5"
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "koedu", "models")


class ModelUnavailable(RuntimeError):
  pass


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  name: str  # as the user gave it
  revision: str | None  # hub commit every worker loads; None for paths
  weights: tuple[tuple[str, str], ...]  # (file, checksum) of every weight file
  config: dict  # the checkpoint's config.json

  @property
  def digest(self) -> str:
    """One sha256 over the weight files' checksums: equal digests, equal weights."""
    return "sha256:" + hashlib.sha256(json.dumps(self.weights).encode()).hexdigest()


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
    files = {s.rfilename: s for s in info.siblings}
    chosen = _choose_files(list(files), allow_pickle)
    weights = tuple((n, "sha256:" + files[n].lfs.sha256 if files[n].lfs else str(files[n].blob_id))
                    for n in chosen if n not in (checkpoint.CONFIG,) and n not in checkpoint.TOKENIZER_FILES)
    with open(cfg_path, encoding="utf-8") as f:
      return ModelInfo(model, info.sha, weights, json.load(f))
  fs, root = fsspec.core.url_to_fs(os.path.expanduser(model))
  if not fs.isdir(root):
    raise FileNotFoundError(f"--model {model}: no such directory")
  names = [os.path.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)]
  chosen = _choose_files(names, allow_pickle)
  config = json.loads(fs.cat_file(f"{root}/{checkpoint.CONFIG}"))
  ModelConfig.from_hf_dict(config)  # a broken config fails here, not on a worker
  weights = tuple((n, _checksum(fs, f"{root}/{n}")) for n in chosen
                  if n != checkpoint.CONFIG and n not in checkpoint.TOKENIZER_FILES)
  return ModelInfo(model, None, weights, config)


def _checksum(fs, path: str) -> str:
  info = fs.info(path)
  for key in ("md5Hash", "crc32c", "ETag", "etag"):  # what object stores already computed
    if info.get(key):
      return f"{key}:{info[key]}"
  h = hashlib.sha256()
  with fs.open(path, "rb") as f:
    while block := f.read(1 << 24):
      h.update(block)
  return "sha256:" + h.hexdigest()


def fetch(model: str, revision: str | None = None, cache_dir: str | None = None,
          allow_pickle: bool = False) -> str:
  """A local directory holding the model (downloaded once per machine for remote models)."""
  k = kind(model)
  if k == "local":
    return os.path.expanduser(model)
  if k == "hub":
    from huggingface_hub import HfApi, snapshot_download
    try:
      # model_info, not list_repo_files: the latter retries for ~25 s before failing offline.
      names = [s.rfilename for s in HfApi().model_info(model, revision=revision).siblings]
      return snapshot_download(model, revision=revision, allow_patterns=_choose_files(names, allow_pickle))
    except (FileNotFoundError, checkpoint.PickleRefused):
      raise
    except Exception as err:
      raise _unavailable(model, err) from err
  target = os.path.join(cache_dir or DEFAULT_CACHE, hashlib.sha256(model.encode()).hexdigest()[:20])
  if os.path.exists(os.path.join(target, ".complete")):
    return target
  fs, root = fsspec.core.url_to_fs(model)
  names = [os.path.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)]
  # Download beside the target and rename: several processes on one worker may race here.
  partial = f"{target}.partial-{uuid.uuid4().hex}"
  os.makedirs(partial)
  for name in _choose_files(names, allow_pickle):
    fs.get(f"{root}/{name}", os.path.join(partial, name))
  open(os.path.join(partial, ".complete"), "w").close()
  try:
    os.rename(partial, target)
  except OSError:  # another process finished first, or a crashed one left a partial target
    shutil.rmtree(partial, ignore_errors=True)
    if not os.path.exists(os.path.join(target, ".complete")):
      raise RuntimeError(f"{target} exists but is incomplete; remove it and rerun")
  return target
