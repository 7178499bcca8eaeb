"""TFDS catalog datasets by name, prepared as array_record, failing fast when they cannot be had offline.

Offline, TFDS retries a download for minutes before giving up; here an unreachable download host (or an
empty manual_dir) stops the run within seconds with a message that says how to provide the raw files.
"""
import os
import socket
import urllib.parse

import tensorflow_datasets as tfds

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
