"""Token streams stored as a TFDS dataset: records of RECORD_TOKENS consecutive ids in array_record shards.

A prepared folder is an ordinary TFDS dataset (`tfds.builder_from_directory(folder).as_data_source(split)`
reads it): dataset_info.json, features.json, metadata.json, and per split the shards
`text-SPLIT.array_record-0000i-of-0000N`. Record i of a split holds its ids [i * R, (i + 1) * R), so a
window [a, b) reads only the records it overlaps; nothing reads a whole split.

Writing streams too: `ShardWriter` takes ids as they come and never holds more than one record, and
`carve` cuts one written stream into contiguous splits, renaming the shards a split covers whole and
rewriting only the rest (the validation tail).
"""
import collections
import os
import threading

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_data_source, array_record_module

from pretrain.errors import DataError

RECORD_TOKENS = 8192  # Ids per record: a 1024-token window reads one record, or two where it straddles.
CACHE_BYTES = 1 << 24  # Decoded records kept per stream: all of a small corpus, a bounded share of a big one.
SHARD_RECORDS = 4096  # Records per array_record file.
_OPTIONS = "group_size:1,zstd:1"  # One record per chunk (random access reads only it); light compression.
NAME = "text"


def features(dtype) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({"tokens": tfds.features.Tensor(
      shape=(None,), dtype=dtype, encoding=tfds.features.Encoding.BYTES)})


class RecordWriter:
  """Serialized examples of `features` into array_record shards of SHARD_RECORDS, named `{prefix}-{i:05d}`."""

  def __init__(self, prefix: str, features_dict: tfds.features.FeaturesDict):
    self.prefix, self.features = prefix, features_dict
    self.shards: list[tuple[str, int, int]] = []  # (path, records, bytes) of each closed shard
    self._writer, self._records, self._bytes = None, 0, 0

  def write(self, example: dict) -> None:
    if self._writer is None:
      path = f"{self.prefix}-{len(self.shards):05d}"
      self._writer, self._path = array_record_module.ArrayRecordWriter(path, _OPTIONS), path
    data = self.features.serialize_example(example)
    self._writer.write(data)
    self._records, self._bytes = self._records + 1, self._bytes + len(data)
    if self._records == SHARD_RECORDS:
      self._close_shard()

  def _close_shard(self) -> None:
    self._writer.close()
    self.shards.append((self._path, self._records, self._bytes))
    self._writer, self._records, self._bytes = None, 0, 0

  def close(self) -> list[tuple[str, int, int]]:
    if self._writer is not None:
      self._close_shard()
    return self.shards

  def finish(self, folder: str, split: str) -> tfds.core.SplitInfo:
    """Closes the shards and makes them split `split` of the TFDS dataset in `folder`."""
    return name_split(folder, split, self.close())


def name_split(folder: str, split: str, parts) -> tfds.core.SplitInfo:
  """Moves written shards [(path, records, bytes)] to the files TFDS reads as split `split` in `folder`."""
  for i, (path, _, _) in enumerate(parts):
    os.replace(path, os.path.join(folder, f"{NAME}-{split}.array_record-{i:05d}-of-{len(parts):05d}"))
  return tfds.core.SplitInfo(name=split, shard_lengths=[r for _, r, _ in parts], num_bytes=sum(b for _, _, b in parts))


class ShardWriter:
  """Appends ids to records of RECORD_TOKENS in shards (RecordWriter), never holding more than one record."""

  def __init__(self, prefix: str, dtype):
    self.dtype = np.dtype(dtype)
    self._records = RecordWriter(prefix, features(dtype))
    self.num_tokens = 0
    self._pending = []

  @property
  def shards(self) -> list[tuple[str, int, int]]:
    return self._records.shards

  def write(self, ids: np.ndarray) -> None:
    ids = np.asarray(ids)
    if len(ids) and int(ids.max()) > np.iinfo(self.dtype).max:
      raise DataError(f"token id {int(ids.max())} does not fit the {self.dtype} the dataset stores")
    ids = ids.astype(self.dtype, copy=False)
    self.num_tokens += len(ids)
    pending = sum(map(len, self._pending))
    if pending + len(ids) < RECORD_TOKENS:
      self._pending.append(ids)
      return
    head = RECORD_TOKENS - pending
    self._record(np.concatenate([*self._pending, ids[:head]]))
    full = (len(ids) - head) // RECORD_TOKENS
    for r in range(full):
      self._record(ids[head + r * RECORD_TOKENS:head + (r + 1) * RECORD_TOKENS])
    self._pending = [ids[head + full * RECORD_TOKENS:].copy()]

  def _record(self, ids) -> None:
    self._records.write({"tokens": ids})

  def close(self) -> list[tuple[str, int, int]]:
    rest = np.concatenate(self._pending) if self._pending else np.zeros(0, self.dtype)
    if len(rest):
      self._record(rest)
    self._pending = []
    return self._records.close()


