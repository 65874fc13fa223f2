"""`python -m pipeline.run` with faults injected into its real code path, for the fault tests.

    KOEDU_FAULTS='{"device_failures": 3}' python -m tests.pipeline.inject_faults --input ... --output ...

Faults (JSON in KOEDU_FAULTS):
- "device_failures": N (-1: always), "device_fail_after": M (default 0): after M good batches,
  the next N batches the encoder runner dispatches raise JaxRuntimeError("INTERNAL: ..."), as a
  TPU halting does; the probe batch goes through the same path, so it fails while the device
  does.
- "fs_every": K: URLs `faulty://<path>` reach the local file at <path>, but every K-th call of
  each kind (listing, lookup, open, read, write, delete) raises ConnectionResetError, as a
  flaky network does (never more than twice in a row for one thread, then a few calls that
  succeed). Writes land whole or not at all, as object stores do.
- "kill_before": "edu/", "kill_on": N: SIGKILL the process when it is about to write its N-th
  file whose path holds that text: a crash between a chunk's outputs.
- "backoff_seconds": S: the first retry's wait (pipeline.io.BACKOFF_SECONDS, 0.5 s in a real
  run), so that tests with many injected faults do not spend their time waiting.
- "entry": MODULE: the command to run (default pipeline.run; pipeline.publish takes the same faults).
- "auto_precision": P: `--dtype auto` resolves to P (a key of model.precision.COMPUTE) on this
  machine, as "bfloat16" does on a TPU: a run begun on one kind of worker and resumed on another.
- "count_to": PATH: at exit, write how many calls of each kind `faulty://` received, by the
  first path component under the output (scores, _done, ...) or "input", as JSON: {"launch":
  what the launcher did before the graph was built, "run": everything, "before_first": for each
  kind of call, the counts of all calls made before its first one}.
"""
from __future__ import annotations

import collections
import io
import json
import os
import signal
import sys
import threading
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem

FAULTS = json.loads(os.environ.get("KOEDU_FAULTS", "{}"))
_calls = collections.Counter()
_lock = threading.Lock()
_streaks = threading.local()  # per thread: failures in a row, calls left that must succeed
HEALTHY_CALLS = 3  # more than one attempt's calls (open + write): the attempt after succeeds


_ops = collections.Counter()


_firsts = {}  # for each kind of call, the counts of every kind when it first happened


def _count(kind: str, path: str) -> None:
  if FAULTS.get("count_to"):
    with _lock:
      key = f"{kind} {_area(path)}"
      if key not in _firsts:
        _firsts[key] = dict(_ops)
      _ops[key] += 1


def _area(path: str) -> str:
  """Which part of the run a path belongs to: "input", or the output's first level."""
  output = FAULTS.get("output", "")
  if output and path.startswith(output):
    rest = path[len(output):].strip("/")
    return rest.split("/", 1)[0] if "/" in rest else (rest or ".")
  return "input"


_launch_ops = collections.Counter()


def _write_counts() -> None:
  if FAULTS.get("count_to"):
    with open(FAULTS["count_to"], "w") as f:
      json.dump({"launch": dict(_launch_ops), "run": dict(_ops), "before_first": _firsts}, f, indent=1,
                sort_keys=True)


def _snapshot_launch() -> None:
  """What the launcher did is what was counted by the time it builds the graph."""
  from pipeline import transforms
  build = transforms.build

  def counted(*args, **kwargs):
    _launch_ops.update(_ops)
    return build(*args, **kwargs)
  transforms.build = counted


def _maybe_fail(kind: str) -> None:
  every = FAULTS.get("fs_every")
  if not every:
    return
  with _lock:
    _calls[kind] += 1
    n = _calls[kind]
  # A retry runs in the thread that failed, and one attempt makes calls of several kinds (an
  # open, then the upload at close): counted per kind, open and write failures took turns and
  # failed one write six times in a row. So per thread, of any kind: after two failures in a
  # row, its next HEALTHY_CALLS calls succeed, as a flaky network recovers.
  healthy = getattr(_streaks, "healthy", 0)
  if healthy:
    _streaks.healthy = healthy - 1
    return
  if n % every == 0:
    _streaks.failures = getattr(_streaks, "failures", 0) + 1
    if _streaks.failures == 2:
      _streaks.failures, _streaks.healthy = 0, HEALTHY_CALLS
    raise ConnectionResetError(f"injected: {kind} call {n} reset by peer")
  _streaks.failures = 0


