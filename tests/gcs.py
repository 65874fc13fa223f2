"""A real GCS server for tests: the gcp-storage-emulator package, started as its own process."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

BUCKET = "koedu-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def gcs_env(host: str) -> dict[str, str]:
  # gcsfs talks to STORAGE_EMULATOR_HOST without credentials; its hierarchical-namespace probe
  # is not implemented by the emulator.
  return {"STORAGE_EMULATOR_HOST": host, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


@contextlib.contextmanager
def emulator():
  """Yields the emulator's address with env vars set in this process too."""
  port = _free_port()
  exe = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
  proc = subprocess.Popen([exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory",
                           "--default-bucket", BUCKET, "-q"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  host = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + 30
    while True:
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
      except OSError:
        if proc.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError("the GCS emulator did not start")
        time.sleep(0.1)
    saved = {k: os.environ.get(k) for k in gcs_env(host)}
    os.environ.update(gcs_env(host))
    try:
      yield host
    finally:
      for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
  finally:
    proc.terminate()
    proc.wait(timeout=10)
