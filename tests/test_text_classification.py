"""TFDS text datasets with a label feature: padded rows for classification, pooling over real tokens only,
pretraining on the same texts as a stream, fine-tuning, and the vocabulary check between the two runs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pretrain import data
from pretrain import finetune as fine_tuning
from pretrain.models import gpt
from pretrain.trainer import metrics, run_dir, train
from pretrain.errors import CheckpointError, ConfigError
from pretrain.models import classifier
from tests.conftest import tiny_config, rows

WORDS = ("good", "fine", "great")


def review(i: int) -> tuple[str, int]:
  """Label 1 when the text has a positive word; lengths vary from 1 to 9 words."""
  rng = np.random.default_rng(i)
  label = int(rng.integers(0, 2))
  words = [str(w) for w in rng.choice(["the", "a", "film", "plot", "was", "is"], int(rng.integers(0, 8)))]
  words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(WORDS if label else ("bad", "dull", "poor"))))
  return " ".join(words), label


@pytest.fixture(scope="module")
def reviews_dir(tmp_path_factory):
  import tensorflow_datasets as tfds

  class ZooTextReviews(tfds.core.GeneratorBasedBuilder):  # Defining it registers the name in the catalog.
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "text": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=2)}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(0, 400), "test": self._generate_examples(400, 480)}

    def _generate_examples(self, start, stop):
      for i in range(start, stop):
        text, label = review(i)
        yield i, {"text": text, "label": label}

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tfds.builder("zoo_text_reviews", data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir


def reviews_config(data_dir, **overrides):
  return tiny_config(**{"data.name": "zoo_text_reviews", "data.data_dir": data_dir, "data.val_split": "test",
                        "data.tokenizer": "byte", **overrides})


def test_labeled_texts_become_padded_rows_and_unlabeled_use_a_stream(reviews_dir):
  ds = data.load(reviews_config(reviews_dir, objective="classification", **{"model.context": 128}))
  assert ds.num_classes == 2 and len(ds.train) == 400 and len(ds.val) == 80
  texts = {review(i)[0].encode(): review(i)[1] for i in range(400)}
  longest = max(len(t) for t in texts)
  f = rows(ds.train)
  assert f["tokens"].shape == (400, longest + 1)  # The longest text, plus the column next-token rows have.
  seen = set()
  for row, mask, label in zip(f["tokens"], f["token_mask"], f["label"]):
    n = int(mask.sum())
    assert mask[:n].all() and not mask[n:].any() and (row[n:] == 0).all()
    text = bytes(row[:n].tolist())
    assert texts[text] == label
    seen.add(text)
  assert len(seen) == len(texts)

  short = data.load(reviews_config(reviews_dir, objective="classification", **{"model.context": 8}))
  lengths = sorted(rows(short.train)["token_mask"].sum(axis=1).astype(int))
  assert rows(short.train)["tokens"].shape == (400, 9) and lengths == sorted(min(len(review(i)[0]), 8) for i in range(400))

  stream = data.load(reviews_config(reviews_dir))  # next_token: the texts, each ended by end-of-text (256).
  assert isinstance(stream.train, data.TokenStream)
  assert len(stream.train) == sum(len(review(i)[0].encode()) + 1 for i in range(400))
  ids = stream.train.tokens[:]
  assert (ids == 256).sum() == 400 and ids[-1] == 256 and stream.vocab_size == 257


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pooling_reads_only_real_tokens(pooling):
  gpt_config = gpt.GPTConfig(vocab_size=11, context=12, num_layers=1, num_heads=2, width=16)
  model = classifier.Classifier(gpt.GPT(gpt_config), num_classes=3, pooling=pooling)
  tokens = np.random.default_rng(0).integers(0, 11, (2, 12)).astype(np.int32)
  mask = np.zeros((2, 12), np.float32)
  mask[0, :5], mask[1, :9] = 1, 1
  params = model.init(jax.random.key(0), tokens)["params"]
  params["head"]["kernel"] = jax.random.normal(jax.random.key(1), params["head"]["kernel"].shape)
  out = model.apply({"params": params}, tokens, positions_mask=mask)
  repadded = np.where(mask > 0, tokens, (tokens + 3) % 11)
  np.testing.assert_allclose(model.apply({"params": params}, repadded, positions_mask=mask), out, atol=1e-6)
  short = model.apply({"params": params}, tokens[:1, :5])  # The first text alone, without padding.
  np.testing.assert_allclose(out[:1], short, atol=1e-5)


def test_pretrain_on_the_stream_then_classify_and_vocabulary_check(reviews_dir, tmp_path):
  common = {"train.steps": 60, "train.log_every": 20, "train.eval_every": 60, "train.checkpoint_every": 60,
            "model.context": 64, "train.async_checkpoints": False}
  train.train(reviews_config(reviews_dir, **common), str(tmp_path / "pre"))
  finetune = {**common, "train.steps": 150, "train.eval_every": 150, "train.checkpoint_every": 150,
              "objective": "classification", "init.workdir": str(tmp_path / "pre"), "optim.lr": 3e-3,
              "model.head.pooling": "mean"}
  final = fine_tuning.train(reviews_config(reviews_dir, **finetune), str(tmp_path / "ft"))
  assert final["accuracy"] >= 0.9  # The label is which of two word lists the text draws from.
  val = [r for r in metrics.read(str(tmp_path / "ft")) if r["split"] == "val"]
  assert val and val[-1]["count"] == 80

  with pytest.raises(CheckpointError, match="tokenizer"):  # Characters: ids mean other symbols than bytes.
    fine_tuning.train(reviews_config(reviews_dir, **{**finetune, "data.tokenizer": "char"}), str(tmp_path / "ft_char"))
  bert = reviews_config(reviews_dir, objective="classification", **{"model.family": "bert"})
  with pytest.raises(ConfigError, match="bert"):
    run_dir.build_model(bert, data.load(bert))
