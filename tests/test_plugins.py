"""Families, sources and objectives of one's own, named by dotted path; the refusals; old run directories."""
import json
import math
import os
import textwrap

import numpy as np
import pytest

from pretrain import configlib, plugins
from pretrain.errors import ConfigError
from tests.conftest import read_metrics, tiny_config

# A researcher's package: a bigram family, a source of counting sequences, a label-smoothed objective.
LAB = {
    "bigram.py": '''
        """Next token from the current one alone: an embedding read out by a Dense layer."""
        import flax.linen as nn

        from pretrain import models

        OBJECTIVES = ("next_token", "labplug.smoothed")
        INPUTS = "tokens"


        def build(config, dataset, data_axis=None):
          return Bigram(models.vocab_size(config, dataset), config.model.width)


        class Bigram(nn.Module):
          vocab_size: int
          width: int
          pretraining_only = ("^out/",)

          def setup(self):
            self.embed = nn.Embed(self.vocab_size, self.width)
            self.out = nn.Dense(self.vocab_size)

          def features(self, tokens_BxT, train=False):
            return self.embed(tokens_BxT)

          def __call__(self, tokens_BxT, train=False):
            return self.out(self.features(tokens_BxT, train))
        ''',
    "counting.py": '''
        """Sequences that count up modulo a small alphabet from a random start; the label is the start's parity."""
        import numpy as np

        from pretrain import data
        from pretrain.errors import ConfigError

        V, L = 12, 17


        def check(config):
          if config.model.context < L - 1:
            raise ConfigError(f"labplug.counting needs model.context >= {L - 1}")


        def load(config):
          def split(n, seed):
            start = np.random.default_rng(seed).integers(0, V, n)
            tokens = (start[:, None] + np.arange(L)[None]) % V
            return data.Records({"tokens": tokens.astype(np.int32), "label": (start % 2).astype(np.int32)})
          return data.Dataset(config.data.name, split(256, config.seed), split(64, config.seed + 1), vocab_size=V,
                              num_classes=2, ids={"ids": "counting"})
        ''',
    "smoothed.py": '''
        """Next-token cross-entropy against labels smoothed by 0.1."""
        import jax.numpy as jnp
        import optax

        from pretrain.objectives import apply, token_weights


        def model_inputs(batch):
          return batch["tokens"][:, :-1]


        def loss(model, variables, batch, *, train, rng):
          logits_BxTxV, model_state = apply(model, variables, model_inputs(batch), train=train, rng=rng)
          V = logits_BxTxV.shape[-1]
          targets_BxTxV = optax.smooth_labels(jax_one_hot(batch["tokens"][:, 1:], V), 0.1)
          nll_BxT = optax.softmax_cross_entropy(logits_BxTxV, targets_BxTxV)
          w_BxT = token_weights(batch, batch["tokens"])[:, 1:]
          return {"loss_sum": jnp.sum(nll_BxT * w_BxT), "count": jnp.sum(w_BxT)}, model_state


        def jax_one_hot(ids, n):
          return (ids[..., None] == jnp.arange(n)).astype(jnp.float32)
        ''',
    "incomplete.py": '''
        """A family module that forgot build()."""
        OBJECTIVES = ("next_token",)
        INPUTS = "tokens"
        ''',
}


@pytest.fixture
def lab(tmp_path, monkeypatch):
  package = tmp_path / "pkg" / "labplug"
  package.mkdir(parents=True)
  (package / "__init__.py").write_text("")
  for name, text in LAB.items():
    (package / name).write_text(textwrap.dedent(text))
  monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
  return tmp_path


def lab_config(**overrides):
  return tiny_config(**{"model.family": "labplug.bigram", "data.name": "labplug.counting", "model.context": 16,
                        "optim.lr": 3e-2, "optim.warmup_steps": 0, **overrides})


def test_own_family_source_and_objective_train_end_to_end_and_fine_tune(lab):
  from pretrain import finetune
  from pretrain.trainer import run_dir, train
  final = train.train(lab_config(), str(lab / "lm"))
  # Counting is deterministic after the first token: far below the uniform ln 12 per token.
  assert final["loss"] < 0.5 * math.log(12)
  assert json.loads((lab / "lm" / "dataset.json").read_text())["vocabulary"] == {"ids": "counting", "vocab_size": 12}
  smoothed = train.train(lab_config(objective="labplug.smoothed"), str(lab / "smoothed"))
  assert smoothed["loss"] < math.log(12) and smoothed["loss"] > final["loss"]  # Smoothing keeps a floor above it.
  tuned = finetune.train(lab_config(**{"objective": "classification", "init.workdir": str(lab / "lm"),
                                       "model.head.pooling": "first", "optim.lr": 1e-2}), str(lab / "parity"))
  assert tuned["accuracy"] > 0.9 and read_metrics(lab / "parity", "val")  # The first token's parity: chance 0.5.
  loaded = run_dir.load(str(lab / "parity"))  # The saved run reads back through the dotted names.
  assert set(loaded.params) == {"backbone", "head"} and "out" not in loaded.params["backbone"]