def _maybe_kill(path: str) -> None:
  text = FAULTS.get("kill_before")
  if text and text in path:
    with _lock:
      _calls["kill"] += 1
      n = _calls["kill"]
    if n == FAULTS.get("kill_on", 1):
      os.kill(os.getpid(), signal.SIGKILL)


class _Reader(io.RawIOBase):
  def __init__(self, f):
    self._f = f

  def readable(self):
    return True

  def seekable(self):
    return True

  def readinto(self, buffer):
    _maybe_fail("read")
    data = self._f.read(len(buffer))
    buffer[:len(data)] = data
    return len(data)

  def seek(self, offset, whence=0):
    return self._f.seek(offset, whence)

  def tell(self):
    return self._f.tell()

  def close(self):
    self._f.close()
    super().close()


class _Writer(io.BytesIO):
  def __init__(self, path: str):
    super().__init__()
    self._path = path

  def close(self):
    if not self.closed:
      data = self.getvalue()
      super().close()
      _maybe_kill(self._path)
      _maybe_fail("write")  # nothing written: the upload failed
      os.makedirs(os.path.dirname(self._path), exist_ok=True)
      partial = f"{self._path}.{uuid.uuid4().hex}.partial"
      with open(partial, "wb") as f:
        f.write(data)
      os.replace(partial, self._path)


class FaultyFileSystem(AbstractFileSystem):
  protocol = "faulty"
  root_marker = "/"

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._local = LocalFileSystem()

  @classmethod
  def _strip_protocol(cls, path):
    path = path[len("faulty://"):] if path.startswith("faulty://") else path
    return "/" + path.lstrip("/") if path else "/"

  def ls(self, path, detail=True, **kwargs):
    _count("list", path)
    _maybe_fail("list")
    return self._local.ls(path, detail=detail)

  def info(self, path, **kwargs):
    _count("info", path)
    _maybe_fail("info")
    return self._local.info(path)

  def _open(self, path, mode="rb", **kwargs):
    _count("open" if "r" in mode else "write", path)
    _maybe_fail("open")
    if "r" in mode:
      return io.BufferedReader(_Reader(open(path, "rb")))
    return _Writer(path)

  def rm_file(self, path):
    _count("delete", path)
    _maybe_fail("delete")
    self._local.rm_file(path)

  def cat_file(self, path, start=None, end=None, **kwargs):
    _count("read", path)
    _maybe_fail("read")
    return self._local.cat_file(path, start=start, end=end)


def _inject_device_failures(count: int, after: int) -> None:
  import jax

  from model import runner
  dispatch = runner.EncoderRunner.dispatch
  state = {"left": count, "good": after}

  def failing(self, batch):
    with _lock:
      fail = state["good"] <= 0 and state["left"] != 0
      if fail and state["left"] > 0:
        state["left"] -= 1
      state["good"] -= 1
    if fail:
      raise jax.errors.JaxRuntimeError("INTERNAL: injected: TPU halted (core 0)")
    return dispatch(self, batch)

  runner.EncoderRunner.dispatch = failing


def _resolve_auto_to(precision: str) -> None:
  from model import runtime
  resolve = runtime.resolve

  def resolving(cfg, precision_asked="auto", *args, **kwargs):
    return resolve(cfg, precision if precision_asked == "auto" else precision_asked, *args, **kwargs)

  runtime.resolve = resolving


def main() -> int:
  import atexit
  atexit.register(_write_counts)
  _snapshot_launch()
  fsspec.register_implementation("faulty", FaultyFileSystem, clobber=True)
  if "backoff_seconds" in FAULTS:
    from pipeline import io
    io.BACKOFF_SECONDS = FAULTS["backoff_seconds"]
  if FAULTS.get("device_failures"):
    _inject_device_failures(FAULTS["device_failures"], FAULTS.get("device_fail_after", 0))
  if FAULTS.get("auto_precision"):
    _resolve_auto_to(FAULTS["auto_precision"])
  import importlib
  run = importlib.import_module(FAULTS.get("entry", "pipeline.run")).main
  return run(sys.argv[1:])


if __name__ == "__main__":
  # Ends as pipeline.run does: a run refused while shapes compile on other threads would
  # otherwise abort in the interpreter's teardown instead of exiting with its status.
  from pipeline.process import exit_now
  exit_now(main())
