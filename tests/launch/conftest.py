"""A PATH whose gcloud, docker, python and tar are fakes that record their calls."""
import os
import stat

import pytest

from tests.launch.launcher import FAKE_SCRIPT, FAKES


@pytest.fixture
def env(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name in FAKES:
    fake = bin_dir / name
    fake.write_text(FAKE_SCRIPT)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
  keep = {k: v for k, v in os.environ.items() if not k.startswith("KOEDU_")}
  keep.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", TMPDIR=str(tmp_path),
              KOEDU_FAKE_LOG=str(tmp_path / "calls.log"),
              # by path: a python3 that is a pyenv shim puts its own bin first on the launcher's PATH
              KOEDU_PYTHON=str(bin_dir / "python"))
  keep.pop("PYTHONPATH", None)  # launch.sh finds its own checkout
  return keep