class Tokens:
  """A stored token stream as a read-only array: `tokens[a:b]` reads the records [a, b) overlaps.

  `read_record(i)` returns record i's ids. The records read last are kept, up to CACHE_BYTES (`cache`
  records): evaluation reads consecutive windows of one record, and a corpus that small is read once.
  Threads may share an instance.
  """

  def __init__(self, read_record, length: int, record_tokens: int, cache: int | None = None):
    self._read_record, self._length, self.record_tokens = read_record, int(length), record_tokens
    self._cache, self._lock = collections.OrderedDict(), threading.Lock()
    self._cache_size = CACHE_BYTES // (4 * record_tokens) if cache is None else cache

  def __len__(self) -> int:
    return self._length

  @property
  def shape(self):
    return (self._length,)

  def __getitem__(self, key) -> np.ndarray:
    if not isinstance(key, slice) or key.step not in (None, 1):
      raise TypeError("stored tokens are read by contiguous slices, tokens[a:b]")
    start, stop, _ = key.indices(self._length)
    if stop <= start:
      return np.zeros(0, np.int32)
    first, last = start // self.record_tokens, (stop - 1) // self.record_tokens
    parts = [self._record(r) for r in range(first, last + 1)]
    ids = parts[0] if len(parts) == 1 else np.concatenate(parts)
    offset = first * self.record_tokens
    return ids[start - offset:stop - offset].astype(np.int32)

  def _record(self, i: int) -> np.ndarray:
    with self._lock:
      if i in self._cache:
        self._cache.move_to_end(i)
        return self._cache[i]
    ids = self._read_record(i)
    with self._lock:
      self._cache[i] = ids
      while len(self._cache) > self._cache_size:
        self._cache.popitem(last=False)
    return ids


def shard_tokens(shards, num_tokens: int, dtype) -> Tokens:
  """The stream a ShardWriter wrote, readable before it becomes a TFDS dataset."""
  # "path[start:stop]" tells the data source each shard's length: counting them would open every file at once.
  source = array_record_data_source.ArrayRecordDataSource([f"{path}[0:{records}]" for path, records, _ in shards])
  decode = features(dtype).deserialize_example_np
  return Tokens(lambda i: decode(source[i])["tokens"], num_tokens, RECORD_TOKENS)


def split_tokens(builder, split: str) -> Tokens:
  """Split `split` of a prepared dataset, read through its TFDS data source."""
  source = builder.as_data_source(split=split)
  meta = builder.info.metadata

  def read(i):
    try:
      return source[i]["tokens"]
    except Exception as e:  # array_record raises its own types for damaged files.
      raise DataError(f"record {i} of split {split!r} in {builder.data_dir} is damaged ({type(e).__name__}); delete "
                      "that folder to prepare it again") from None
  return Tokens(read, meta["num_tokens"][split], meta["record_tokens"])


def carve(folder: str, stream: ShardWriter, splits: dict[str, tuple[int, int]]) -> list[tfds.core.SplitInfo]:
  """Cuts the written `stream` into contiguous splits {name: (start, stop)} as TFDS shards in `folder`.

  A stored shard that a split covers whole from an aligned start is renamed into it; the rest of the split
  is rewritten from the stream. The stream's shards are gone afterwards.
  """
  shards, size = stream.shards, SHARD_RECORDS * RECORD_TOKENS
  reader = shard_tokens(shards, stream.num_tokens, stream.dtype)
  plans = {}
  for name, (start, stop) in splits.items():
    moved, pos = [], start
    if start % size == 0:
      j = start // size
      while j < len(shards) and min((j + 1) * size, stream.num_tokens) <= stop:
        moved.append(shards[j])
        pos, j = min((j + 1) * size, stream.num_tokens), j + 1
    copy = ShardWriter(os.path.join(folder, f"copy-{name}"), stream.dtype)
    for a in range(pos, stop, 1 << 22):  # Bounded pieces: a split may be most of the corpus.
      copy.write(reader[a:min(a + (1 << 22), stop)])
    plans[name] = moved + copy.close()
  infos = [name_split(folder, name, parts) for name, parts in plans.items()]
  for path, _, _ in shards:
    if os.path.exists(path):
      os.remove(path)
  return infos


def write_metadata(folder: str, features_dict, splits: list[tfds.core.SplitInfo], metadata: dict,
                   description: str) -> None:
  tfds.folder_dataset.write_metadata(
      data_dir=folder, features=features_dict, split_infos=splits, check_data=False,
      filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", description=description,
      metadata=tfds.core.MetadataDict(metadata))