def test_own_source_check_and_refusals_are_one_line(lab):
  from pretrain import data
  from pretrain.trainer import run_dir
  with pytest.raises(ConfigError, match="labplug.counting needs model.context"):
    data.check(lab_config(**{"model.context": 8}))
  cases = [({"model.family": "labplug.bigramm"}, "model.family=labplug.bigramm: no module 'labplug.bigramm'"),
           ({"model.family": "nolab.bigram"}, "no module 'nolab'"),
           ({"model.family": "labplug.incomplete"}, "lacks build"),
           ({"model.family": "gtp"}, "unknown model.family='gtp': built-in ones are bert, gpt, lstm"),
           ({"objective": "next_tokn"}, "unknown objective='next_tokn'"),
           ({"objective": "masked_lm"}, "objective=masked_lm trains model.family bert, not labplug.bigram")]
  for overrides, message in cases:
    config = lab_config(**overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as e:
      run_dir.build(config)
    assert "\n" not in str(e.value)


def test_helper_modules_are_not_sources_and_plain_names_reach_the_catalog():
  assert plugins.builtin(plugins.SOURCE, "batching") is None  # A helper, not a source: no load().
  assert plugins.load(plugins.SOURCE, "mnist", fallback="catalog").__name__ == "pretrain.data.catalog"
  assert "markov" in plugins.builtins(plugins.SOURCE) and "text" in plugins.builtins(plugins.SOURCE)
  assert plugins.builtins(plugins.OBJECTIVE) == ["classification", "masked_lm", "next_token", "pixels"]


def test_a_copied_builtin_source_does_not_collide_with_it(tmp_path, monkeypatch):
  package = tmp_path / "copies"
  package.mkdir()
  (package / "__init__.py").write_text("")
  source = os.path.join(os.path.dirname(plugins.__file__), "data", "markov.py")
  (package / "seqs.py").write_text(open(source).read())
  monkeypatch.syspath_prepend(str(tmp_path))
  from pretrain import data
  builtin, copy = data.load(tiny_config()), data.load(tiny_config(**{"data.name": "copies.seqs"}))
  first = lambda d: d.train.read(np.arange(4))["tokens"]
  np.testing.assert_array_equal(first(builtin), first(copy))
  assert copy.vocabulary == builtin.vocabulary


OLD_FIELDS = ["model.qk_norm", "model.activation", "model.head_init", "model.param_dtype", "model.remat",
              "optim.name", "optim.schedule", "optim.no_decay", "optim.muon_exclude", "eval.micro_batch_size",
              "eval.extra", "data.text_field", "data.labels_per_class", "parallel.cpu_devices", "log", "init"]


def test_old_run_directories_load_evaluate_sample_and_fine_tune(tmp_path):
  """A run saved before fields existed (and before dataset.json): every reader takes today's defaults."""
  from pretrain import evaluate, finetune, sample
  from pretrain.trainer import run_dir, train
  workdir = tmp_path / "old"
  train.train(tiny_config(**{"train.steps": 10}), str(workdir))
  saved = json.loads((workdir / "config.json").read_text())
  for key in OLD_FIELDS:
    *parents, leaf = key.split(".")
    node = saved
    for p in parents:
      node = node[p]
    del node[leaf]
  (workdir / "config.json").write_text(json.dumps(saved))
  os.remove(workdir / "dataset.json")  # The vocabulary then comes from run.json, as older runs kept it.

  config = run_dir.saved_config(str(workdir))
  assert config.model.activation == "gelu" and config.init.mode is None and config.eval.extra == ()
  assert config.model.stage_sizes == (3, 3, 3)  # JSON lists are tuples again.
  with pytest.raises(AttributeError):
    config.model.not_a_field = 1  # Still locked against typos.
  assert run_dir.saved_dataset(str(workdir))["vocabulary"] == {"ids": "markov", "vocab_size": 17}
  out = evaluate.evaluate(str(workdir), configlib.load(os.path.join("configs", "quickstart.py:tiny")))
  assert out["step"] == 10 and "bits_per_token_sem" in out
  loaded = run_dir.load(str(workdir))
  generated = sample.generate(loaded.model, loaded.params, [[16]], family="gpt", max_new_tokens=4, temperature=0)
  assert len(generated.tokens[0]) == 4
  tuned = finetune.train(tiny_config(**{"objective": "classification", "init.workdir": str(workdir),
                                        "train.steps": 5, "train.eval_every": 5, "train.checkpoint_every": 5}),
                         str(tmp_path / "tuned"))
  assert 0 <= tuned["accuracy"] <= 1


def test_loop_and_evaluate_rows_carry_the_same_fields(tmp_path):
  from pretrain import evaluate
  from pretrain.trainer import metrics, train
  train.train(tiny_config(**{"train.steps": 10}), str(tmp_path))
  evaluate.evaluate(str(tmp_path), configlib.load(os.path.join("configs", "quickstart.py:tiny")))
  rows = {row["split"]: row for row in metrics.read(str(tmp_path))}
  assert set(rows["val"]) - {"split"} == set(rows["evaluate"]) - {"split", "data"}
