"""Tests run on 8 fake CPU devices (for the parallel strategies) with a private dataset and compilation cache."""
import os
import subprocess
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("datasets"))
  os.environ["PRETRAIN_DATA_DIR"] = path
  # Compiled steps are cached for this session only (runs in subprocesses share it), not in ~/.cache.
  os.environ["PRETRAIN_COMPILATION_CACHE"] = str(tmp_path_factory.mktemp("compilation"))
  return path


def run_main(*args, env=None, check=True, timeout=600, module="pretrain.main"):
  """Runs a command-line module as a user would; returns the CompletedProcess."""
  proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env={**os.environ, **(env or {})})
  if check and proc.returncode != 0:
    raise AssertionError(f"{module} {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return proc


def read_metrics(workdir, split=None):
  import json
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r for r in rows if split is None or r["split"] == split]


def rows(split) -> dict:
  """Every row of a (small) Records split, read at once."""
  import numpy as np
  return split.read(np.arange(len(split)))


def tiny_config(**overrides):
  """The quickstart:tiny config as a ConfigDict, with dotted-key overrides."""
  from pretrain import configlib
  return configlib.load(os.path.join(ROOT, "configs/quickstart.py:tiny"), [(k, str(v)) for k, v in overrides.items()])
