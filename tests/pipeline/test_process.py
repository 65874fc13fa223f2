"""How the command-line tools start: logging set up before Beam's import, collection frozen."""
import subprocess
import sys

from tests.pipeline.conftest import REPO


def run_python(code: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_beams_bigquery_notice_is_dropped_and_everything_else_kept_in_our_format():
  proc = run_python(
      "import logging\n"
      "from pipeline import process\n"
      "process.start_logging(fmt='koedu-format %(levelname)s %(name)s: %(message)s')\n"
      # what apache_beam/io/gcp/internal/clients/bigquery logs without the gcp extra
      "logging.warning('apitools not found, and bigquery client libraries are not available')\n"
      "logging.warning('another root warning')\n"
      "logging.getLogger('pipeline.worker').warning('ours')\n")
  assert proc.returncode == 0, proc.stderr
  assert "apitools" not in proc.stderr
  assert "koedu-format WARNING root: another root warning" in proc.stderr
  assert "koedu-format WARNING pipeline.worker: ours" in proc.stderr


def test_imports_done_freezes_the_start_and_collects_again():
  proc = run_python(
      "import gc\n"
      "gc.disable()\n"
      "import json\n"
      "from pipeline import process\n"
      "process.imports_done()\n"
      "print(gc.isenabled(), gc.get_freeze_count() > 1000)\n")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ["True", "True"]
