"""Property-based bad input: whatever the config values or the damage to data and checkpoint files,
the outcome is the project's own error with a message (or a successful run), never a bare exception."""
import os
import shutil

import hypothesis
import hypothesis.strategies as st
import pytest

from pretrain import configlib, data
from pretrain.trainer import checkpoint, train
from pretrain.errors import ConfigError, PretrainError
from tests.conftest import ROOT, tiny_config

CONFIG = os.path.join(ROOT, "configs/quickstart.py:tiny")
KEYS = sorted(configlib.flatten(tiny_config().to_dict())) + ["model.nope", "nope", "data.markov.nope", "model"]
VALUES = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(str),
                   st.sampled_from(["", "true", "no", "None", "()", "(1,2)", "-1", "0", "1e400", "[", "x" * 300]),
                   st.text(max_size=20))
# derandomize: CI runs the same examples every time, so a red build is reproducible and its time is bounded.
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(hypothesis.HealthCheck))


@hypothesis.settings(max_examples=300, **SETTINGS)
@hypothesis.given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_config_values_fail_only_with_config_errors(overrides):
  try:
    config = configlib.load(CONFIG, overrides)
    configlib.validate(config, num_devices=8)
    data.check(config)
  except PretrainError as e:
    assert str(e) and "\n" not in str(e)


@hypothesis.settings(max_examples=12, **SETTINGS)
@hypothesis.given(st.sampled_from(["data.markov.num_sources", "data.markov.vocab_size", "data.markov.branching",
                                   "data.markov.seq_len", "model.context", "model.vocab_size", "model.dtype",
                                   "model.family", "objective", "data.name", "data.tokenizer"]),
                  st.sampled_from(["0", "1", "2", "3", "-1", "7", "100000", "bfloat16", "gpt", "nope", "text"]))
def test_values_that_reach_the_data_and_model(tmp_path_factory, key, value):
  try:
    config = configlib.load(CONFIG, [(key, value)])
    train.Run(config, str(tmp_path_factory.mktemp("run")))
  except PretrainError as e:
    assert str(e)


@pytest.mark.parametrize("key,value", [("data.markov.vocab_size", "100000"), ("data.markov.num_sources", "10000000"),
                                       ("data.markov.num_train", "100000000"), ("data.markov.seq_len", "10000000")])
def test_markov_sizes_that_would_exhaust_memory_are_config_errors(key, value):
  with pytest.raises(ConfigError, match=key.split(".")[-1]):
    data.check(configlib.load(CONFIG, [(key, value)]))


@hypothesis.settings(max_examples=25, **SETTINGS)
@hypothesis.given(st.binary(max_size=400), st.sampled_from(["char", "byte"]))
def test_arbitrary_bytes_as_text(tmp_path_factory, content, tokenizer):
  path = tmp_path_factory.mktemp("text") / "input.txt"
  path.write_bytes(content)
  try:
    ds = data.load(tiny_config(**{"data.name": "text", "data.path": path, "data.tokenizer": tokenizer}))
    assert len(ds.train) + len(ds.val) == len(content if tokenizer == "byte" else content.decode())
  except PretrainError as e:
    assert str(e)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("trained")
  train.train(tiny_config(**{"train.async_checkpoints": False}), str(workdir))
  return workdir


def _damage(folder, which, offset, mode):
  files = sorted(os.path.join(d, f) for d, _, names in os.walk(folder) for f in names)
  target = files[which % len(files)]
  size = os.path.getsize(target)
  with open(target, "r+b") as fh:
    if mode == "truncate" or size == 0:
      fh.truncate(offset % (size + 1))
    else:
      fh.seek(offset % size)
      byte = fh.read(1)
      fh.seek(offset % size)
      fh.write(bytes([byte[0] ^ 0xFF]))


@hypothesis.settings(max_examples=15, **SETTINGS)
@hypothesis.given(st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from(["truncate", "flip"]))
def test_damaged_checkpoint_restores_older_or_says_why(trained, tmp_path_factory, which, offset, mode):
  workdir = tmp_path_factory.mktemp("damaged")
  shutil.copytree(trained / "checkpoints", workdir / "checkpoints")
  _damage(workdir / "checkpoints" / "20", which, offset, mode)
  run = train.Run(tiny_config(), str(workdir))
  ckpt = checkpoint.Checkpointer(str(workdir), keep=3, async_save=False)
  warnings = []
  try:
    step, state, _ = ckpt.restore_latest_good(run.strategy.abstract(run.init_state()), warn=warnings.append)
    assert step in (10, 20)
    assert step == 20 or any("skipping checkpoint" in w for w in warnings)
  except PretrainError as e:
    assert str(e)
  finally:
    ckpt.abandon()
