"""TFDS builders for the embedded Markov dataset (and, through `prepare`, the image files).

They write array_record files and are read through `as_data_source()`, so TensorFlow is never needed.
Each prepared dataset lives in its own folder under the data dir, named by a hash of everything that
defines its content; `prepare` builds it once through the guard all preparations share
(pretrain/data/prepare.py). User text goes through the streamed preparation there instead.
"""
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from pretrain.data import markov
from pretrain.data import prepare as preparing


def default_data_dir(configured: str | None) -> str:
  return configured or os.environ.get("PRETRAIN_DATA_DIR") or os.path.expanduser("~/.cache/pretrain/datasets")


def folder_name(kind: str, data_dir: str, spec: dict) -> str:
  """The folder of a dataset whose content `spec` defines."""
  key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
  return os.path.join(data_dir, f"{kind}-{key}")


def prepare(builder_cls, data_dir: str, **kwargs) -> tfds.core.DatasetBuilder:
  """Builds (once) and returns a prepared builder; `kwargs` define the content and its folder name."""
  folder = folder_name(builder_cls.name, data_dir, kwargs)
  builder = builder_cls(data_dir=folder, file_format="array_record", **kwargs)

  def make():
    tfds.disable_progress_bar()
    builder.download_and_prepare()  # TFDS writes into a temporary folder and renames it when complete.
  preparing.ensure(builder.is_prepared, make, folder)
  # Anew: one made before another process prepared the data has not read its metadata.
  return builder_cls(data_dir=folder, file_format="array_record", **kwargs)


class MarkovSequences(tfds.core.GeneratorBasedBuilder):
  """Sequences from K seeded sparse Markov sources; `label` is the source id (for fine-tuning).

  Metadata holds the exact bits/token of a sequence given its source, the most that not knowing the
  source can add, and the score of the best possible model on the validation split, so a run can report
  its distance from it.
  """
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "best_bits_per_token: the exact posterior predictive's score on the validation split."}

  def __init__(self, *, num_sources, vocab_size, branching, seq_len, num_train, num_val, seed, **kwargs):
    self._params = dict(num_sources=num_sources, vocab_size=vocab_size, branching=branching,
                        seq_len=seq_len, num_train=num_train, num_val=num_val, seed=seed)
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="Sequences from seeded sparse Markov sources (embedded, no download).",
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(self._params["seq_len"],), dtype=np.int32),
            "label": tfds.features.ClassLabel(num_classes=self._params["num_sources"]),
        }),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    p = self._params
    sources = markov.make_sources(p["num_sources"], p["vocab_size"], p["branching"], p["seed"])
    train = markov.sample(sources, p["num_train"], p["seq_len"], p["seed"] + 1)
    val = markov.sample(sources, p["num_val"], p["seq_len"], p["seed"] + 2)
    self.info.metadata.update(
        entropy_bits_per_token=markov.sequence_entropy_bits_per_token(sources, p["seq_len"]),
        source_id_bound_bits_per_token=markov.source_id_bound_bits_per_token(p["num_sources"], p["seq_len"]),
        best_bits_per_token=markov.best_bits_per_token(sources, val[0]),
        entropy_rate_bits=markov.entropy_rates_bits(sources).tolist(),
        **p)
    return {"train": self._generate_examples(*train), "validation": self._generate_examples(*val)}

  def _generate_examples(self, tokens, labels):
    for i in range(len(tokens)):
      yield i, {"tokens": tokens[i], "label": labels[i]}
