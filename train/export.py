"""The output directory (local or any fsspec URL) and the exported model in it.

The model directory is what `transformers.AutoModelForSequenceClassification.from_pretrained`
and `pipeline.run --model` read: config.json with the head, model.safetensors, the tokenizer.
"""
from __future__ import annotations

import os
import tempfile

from flax import nnx

from model import checkpoint
from model.config import ModelConfig
from pipeline import io
from model import placement


class Output:
  """Files of the output directory through the scoring pipeline's storage layer (pipeline/io.py):
  retried, each written whole (a rename locally, the upload itself on object stores), and a
  storage fault never read as a missing file."""

  def __init__(self, root: str):
    self.root = root.rstrip("/")

  def path(self, name: str) -> str:
    return io.join(self.root, name)

  def exists(self, name: str) -> bool:
    return io.exists(self.path(name))

  def read(self, name: str) -> bytes:
    return io.read_bytes(self.path(name))

  def write(self, name: str, data: bytes) -> None:
    io.write_bytes_atomic(self.path(name), data)

  def put_dir(self, local_dir: str) -> None:
    for name in sorted(os.listdir(local_dir)):
      with open(os.path.join(local_dir, name), "rb") as f:
        self.write(name, f.read())


def flat_params(base_params: dict, trained) -> dict:
  """The whole model's parameters (NNX path -> numpy): the base's, overwritten by the trained
  ones (the head alone when features were cached). Every host must call it."""
  params = dict(base_params)
  # Parameters are split over the devices (and hosts): gathered whole, on every host.
  params.update({path: placement.to_host(v.get_value()) for path, v in nnx.to_flat_state(trained)})
  return params


def export(output: Output, cfg: ModelConfig, params: dict, tokenizer_dir: str) -> None:
  """Write the model into the output directory, through a local directory for remote outputs."""
  with tempfile.TemporaryDirectory() as local:
    checkpoint.save_hf(local, cfg, params, tokenizer_dir=tokenizer_dir)
    output.put_dir(local)
