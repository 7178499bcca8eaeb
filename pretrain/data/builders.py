"""Preparing and reading TFDS builders (the Markov source's, the image files', a catalog's).

Builders write array_record files and are read through `as_data_source()`, so TensorFlow is never needed.
Each prepared dataset lives in its own folder under the data dir, named by a hash of everything that
defines its content; `prepare` builds it once through the guard all preparations share
(pretrain/data/prepare.py). User text goes through the streamed preparation there instead.
"""
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from pretrain.data import prepare as preparing
from pretrain.data.batching import Records, Rows
from pretrain.errors import DataError


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


def records(builder, split, keys=None) -> Records:
  """A prepared builder's split, read by index a batch at a time; labels as int32."""
  if split not in builder.info.splits:
    raise DataError(f"{builder.name} has no split {split!r} (it has {', '.join(builder.info.splits)}); "
                    "set --config.data.train_split / val_split")
  try:
    source = builder.as_data_source(split=split)
  except Exception as e:
    raise DataError(f"cannot read split {split!r} of {builder.name} in {builder.data_dir}: {e}; "
                    "delete that folder to prepare it again") from None
  if not len(source):
    raise DataError(f"split {split!r} of {builder.name} is empty")
  rows = Records(Rows(source, keys, where=f"split {split!r} of {builder.name} in {builder.data_dir}"))
  return rows.mapped(_int32_labels)


def _int32_labels(batch):
  return {**batch, "label": batch["label"].astype(np.int32)} if "label" in batch else batch
