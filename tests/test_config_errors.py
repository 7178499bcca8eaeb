"""Bad input stops the run with one clear line on stderr naming the key and the fix (exit status 2)."""
import pytest

from tests.conftest import run_main


def _error_line(*args):
  proc = run_main(*args, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["--config.model.nmu_layers=3"], "unknown config key --config.model.nmu_layers"),
    (["--config.modle.width=3"], "unknown config key --config.modle"),
    (["--config.model.num_layers=three"], "expected an integer"),
    (["--config.model.num_heads=3"], "num_heads=3 does not divide model.width=32"),
    (["--config.train.batch_size=7", "--config.parallel.strategy=single"], None),
    (["--config.data.name=text", "--config.data.path", "/no/such/file.txt"], "data.path='/no/such/file.txt' does not exist"),
    (["--config.data.name=text"], "set --config.data.path"),
    (["--config.train.log_every=3", "--config.train.steps_per_call=2"], "train.log_every=3 is not a multiple"),
])
def test_bad_config_is_one_line(tmp_path, args, expected):
  if expected is None:
    pytest.skip("covered by the multi-device tests")
  line = _error_line("--config", "configs/quickstart.py:tiny", "--workdir", tmp_path / "w", *args)
  assert expected in line


def test_missing_config_file_and_variant(tmp_path):
  assert "does not exist" in _error_line("--config", "configs/nope.py", "--workdir", tmp_path)
  assert "unknown variant" in _error_line("--config", "configs/quickstart.py:huge", "--workdir", tmp_path)
