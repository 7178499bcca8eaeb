"""Every model family through the one training path: a tiny pretraining run, then a fine-tuning run that
loads its backbone under a classification head (pretrain/finetune.py)."""
import numpy as np
import pytest

from pretrain import data
from pretrain.data import text
from pretrain import finetune as fine_tuning
from pretrain.trainer import run_dir, train
from tests.conftest import read_metrics, run_main, tiny_config, rows
from tests.test_images import write_mnist_like

TINY_RUN = {"train.steps": 4, "train.batch_size": 8, "train.log_every": 2, "train.eval_every": 4,
            "train.checkpoint_every": 4, "optim.warmup_steps": 1, "eval.batches": 2}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
  folder = tmp_path_factory.mktemp("digits")
  write_mnist_like(folder, n=80, size=20)
  return folder


def image_config(digits, **overrides):
  return tiny_config(**{"data.name": "idx", "data.path": digits, "data.splits": "('train:50', 'finetune:20', 'test:*')",
                        "data.val_split": "test", **TINY_RUN, **overrides})


def finetune(pretrained_dir, workdir, config):
  config.init.workdir = str(pretrained_dir)
  config.init.dont_load = ("^head/",)  # A new task: the head starts afresh even when its shape matches.
  final = fine_tuning.train(config, str(workdir))
  assert "accuracy" in final and np.isfinite(final["loss"])
  loaded = run_dir.load(str(workdir)).params
  assert "backbone" in loaded and "head" in loaded
  return final


def test_resnet_supervised_pretraining_then_transfer_to_new_classes(digits, tmp_path):
  """log p(y | x) on digits 0-4 as the source task, then digits 5-9 from the fine-tuning split."""
  common = {"objective": "classification", "model.family": "resnet", "model.stage_sizes": "(1,)",
            "model.stage_widths": "(4,)", "data.preprocess": "('scale',)"}
  final = train.train(image_config(digits, **{"data.classes": "(0, 1, 2, 3, 4)", **common}), str(tmp_path / "pre"))
  assert 0.0 <= final["accuracy"] <= 1.0
  assert "batch_stats" in run_dir.load(str(tmp_path / "pre")).model_state
  target = image_config(digits, **{"data.classes": "(5, 6, 7, 8, 9)", "data.train_split": "finetune",
                                   "data.labels_per_class": 1, **common})
  finetune(tmp_path / "pre", tmp_path / "ft", target)


def test_pixelcnn_pretrains_on_binarized_images_and_fine_tunes(digits, tmp_path):
  common = {"model.family": "pixelcnn", "model.width": 4, "model.num_layers": 1, "data.preprocess": "('binarize',)"}
  final = train.train(image_config(digits, objective="pixels", **common), str(tmp_path / "pre"))
  assert final["nats_per_image"] == pytest.approx(final["loss"] * 400, rel=1e-6)  # 20x20 binary pixels
  assert final["bits_per_dim"] == pytest.approx(final["loss"] / np.log(2))
  finetune(tmp_path / "pre", tmp_path / "ft", image_config(digits, objective="classification", **common))


def test_lstm_pretrains_then_fine_tunes_on_labels(tmp_path):
  """Next-token pretraining on the Markov sequences, then telling their sources apart from a few labels."""
  common = {"model.family": "lstm", "model.num_layers": 1, "model.width": 16, **TINY_RUN, "eval.batches": 0}
  final = train.train(tiny_config(objective="next_token", **common), str(tmp_path / "pre"))
  assert np.isfinite(final["loss"]) and final["count"] > 0
  finetune(tmp_path / "pre", tmp_path / "ft",
           tiny_config(objective="classification", **{"data.labels_per_class": 2, **common}))


def test_text_segments_are_labeled_windows():
  tokens = np.arange(1000, dtype=np.int32)
  train_split, val_split = text.segment_windows(tokens, 4, 10, 0.2)
  assert rows(train_split)["tokens"].shape == (80, 10) and rows(val_split)["tokens"].shape == (20, 10)
  for split in (train_split, val_split):
    t, y = rows(split)["tokens"], rows(split)["label"]
    assert (t[:, 0] // 250 == y).all() and (np.diff(t, axis=1) == 1).all()  # a part's own contiguous windows
  assert rows(val_split)["tokens"][:5, 0].tolist() == [200, 210, 220, 230, 240]  # each part's last fifth


def test_bert_masked_lm_then_sequence_classification(tmp_path):
  """Masked-LM pretraining on a text, then classifying windows of it by which part they come from."""
  rng = np.random.default_rng(0)
  parts = ["".join(rng.choice(list(alphabet), 600)) for alphabet in ("abcd ", "cdef ", "efgh ", "ghab ")]
  (tmp_path / "plays.txt").write_text("".join(parts))
  common = {"data.name": "text", "data.path": tmp_path / "plays.txt", "model.family": "bert", "model.num_layers": 1,
            "model.width": 16, "model.num_heads": 2, "model.context": 16, **TINY_RUN, "eval.batches": 0}
  final = train.train(tiny_config(objective="masked_lm", **common), str(tmp_path / "pre"))
  assert np.isfinite(final["loss"]) and 0.05 * 240 < final["count"] < 0.3 * 240  # ~15% of the 240 val characters
  final = finetune(tmp_path / "pre", tmp_path / "ft", tiny_config(
      objective="classification", **{"data.text_segments": 4, "data.labels_per_class": 3, **common}))
  assert final["count"] == 4 * round(600 // 17 * 0.1)  # every validation window of every part, once


def test_seed_cnn_cpu_config_from_the_command_line_then_transfer(digits, tmp_path):
  """The seed CNN's :cpu config as a user runs it (on digits 0-4), then fine-tuned on digits 5-9."""
  run_main("--config", "configs/seed_cnn_cifar10.py:cpu", "--workdir", tmp_path / "pre", "--config.data.path", digits,
           "--config.data.splits", "('train:50', 'finetune:20', 'test:*')", "--config.data.classes", "(0, 1, 2, 3, 4)",
           "--config.train.steps=4", "--config.train.log_every=2", "--config.train.eval_every=4",
           "--config.train.checkpoint_every=4")
  val = read_metrics(tmp_path / "pre", "val")
  assert [r["step"] for r in val] == [4] and 0.0 <= val[-1]["accuracy"] <= 1.0
  target = image_config(digits, **{"objective": "classification", "model.family": "seed_cnn",
                                   "data.preprocess": "('scale',)", "data.classes": "(5, 6, 7, 8, 9)",
                                   "data.train_split": "finetune", "data.labels_per_class": 1})
  finetune(tmp_path / "pre", tmp_path / "ft", target)
  missing = run_main("--config", "configs/seed_cnn_cifar10.py:cpu", "--workdir", tmp_path / "x",
                     "--config.data.path", tmp_path / "nowhere", check=False)
  assert missing.returncode == 2 and "--config.data.path" in missing.stderr.strip().splitlines()[-1]
