"""Where models come from: local directories, fsspec URLs, and a hub that cannot be reached."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import fsspec
import numpy as np
import pytest

from model import checkpoint, hub
from model.checkpoint import load_classifier
from tests.model.reference import file_digest, hf_forward

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def memory_copy(checkpoint_dir):
  """The tiny checkpoint copied into fsspec's in-memory filesystem: memory://<unique>/ckpt."""
  fs = fsspec.filesystem("memory")
  root = f"/{uuid.uuid4().hex}"
  for name in os.listdir(checkpoint_dir):
    with open(os.path.join(checkpoint_dir, name), "rb") as f:
      fs.pipe_file(f"{root}/ckpt/{name}", f.read())
  yield f"memory://{root}/ckpt"
  if fs.exists(root):
    fs.rm(root, recursive=True)


def _scores(model_dir: str) -> np.ndarray:
  _, model = load_classifier(model_dir)
  ids = np.array([[0, 17, 43, 99, 2, 1, 1], [0, 5, 250, 31, 77, 12, 2]])
  return np.asarray(hf_forward(model, ids, ids != 1))[:, 0]


def test_kind():
  assert hub.kind("gs://bucket/models/koedu") == "url"
  assert hub.kind("memory://x/y") == "url"
  assert hub.kind(hub.DEFAULT_MODEL) == "hub"
  assert hub.kind("./ckpt") == hub.kind("/abs/ckpt") == hub.kind("~/ckpt") == "local"
  assert hub.kind("a/b/c") == "local"


def test_describe_and_fetch_a_local_directory(checkpoint_dir):
  info = hub.describe(checkpoint_dir)
  assert info.revision is None and info.name == checkpoint_dir
  assert info.config["hidden_size"] == 36 and info.config["num_hidden_layers"] == 3
  digest = file_digest(os.path.join(checkpoint_dir, checkpoint.SAFETENSORS))
  assert info.weights == ((checkpoint.SAFETENSORS, "sha256:" + digest),)
  assert info.digest.startswith("sha256:") and info.digest == hub.describe(checkpoint_dir).digest
  assert hub.fetch(info) == checkpoint_dir


def test_fetch_from_an_fsspec_url(checkpoint_dir, memory_copy, tmp_path):
  # Same bytes, same checksums, whichever filesystem holds them.
  assert hub.describe(memory_copy).digest == hub.describe(checkpoint_dir).digest
  cache = str(tmp_path / "cache")
  local = hub.fetch(hub.describe(memory_copy), cache_dir=cache)
  assert os.path.dirname(local) == cache
  for name in os.listdir(checkpoint_dir):
    with open(os.path.join(checkpoint_dir, name), "rb") as a, open(os.path.join(local, name), "rb") as b:
      assert a.read() == b.read(), name
  np.testing.assert_array_equal(_scores(local), _scores(checkpoint_dir))
  # Downloaded once: a second fetch finds the complete copy, even with the source gone.
  info = hub.describe(memory_copy)
  fsspec.filesystem("memory").rm(memory_copy[len("memory://"):], recursive=True)
  assert hub.fetch(info, cache_dir=cache) == local


def test_fetch_takes_one_kind_of_weights(checkpoint_dir, tmp_path):
  # Safetensors and a stray pickle side by side: only the safetensors travel.
  fs = fsspec.filesystem("memory")
  root = f"/{uuid.uuid4().hex}"
  for name in os.listdir(checkpoint_dir):
    with open(os.path.join(checkpoint_dir, name), "rb") as f:
      fs.pipe_file(f"{root}/{name}", f.read())
  fs.pipe_file(f"{root}/{checkpoint.PICKLE}", b"not unpickled")
  fs.pipe_file(f"{root}/README.md", b"# not a model file")
  try:
    local = hub.fetch(hub.describe(f"memory://{root}"), cache_dir=str(tmp_path))
    assert sorted(os.listdir(local)) == sorted(os.listdir(checkpoint_dir) + [".complete"])
  finally:
    fs.rm(root, recursive=True)


def test_fetch_a_sharded_checkpoint_from_an_fsspec_url(checkpoint_dir, tmp_path):
  from transformers import AutoModelForSequenceClassification
  sharded = str(tmp_path / "sharded")
  AutoModelForSequenceClassification.from_pretrained(checkpoint_dir).save_pretrained(
      sharded, max_shard_size="40KB")
  shards = sorted(n for n in os.listdir(sharded) if n.endswith(".safetensors"))
  assert len(shards) >= 3
  fs = fsspec.filesystem("memory")
  root = f"/{uuid.uuid4().hex}"
  for name in os.listdir(sharded):
    with open(os.path.join(sharded, name), "rb") as f:
      fs.pipe_file(f"{root}/{name}", f.read())
  try:
    url = f"memory://{root}"
    described = [name for name, _ in hub.describe(url).weights]
    assert described[0] == checkpoint.SAFETENSORS_INDEX and sorted(described[1:]) == shards
    local = hub.fetch(hub.describe(url), cache_dir=str(tmp_path / "cache"))
  finally:
    fs.rm(root, recursive=True)
  assert sorted(n for n in os.listdir(local) if n.endswith(".safetensors")) == shards
  np.testing.assert_allclose(_scores(local), _scores(checkpoint_dir), rtol=0, atol=1e-6)


def test_describe_refuses_what_cannot_load(checkpoint_dir, tmp_path):
  only_pickle = tmp_path / "pickle"
  only_pickle.mkdir()
  (only_pickle / checkpoint.CONFIG).write_bytes(open(os.path.join(checkpoint_dir, checkpoint.CONFIG), "rb").read())
  (only_pickle / checkpoint.PICKLE).write_bytes(b"never unpickled")
  with pytest.raises(checkpoint.PickleRefused, match="--allow_pickle"):
    hub.describe(str(only_pickle))
  assert hub.describe(str(only_pickle), allow_pickle=True).weights[0][0] == checkpoint.PICKLE
  with pytest.raises(FileNotFoundError):
    hub.describe(str(tmp_path / "absent"))


def test_unreachable_hub_fails_fast_and_names_model_path(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
  env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path),
             PYTHONPATH=REPO)
  code = ("import time, model.hub as hub\n"
          "start = time.perf_counter()\n"
          "try:\n"
          "  hub.describe(hub.DEFAULT_MODEL)\n"
          "except hub.ModelUnavailable as err:\n"
          "  print(f'{time.perf_counter() - start:.3f}'); print(err)\n"
          "else:\n"
          "  print('no error')\n")
  start = time.perf_counter()
  done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                        text=True, timeout=60)
  elapsed = time.perf_counter() - start
  assert done.returncode == 0, done.stderr
  seconds, message = done.stdout.split("\n", 1)
  assert "--model PATH" in message and hub.DEFAULT_MODEL in message, message
  assert float(seconds) < 10 and elapsed < 10, (seconds, elapsed)
