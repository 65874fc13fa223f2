"""`python -m train.annotate` against a real chat-completions server on 127.0.0.1
(bench/chat_server.py), with the faults endpoints have injected."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from bench import annotate_corpus
from bench.chat_server import ChatServer, Faults, expected_score
from train.annotate import lease, sample as sampling, store
from train.annotate.__main__ import main

FAST = ["--backoff_seconds", "0.01", "--max_backoff_seconds", "0.05", "--timeout_seconds", "1",
        "--flush_every", "40", "--flush_seconds", "0.2", "--progress_seconds", "5"]


@pytest.fixture
def server():
  servers = []

  def start(**faults) -> ChatServer:
    s = ChatServer(Faults(**faults))
    s.start()
    servers.append(s)
    return s
  yield start
  for s in servers:
    s.stop()


def annotate(corpus: str, out: str, url: str, sample: int, *extra: str) -> int:
  return main(["--input", os.path.join(corpus, "*"), "--output", out, "--endpoint", url,
               "--llm", "test-llm", "--sample", str(sample), *FAST, *extra])


def outputs(out: str):
  """(annotation rows, error lines) of every part."""
  rows = []
  for name in sorted(os.listdir(os.path.join(out, "annotations"))):
    rows += pq.read_table(os.path.join(out, "annotations", name)).to_pylist()
  errors = []
  errors_dir = os.path.join(out, "errors")
  for name in sorted(os.listdir(errors_dir)) if os.path.isdir(errors_dir) else []:
    errors += [json.loads(line) for line in open(os.path.join(errors_dir, name), encoding="utf-8")]
  return rows, errors


def test_every_sampled_document_once_through_faults(tmp_path, server):
  corpus = str(tmp_path / "corpus")
  rows = annotate_corpus.write(corpus, per_shard=100, shards=3, broken=2)
  with open(os.path.join(corpus, "garbage.jsonl.gz"), "wb") as f:
    f.write(b"not gzip at all")  # a shard that cannot be read: said once, in no sample
  s = server(rate=0.1, slow_seconds=1.5, unreadable_every=37, flaky_every=41, model="test-llm")
  out = str(tmp_path / "out")
  assert annotate(corpus, out, s.url, 300, "--concurrency", "8") == 0

  annotated, errors = outputs(out)
  shard_errors = [e for e in errors if e["row"] is None]
  assert [(os.path.basename(e["source"]), e["reason"].split(":")[0]) for e in shard_errors] == \
      [("garbage.jsonl.gz", "unreadable_shard")]
  errors = [e for e in errors if e["row"] is not None]
  expected = sampling.draw(sampling.expand([os.path.join(corpus, "*")]), 300, 0)
  sampled = {(source, row) for _, source, row in expected.rows}
  assert len(sampled) == 300
  landed = [(r["source"], r["row"]) for r in annotated] + [(e["source"], e["row"]) for e in errors]
  assert len(landed) == len(set(landed)) == 300 and set(landed) == sampled  # exactly once
  for r in annotated:  # the answer for this document, not another's
    n = rows[(r["source"], r["row"])]
    assert r["score"] == expected_score(n) and r["id"] == f"d{n}" and f"[doc {n}]" in r["text"]
    assert r["llm"] == "test-llm" and r["prompt_tokens"] > 0 and r["completion_tokens"] > 0
  codes = {e["reason"].split(":")[0] for e in errors}
  assert codes <= {"unreadable_answer", "invalid_json", "null_text", "not_an_object"}
  for e in errors:
    n = rows[(e["source"], e["row"])]
    if e["reason"].startswith("unreadable_answer"):
      assert n % 37 == 0 and "forum post" in e["raw"]  # kept with the answer
    else:
      assert n is None  # the reader's rejects, with the pipeline's reasons
  assert s.faulted and sum(s.faulted.values()) >= 10
  # Requests per document: one answer each, two for answers no score could be read from
  # (retried once), whatever faults came before.
  for (source, row) in sampled:
    n = rows[(source, row)]
    if n is not None:
      assert s.answered[n] == (2 if n % 37 == 0 or n % 41 == 0 else 1), n
  stats = json.loads(open(os.path.join(out, "stats.json")).read())
  assert stats["complete"] and stats["annotated"] == len(annotated) and stats["errored"] == len(errors)
  histogram = [0] * 6
  for r in annotated:
    histogram[r["score"]] += 1
  assert [stats["score_histogram"][str(i)] for i in range(6)] == histogram
  assert stats["tokens"]["prompt"] >= sum(r["prompt_tokens"] for r in annotated)
  assert stats["this_run"]["requests"] == sum(s.requests.values())
  assert stats["this_run"]["settings"]["concurrency"] == 8 and stats["settings"]["llm"] == "test-llm"

  # A rerun of a finished run asks nothing and changes nothing.
  before, written = sum(s.requests.values()), outputs(out)
  assert annotate(corpus, out, s.url, 300) == 0
  assert sum(s.requests.values()) == before
  assert outputs(out) == written


def test_sample_is_reproducible_and_a_larger_one_extends_it(tmp_path):
  corpus = str(tmp_path / "corpus")
  rows = annotate_corpus.write(corpus, per_shard=60, shards=4, broken=3)
  sources = sampling.expand([os.path.join(corpus, "*")])
  small, again, large = (sampling.draw(sources, n, seed=7, threads=t) for n, t in ((50, 1), (50, 3), (120, 2)))
  assert small.rows == again.rows
  assert {r[1:] for r in small.rows} < {r[1:] for r in large.rows}
  # Exactly the N smallest hashes of the population, broken rows included.
  everything = sorted((sampling.key(7, source, row), source, row) for source, row in rows)
  assert large.rows == everything[:120] and large.total_rows == len(rows)
  other = sampling.draw(sources, 50, seed=8)
  assert {r[1:] for r in other.rows} != {r[1:] for r in small.rows}
  assert len(sampling.draw(sources, 10_000, seed=7).rows) == len(rows)  # N over the corpus: all of it


def test_killed_run_resumes_without_asking_again(tmp_path, server):
  import signal
  import subprocess
  import sys
  import time
  corpus = str(tmp_path / "corpus")
  rows = annotate_corpus.write(corpus, per_shard=100, shards=3, broken=0)
  s = server(rate=0.1, slow_seconds=1.5, latency=0.04)
  out = str(tmp_path / "out")
  args = ["--input", os.path.join(corpus, "*"), "--output", out, "--endpoint", s.url, "--llm", "test-llm",
          "--sample", "300", "--concurrency", "4", *FAST, "--flush_every", "20"]
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.Popen([sys.executable, "-m", "train.annotate", *args], cwd=repo,
                          env={**os.environ, "PYTHONPATH": repo}, stderr=subprocess.DEVNULL)
  parts = os.path.join(out, "annotations")
  deadline = time.monotonic() + 60
  written = lambda: [n for n in (os.listdir(parts) if os.path.isdir(parts) else []) if not n.startswith(".")]
  while time.monotonic() < deadline and len(written()) < 3:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)  # no chance to write what it holds
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  time.sleep(0.2)  # requests already on the wire reach the server
  finished = {rows[pair] for pair in store.finished(out)}  # finished = in a written part
  asked, answered = dict(s.requests), dict(s.answered)
  assert 0 < len(finished) < 300

  assert annotate(corpus, out, s.url, 300, "--concurrency", "4") == 0
  annotated, errors = outputs(out)
  assert not errors and len(annotated) == len({(r["source"], r["row"]) for r in annotated}) == 300
  again = sorted(n for n in finished if s.requests[n] != asked[n])
  assert not again, f"finished documents asked again: {again[:10]}"
  # What the kill cost: answers received but not yet in a part, asked again once; at most the
  # part being written and the one filling, 2 x (flush_every + concurrency).
  lost = [n for n, count in answered.items() if count and n not in finished]
  assert all(s.answered[n] == answered[n] + 1 for n in lost)
  assert len(lost) <= 2 * (20 + 4), len(lost)


def test_train_run_reads_the_annotations_as_is(tmp_path, server, encoder_dir):
  """The loop's next step, as a user runs it: train.run on DIR/annotations/*.parquet, no conversion."""
  import subprocess
  import sys
  corpus = str(tmp_path / "corpus")
  annotate_corpus.write(corpus, per_shard=40, shards=3, broken=0)
  s = server(unreadable_every=37)
  out = str(tmp_path / "labels")
  assert annotate(corpus, out, s.url, 120) == 0
  annotated, errors = outputs(out)
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  model = tmp_path / "model"
  args = ["--data", os.path.join(out, "annotations", "*.parquet"), "--output", str(model),
          "--model", encoder_dir, "--max_steps", "2", "--batch_size", "32", "--eval_size", "0.25",
          "--max_length", "64", "--row_lengths", "32,64", "--encode_tokens_per_device", "512"]
  proc = subprocess.run([sys.executable, "-m", "train.run", *args], cwd=repo, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": repo, "JAX_PLATFORMS": "cpu"}, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((model / "data_report.json").read_text())
  assert report["train"] + report["eval"] == len(annotated) and report["bad"] == 0


def test_sigterm_writes_every_answer_received(tmp_path, server):
  import signal
  import subprocess
  import sys
  import time
  corpus = str(tmp_path / "corpus")
  rows = annotate_corpus.write(corpus, per_shard=200, shards=2, broken=0)
  s = server(latency=0.05)
  out = str(tmp_path / "out")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.Popen([sys.executable, "-m", "train.annotate", "--input", os.path.join(corpus, "*"),
                           "--output", out, "--endpoint", s.url, "--llm", "test-llm", "--sample", "400",
                           "--concurrency", "4", "--flush_every", "1000", "--flush_seconds", "60"],
                          cwd=repo, env={**os.environ, "PYTHONPATH": repo}, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 60
  while sum(s.answered.values()) < 40 and time.monotonic() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=60)
  assert proc.returncode == 1 and "interrupted after" in stderr, (proc.returncode, stderr[-2000:])
  finished = {rows[pair] for pair in store.finished(out)}
  # Nothing had been written (flush_every 1000, 60 s): every answer in hand is written now;
  # only the requests cut in flight (at most --concurrency) were answered and not kept.
  assert len(finished) >= 40
  lost = [n for n in s.answered if n not in finished]
  assert len(lost) <= 4, (len(lost), len(finished), stderr[-2000:])
  assert json.loads(open(os.path.join(out, "stats.json")).read())["complete"] is False


def test_a_second_run_into_the_same_output_is_refused_while_the_first_runs(tmp_path, server, caplog):
  import subprocess
  import sys
  import time
  corpus = str(tmp_path / "corpus")
  annotate_corpus.write(corpus, per_shard=100, shards=3, broken=0)
  s = server(latency=0.03)
  out = str(tmp_path / "out")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  first = subprocess.Popen([sys.executable, "-m", "train.annotate", "--input", os.path.join(corpus, "*"),
                            "--output", out, "--endpoint", s.url, "--llm", "test-llm", "--sample", "300",
                            "--concurrency", "2", *FAST], cwd=repo, env={**os.environ, "PYTHONPATH": repo},
                           stderr=subprocess.PIPE, text=True)
  active = os.path.join(out, lease.ACTIVE)
  deadline = time.monotonic() + 60
  while not sum(s.answered.values()) and time.monotonic() < deadline:
    time.sleep(0.02)
  assert [n for n in os.listdir(active) if n.endswith(".json")], "the first run holds no lease"
  assert annotate(corpus, out, s.url, 300, "--concurrency", "2") == 2
  assert "is being annotated by another run" in caplog.text
  _, stderr = first.communicate(timeout=120)
  assert first.returncode == 0, stderr[-2000:]
  annotated, errors = outputs(out)
  assert not errors and len(annotated) == len({(r["source"], r["row"]) for r in annotated}) == 300
  assert max(s.requests.values()) == 1  # nothing was asked twice
  assert not [n for n in os.listdir(active) if n.endswith(".json")]  # the lease went with its run
  assert annotate(corpus, out, s.url, 300) == 0 and max(s.requests.values()) == 1


def test_lease_goes_to_the_first_live_run(tmp_path):
  import subprocess
  import sys
  import time
  out = str(tmp_path / "out")
  os.makedirs(os.path.join(out, lease.ACTIVE))

  def other(run: str, started: float, renewed: float, machine: str = "elsewhere/1", pid: int = 1):
    with open(os.path.join(out, lease.ACTIVE, run + ".json"), "w") as f:
      json.dump({"run": run, "machine": machine, "pid": pid, "started": started, "renewed": renewed}, f)

  def held() -> list:
    return sorted(n for n in os.listdir(os.path.join(out, lease.ACTIVE)) if n.endswith(".json"))

  now = time.time()
  other("earlier", now - 60, now - 5)  # alive, elsewhere, started first: it keeps the output
  with pytest.raises(lease.AnotherRun, match="earlier, pid 1 on elsewhere/1"):
    with lease.Lease(out, "mine"):
      pass
  assert held() == ["earlier.json"]  # the refused run took its own lease back

  other("earlier", now - 600, now - lease.EXPIRE_SECONDS - 1)  # not renewed: a dead run elsewhere
  with lease.Lease(out, "mine"):
    assert held() == ["earlier.json", "mine.json"]
  assert held() == ["earlier.json"]

  gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  other("earlier", now - 60, time.time(), machine=lease.machine(), pid=int(gone.stdout))  # killed here
  with lease.Lease(out, "mine"):
    pass

  other("earlier", now - 60, time.time(), machine=lease.machine(), pid=os.getpid())  # alive here
  with pytest.raises(lease.AnotherRun):
    with lease.Lease(out, "mine"):
      pass

  # Two runs starting together, each writing its lease before reading the other's: each yields
  # to a live lease, whichever started first, so they never both go on.
  os.remove(os.path.join(out, lease.ACTIVE, "earlier.json"))
  mine = lease.Lease(out, "mine")
  other("later", mine.record["started"] + 1, time.time())
  with pytest.raises(lease.AnotherRun, match="later"):
    with mine:
      pass
  assert held() == ["later.json"]

  os.remove(os.path.join(out, lease.ACTIVE, "later.json"))
  with open(os.path.join(out, lease.ACTIVE, "stray.json"), "w") as f:
    f.write("not a lease")  # something else's file: no lease, and no failure
  with lease.Lease(out, "mine"):
    pass
