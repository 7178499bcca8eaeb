"""TFDS catalog datasets (any data.name that is no source module), prepared as array_record, failing fast
when they cannot be had offline. Image datasets are read as images; text datasets are tokenized into stored
shards like your own text, or, with a label feature and objective=classification, prepared as labeled records
like your labeled files (labeled.py).

Offline, TFDS retries a download for minutes before giving up; here an unreachable download host (or an
empty manual_dir) stops the run within seconds with a message that says how to provide the raw files.
"""
import os
import socket
import urllib.parse

import tensorflow_datasets as tfds

from pretrain.data import Dataset, builders, corpus, images, labeled, prepare, text, tokenizers, wants_labels
from pretrain.errors import DataError

_PROBE_TIMEOUT_S = 3.0


def _reachable(url: str) -> bool:
  host = urllib.parse.urlparse(url).hostname
  if not host:
    return True
  try:
    with socket.create_connection((host, 443), timeout=_PROBE_TIMEOUT_S):
      return True
  except OSError:
    return False


def _download_urls(builder) -> list[str]:
  """The URLs the builder's download step would fetch, when the builder declares them."""
  urls = []
  for attr in ("_URL", "_URLS", "URL", "_DOWNLOAD_URL", "_DL_URL"):
    value = getattr(builder, attr, None) or getattr(type(builder), attr, None)
    if isinstance(value, str):
      urls.append(value)
    elif isinstance(value, dict):
      urls.extend(v for v in value.values() if isinstance(v, str))
  return urls or ["https://storage.googleapis.com"]


def load_builder(name: str, data_dir: str, manual_dir: str | None = None) -> tfds.core.DatasetBuilder:
  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  except Exception as e:  # DatasetNotFoundError and friends name the problem in their first line.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(f"TFDS dataset {name!r}: {first}; check --config.data.name") from None
  if builder.is_prepared():
    return builder
  manual = manual_dir or os.path.join(data_dir, "downloads", "manual")
  has_manual = os.path.isdir(manual) and any(os.scandir(manual))
  if not has_manual and not all(_reachable(u) for u in _download_urls(builder)):
    raise DataError(
        f"TFDS dataset {name!r} is not prepared in {data_dir} and its download host is unreachable; "
        f"put its raw files in {manual} (TFDS manual_dir) and rerun, or prepare it where you have a network "
        f"with tfds.builder({name!r}, data_dir=..., file_format='array_record').download_and_prepare()")
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  except ImportError as e:
    raise DataError(f"preparing TFDS dataset {name!r} needs a package that is missing ({e}); "
                    "install it or prepare the dataset elsewhere and copy it into --config.data.data_dir") from None
  except Exception as e:
    raise DataError(f"could not prepare TFDS dataset {name!r}: {str(e).splitlines()[0] if str(e) else e!r}") from None
  return builder


def load(config) -> Dataset:
  d = config.data
  data_dir = builders.default_data_dir(d.data_dir)
  builder = load_builder(d.name, data_dir)
  features = builder.info.features
  if "image" in features:
    num_classes = features["label"].num_classes if "label" in features else 0
    return images.image_dataset(d.name, d, builder, num_classes, {})
  field = d.text_field
  if field not in features:
    raise DataError(f"TFDS dataset {d.name!r} has features {sorted(features)} and no {field!r}; set "
                    "--config.data.text_field to the one holding the text (or use an 'image' dataset)")
  tokenizer_file = text.tokenizer_path(d)
  names = (d.train_split, d.val_split)
  rows = [builders.records(builder, s, keys=(field, "label")) for s in names]
  corpora = {s: corpus.TFDSCorpus(r, f"TFDS {d.name} {s}", field, binary=d.tokenizer == "byte")
             for s, r in zip(names, rows)}
  if wants_labels(config) and "label" in features:
    spec = dict(catalog=d.name, version=str(builder.info.version), data_dir=str(builder.data_dir), splits=names)
    corpora = dict(zip(("train", "validation"), corpora.values()))
    return labeled.prepared(d.name, spec, corpora, "label", config, tokenizer_file, names=features["label"].names)
  spec = dict(catalog=d.name, version=str(builder.info.version), data_dir=str(builder.data_dir), splits=names,
              text_field=field, tokenizer=d.tokenizer,
              tokenizer_digest=tokenizer_file and tokenizers.digest(tokenizer_file), format=text.TEXT_FORMAT)
  folder = builders.folder_name("text", data_dir, spec)
  prepare.ensure(lambda: os.path.isdir(folder),
                 lambda: prepare.text(folder, corpora, d.tokenizer, tokenizer_path=tokenizer_file), folder)
  return text.open_prepared(d.name, folder, names, tokenizer_file)
