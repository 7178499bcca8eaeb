"""Fine-tuning: parameters loaded by name under a new head, every mismatch in one error, frozen parameters
untouched, the three modes, the labeled subset, and a fine-tuning run that resumes from its own checkpoint."""
import os
import shutil

import jax
import numpy as np
import pytest

from tests.conftest import ROOT, read_metrics, run_main, tiny_config, rows

FINETUNE = ["--config", "configs/quickstart_finetune.py:tiny"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  from pretrain.trainer import train
  workdir = str(tmp_path_factory.mktemp("pretrained"))
  train.train(tiny_config(**{"train.steps": 10}), workdir)
  return workdir


def finetune_config(pretrained, **overrides):
  from pretrain import configlib
  return configlib.load(os.path.join(ROOT, "configs/quickstart_finetune.py:tiny"),
                        [("init.workdir", pretrained), *[(k, str(v)) for k, v in overrides.items()]])


def flat(tree) -> dict:
  from pretrain.trainer import optim
  return {optim.param_name(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def pretrained_params(pretrained) -> dict:
  from pretrain.trainer import run_dir
  return flat(run_dir.load(pretrained).params)


def init_and_load(config, workdir):
  """(run, fresh state, state after loading the pretrained parameters), without training."""
  from pretrain import finetune
  from pretrain.trainer import train
  run = train.Run(finetune.resolve_config(config), str(workdir))
  fresh = run.init_state()
  return run, fresh, finetune.load_pretrained(run.config, run.model, run.tx, fresh, log=lambda line: None)


def test_head_swap_loads_the_backbone_by_name(pretrained, tmp_path):
  run, fresh, loaded = init_and_load(finetune_config(pretrained), tmp_path)
  assert run.config.model.width == 32 and run.config.model.num_layers == 1  # From the pretrained config.json.
  before, got = pretrained_params(pretrained), flat(loaded.params)
  assert set(got) == {f"backbone/{n}" for n in before} | {"head/kernel", "head/bias"}
  for name, value in before.items():
    np.testing.assert_array_equal(got[f"backbone/{name}"], value)
  assert got["head/kernel"].shape == (32, 8)  # The dataset's 8 sources.
  for name in ("head/kernel", "head/bias"):
    np.testing.assert_array_equal(got[name], flat(fresh.params)[name])
  assert int(loaded.step) == 0


def test_scratch_keeps_the_architecture_and_loads_nothing(pretrained, tmp_path):
  _, fresh, loaded = init_and_load(finetune_config(pretrained, **{"init.mode": "scratch"}), tmp_path)
  before, got = pretrained_params(pretrained), flat(loaded.params)
  assert {n: v.shape for n, v in got.items() if n.startswith("backbone/")} == \
      {f"backbone/{n}": v.shape for n, v in before.items()}
  assert all(np.array_equal(got[n], v) for n, v in flat(fresh.params).items())
  assert not np.array_equal(got["backbone/wte/embedding"], before["wte/embedding"])


def test_every_mismatch_in_one_error_and_dont_load_excuses_them(pretrained, tmp_path):
  from pretrain.errors import CheckpointError
  changed = {"init.architecture": "config", "model.width": 32, "model.num_heads": 4, "model.num_layers": 2,
             "model.context": 64}
  with pytest.raises(CheckpointError) as e:
    init_and_load(finetune_config(pretrained, **changed), tmp_path / "a")
  message = str(e.value)
  assert "\n" not in message and "7 mismatch(es)" in message
  assert "shape of backbone/wpe/embedding: checkpoint (32, 32), model (64, 32)" in message
  for name in ("attn/c_attn/kernel", "attn/c_proj/kernel", "ln_1/scale", "ln_2/scale", "mlp/c_fc/kernel",
               "mlp/c_proj/kernel"):
    assert f"missing backbone/h_1/{name}" in message
  _, fresh, loaded = init_and_load(finetune_config(pretrained, **changed, **{"init.dont_load": "wpe/,h_1/"}),
                                   tmp_path / "b")
  before, got, new = pretrained_params(pretrained), flat(loaded.params), flat(fresh.params)
  np.testing.assert_array_equal(got["backbone/h_0/attn/c_attn/kernel"], before["h_0/attn/c_attn/kernel"])
  for name in ("backbone/wpe/embedding", "backbone/h_1/mlp/c_fc/kernel"):
    np.testing.assert_array_equal(got[name], new[name])


def test_checkpoint_of_another_family_is_refused_with_every_name(pretrained, tmp_path):
  """A run whose config.json and checkpoint come from a different family (a small CNN, saved by hand)."""
  from pretrain import configlib
  from pretrain.trainer import checkpoint, step
  from pretrain.errors import CheckpointError
  other = tmp_path / "cnn"
  other.mkdir()
  saved = tiny_config()
  saved.model.family = "cnn"
  (other / "config.json").write_text(configlib.to_json(saved))
  params = {"conv_0": {"kernel": np.ones((3, 3, 1, 8), np.float32)}, "dense": {"kernel": np.ones((8, 10), np.float32)}}
  ckpt = checkpoint.Checkpointer(str(other), keep=1, async_save=False)
  ckpt.save(7, step.TrainState(step=np.int32(7), params=params, opt_state={}, model_state={}))
  ckpt.close()
  config = finetune_config(pretrained, **{"init.architecture": "config", "model.width": 32, "model.num_layers": 1,
                                          "model.context": 32})
  config.init.workdir = str(other)
  with pytest.raises(CheckpointError) as e:
    init_and_load(config, tmp_path / "run")
  message = str(e.value)
  assert "it is a 'cnn' model and this is a 'gpt' model" in message and "\n" not in message
  assert "unexpected backbone/conv_0/kernel (3, 3, 1, 8)" in message and "unexpected backbone/dense/kernel" in message
  assert "missing backbone/wte/embedding (17, 32)" in message and "missing backbone/ln_f/scale" in message


def test_frozen_parameters_are_bit_identical_after_training(pretrained, tmp_path):
  from pretrain import finetune
  from pretrain.trainer import run_dir
  before = pretrained_params(pretrained)
  finetune.train(finetune_config(pretrained, **{"init.mode": "linear_probe"}), str(tmp_path / "probe"))
  probe = flat(run_dir.load(str(tmp_path / "probe")).params)
  for name, value in before.items():
    assert np.array_equal(probe[f"backbone/{name}"], value), name
  assert np.abs(probe["head/kernel"]).sum() > 0
  finetune.train(finetune_config(pretrained, **{"optim.freeze": "h_0/attn/"}), str(tmp_path / "part"))
  part = flat(run_dir.load(str(tmp_path / "part")).params)
  for name in ("h_0/attn/c_attn/kernel", "h_0/attn/c_proj/kernel"):
    assert np.array_equal(part[f"backbone/{name}"], before[name]), name
  assert not np.array_equal(part["backbone/h_0/mlp/c_fc/kernel"], before["h_0/mlp/c_fc/kernel"])


def test_optimizer_rules_freeze_scale_and_reject_typos():
  from pretrain.trainer import optim
  from pretrain.errors import ConfigError
  params = {"backbone": {"w": np.ones((3, 3), np.float32)}, "head": {"w": np.ones((3, 2), np.float32)}}
  grads = jax.tree_util.tree_map(lambda p: np.full(p.shape, 0.01, np.float32), params)

  def first_update(**rules):
    config = tiny_config(**{"optim.grad_clip": 0, "optim.warmup_steps": 0, **rules})
    tx = optim.make(config)
    updates, _ = tx.update(grads, tx.init(params), params)
    return flat(updates)

  plain = first_update()
  frozen = first_update(**{"optim.freeze": "^backbone/"})
  assert np.all(frozen["backbone/w"] == 0) and np.array_equal(frozen["head/w"], plain["head/w"])  # no decay either
  scaled = first_update(**{"optim.lr_multipliers": "^head/=0.5"})
  np.testing.assert_allclose(scaled["head/w"], 0.5 * plain["head/w"], rtol=1e-6)
  np.testing.assert_array_equal(scaled["backbone/w"], plain["backbone/w"])
  with pytest.raises(ConfigError, match="match no parameter"):
    first_update(**{"optim.freeze": "^backbon/"})
  with pytest.raises(ConfigError, match="REGEX=MULT"):
    first_update(**{"optim.lr_multipliers": "head"})


def test_labeled_subset_is_balanced_nested_and_checked():
  from pretrain import data
  from pretrain.errors import ConfigError, DataError
  small = data.load(tiny_config(**{"data.labels_per_class": 4}))
  labels = rows(small.train)["label"]
  assert np.bincount(labels, minlength=8).tolist() == [4] * 8
  larger = data.load(tiny_config(**{"data.labels_per_class": 8}))
  as_rows = lambda d: {tuple(t) for t in rows(d.train)["tokens"]}
  assert as_rows(small) <= as_rows(larger)  # A larger budget keeps the smaller one's examples.
  assert as_rows(small) != as_rows(data.load(tiny_config(**{"data.labels_per_class": 4, "seed": 1})))
  with pytest.raises(DataError, match="has only"):
    data.load(tiny_config(**{"data.labels_per_class": 1000}))
  from pretrain import finetune
  with pytest.raises(ConfigError, match="init.workdir"):
    finetune.resolve_config(tiny_config(**{"objective": "classification", "init.mode": "full"}))


def test_command_line_finetune_writes_accuracy_and_resumes_from_its_own_checkpoint(pretrained, tmp_path):
  from pretrain import finetune
  from pretrain.trainer import run_dir
  full, resumed = tmp_path / "full", tmp_path / "resumed"
  out = run_main(*FINETUNE, f"--config.init.workdir={pretrained}", "--workdir", full).stdout
  assert "init: 9 arrays from" in out and "fresh init: head/bias, head/kernel" in out
  val = read_metrics(full, "val")
  assert [r["step"] for r in val] == [5, 10] and all(0 <= r["accuracy"] <= 1 for r in val)
  # Killed after step 5: the rerun restores its own checkpoint (params, optimizer state, step), not the
  # pretrained parameters, and continues as if never stopped.
  shutil.copytree(full, resumed)
  shutil.rmtree(resumed / "checkpoints" / "10")
  finetune.train(finetune_config(pretrained), str(resumed))
  strip = lambda rows: [{k: v for k, v in r.items() if "_per_s" not in k} for r in rows]
  assert strip(read_metrics(resumed)) == strip(read_metrics(full))
  # Starting a new task from the fine-tuned classifier: its backbone loads, its old head does not.
  _, fresh, loaded = init_and_load(finetune_config(str(full)), tmp_path / "next")
  got, tuned = flat(loaded.params), flat(run_dir.load(str(full)).params)
  np.testing.assert_array_equal(got["backbone/wte/embedding"], tuned["backbone/wte/embedding"])
  np.testing.assert_array_equal(got["head/kernel"], flat(fresh.params)["head/kernel"])
  assert np.abs(tuned["head/kernel"]).sum() > 0


def test_sweep_table_is_mean_and_sample_std_per_budget_and_mode():
  from launch import finetune_sweep
  results = {("scratch", 8): [{"accuracy": 0.5, "loss": 2.0}, {"accuracy": 0.7, "loss": 1.0}],
             ("full", 8): [{"accuracy": 0.9, "loss": 0.3}, {"accuracy": 0.9, "loss": 0.1}]}
  lines = finetune_sweep.table(results, [8], ["scratch", "full"]).splitlines()
  assert lines[0] == "| labels per class | scratch accuracy | full accuracy | scratch NLL | full NLL |"
  assert lines[2] == "| 8 | 0.600 ± 0.141 | 0.900 ± 0.000 | 1.500 ± 0.707 | 0.200 ± 0.141 |"


def test_sweep_headline_finds_the_fewest_labels_matching_scratch_on_all():
  from launch import finetune_sweep
  scratch_all = [{"accuracy": 0.90, "macro_f1": 0.88, "loss": 0.3}] * 2
  results = {("scratch", 0): scratch_all,
             ("scratch", 4): [{"accuracy": 0.6, "macro_f1": 0.5, "loss": 1.0}] * 2,
             ("full", 4): [{"accuracy": 0.85, "macro_f1": 0.80, "loss": 0.5}] * 2,
             ("full", 16): [{"accuracy": 0.91, "macro_f1": 0.87, "loss": 0.4}] * 2,
             ("scratch", 16): [{"accuracy": 0.7, "macro_f1": 0.6, "loss": 0.8}] * 2,
             ("full", 0): [{"accuracy": 0.95, "macro_f1": 0.94, "loss": 0.2}] * 2}
  budgets, modes = [4, 16, 0], ["scratch", "full"]
  lines = finetune_sweep.table(results, budgets, modes).splitlines()
  assert lines[0].startswith("| labels per class | scratch accuracy | full accuracy | scratch macro-F1 |")
  assert lines[-1].startswith("| all | 0.900 ± 0.000 | 0.950 ± 0.000 |")
  accuracy = finetune_sweep.matches_scratch(results, budgets, modes, all_labels=3200, num_classes=2)
  assert accuracy == ["- full: 16 labels per class (32 labels) match scratch's accuracy on all 3,200 labels (0.900): "
                      "100x fewer labels."]
  f1 = finetune_sweep.matches_scratch(results, budgets, modes, 3200, 2, key="macro_f1")
  assert f1[0].startswith("- full: no budget below all labels reaches scratch's macro_f1")
