"""The documents of a corpus, read one at a time in bounded pieces, whatever the input holds.

`data.path` may be a text file (one document), a folder of files, `.jsonl` / `.jsonl.gz` / `.jsonl.zst`
files of JSON records (one document each, its text in `data.text_field`), or `.parquet` files with a text
column (one document per row, read in row-group batches with pyarrow). A folder holding any JSON-lines or
Parquet files is read as those files only (a Hugging Face export's README.md is not text to train on);
otherwise each of its files is one text document. TFDS catalog splits are read the same way, one example
per document.

`Corpus.pieces()` yields (piece, ends_document) pairs: a text file arrives in blocks of about BLOCK bytes,
each cut after its last lone newline (or before its last lone space), where GPT-2-style pre-tokenizers split
anyway, so the pieces encode to the ids of the whole (tokenizers.safe_cut). Pieces are `str`, or raw `bytes`
with `binary=True` (the byte tokenizer, which takes any file). Nothing holds more than a few blocks or one
batch of records at a time; `bytes_done` / `total_bytes` measure progress through the input files.
"""
import codecs
import gzip
import hashlib
import io
import json
import os

import numpy as np

from pretrain.data.tokenizers import safe_cut
from pretrain.errors import DataError

BLOCK = 1 << 20  # Bytes of a text file per piece.
_PARQUET_ROWS = 1024  # Rows per pyarrow batch.
JSONL = (".jsonl", ".jsonl.gz", ".jsonl.zst")
PARQUET = (".parquet",)


def kind(path: str) -> str:
  name = path.lower()
  return "jsonl" if name.endswith(JSONL) else "parquet" if name.endswith(PARQUET) else "text"


def files_under(path: str) -> list[str] | None:
  """[path] for a file, a folder's files (hidden ones aside) in sorted order, None where nothing is."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    return None
  return sorted(os.path.join(d, f) for d, _, names in os.walk(path) for f in names if not f.startswith("."))


def input_files(path: str) -> list[str]:
  """The files `path` names, in sorted order: itself, or a folder's files of the kinds it is read as."""
  files = files_under(path)
  if files is None:
    raise DataError(f"data path {path!r} does not exist; set --config.data.path to a text, .jsonl or .parquet "
                    "file or a folder of them")
  if os.path.isfile(path):
    return files
  records = [f for f in files if kind(f) != "text"]
  if records or not files:
    files = records
  if not files:
    raise DataError(f"directory {path} has no files; point --config.data.path at a text file or a folder of them")
  return files


def fingerprint(files) -> str:
  """Identifies the content cheaply: path, size and modification time of every file."""
  stats = [(os.path.realpath(f), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]
  return hashlib.sha256(repr(stats).encode()).hexdigest()[:16]


class Corpus:
  """The documents under a data path (see the module docstring)."""

  def __init__(self, path: str, text_field: str = "text", binary: bool = False):
    self.path, self.text_field, self.binary = path, text_field, binary
    self.files = input_files(path)
    self.total_bytes = sum(os.path.getsize(f) for f in self.files)
    # One plain-text file is one document: there is no boundary in it to mark.
    self.single_document = os.path.isfile(path) and kind(path) == "text"
    self.bytes_done = 0

  def pieces(self):
    self.bytes_done = 0
    for f in self.files:
      before = self.bytes_done
      reader = {"text": self._text, "jsonl": self._jsonl, "parquet": self._parquet}[kind(f)]
      yield from reader(f, lambda done, before=before: setattr(self, "bytes_done", before + done))
      self.bytes_done = before + os.path.getsize(f)

  def _text(self, path, progress):
    if not os.path.getsize(path):
      return
    with open(path, "rb") as f:
      if self.binary:
        while block := f.read(BLOCK):
          progress(f.tell())
          yield block, False
        yield b"", True
        return
      decoder, carry = codecs.getincrementaldecoder("utf-8")(), ""
      offset = 0
      while True:
        block = f.read(BLOCK)
        try:
          text = carry + decoder.decode(block, final=not block)
        except UnicodeDecodeError as e:
          raise DataError(f"{path} is not UTF-8 ({e.reason} at byte {offset + e.start}); use "
                          "--config.data.tokenizer=byte for arbitrary bytes") from None
        offset += len(block)
        progress(offset)
        if not block:
          yield text, True
          return
        cut = safe_cut(text)
        if cut is None and len(text) < 4 * BLOCK:  # No split point yet: read on (a bounded amount).
          carry = text
          continue
        cut = cut or len(text)
        carry = text[cut:]
        yield text[:cut], False

  def _jsonl(self, path, progress):
    with open(path, "rb") as raw:
      for number, line in _numbered_lines(path, raw):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except ValueError as e:
          raise DataError(f"{path} line {number} is not valid JSON ({e}); fix or remove that line") from None
        text = self._field(record, f"{path} line {number}")
        if text:
          yield text, True
        if number % 256 == 0:
          progress(raw.tell())

  def _parquet(self, path, progress):
    import pyarrow.parquet as pq
    try:
      f = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)  # Streams a row group's pages.
    except Exception as e:  # pyarrow raises ArrowInvalid and OSError for damaged files.
      raise DataError(f"{path} is not a readable Parquet file ({str(e).splitlines()[0]}); replace it") from None
    columns = f.schema_arrow.names
    if self.text_field not in columns:
      raise DataError(f"{path} has no column {self.text_field!r} (its columns: {', '.join(columns)}); set "
                      f"--config.data.text_field to the one holding the text")
    size, groups = os.path.getsize(path), max(f.num_row_groups, 1)
    try:
      for group in range(f.num_row_groups):
        for batch in f.iter_batches(batch_size=_PARQUET_ROWS, row_groups=[group], columns=[self.text_field]):
          for text in batch.column(0).to_pylist():
            if text:
              yield self.text_of(text, f"{path} column {self.text_field!r}"), True
        progress(size * (group + 1) // groups)
    except DataError:
      raise
    except Exception as e:
      raise DataError(f"{path} is damaged ({str(e).splitlines()[0]}); replace it") from None

  def _field(self, record, where):
    if not isinstance(record, dict) or self.text_field not in record:
      keys = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
      raise DataError(f"{where} has no {self.text_field!r} field (it has: {keys}); set --config.data.text_field "
                      "to the one holding the text")
    return self.text_of(record[self.text_field], f"{where}, field {self.text_field!r},")

  def text_of(self, value, where):
    """A record's text as this corpus yields it: str, or bytes when binary."""
    if isinstance(value, bytes) and not self.binary:
      try:
        value = value.decode("utf-8")
      except UnicodeDecodeError as e:
        raise DataError(f"{where} is not UTF-8 ({e.reason}); use --config.data.tokenizer=byte") from None
    elif not isinstance(value, (str, bytes)):
      raise DataError(f"{where} holds a {type(value).__name__}, not text; set --config.data.text_field")
    return value.encode("utf-8") if self.binary and isinstance(value, str) else value


class TFDSCorpus(Corpus):
  """One split of a TFDS dataset (a pretrain.data Records of its rows), one document per example."""

  def __init__(self, records, name: str, text_field: str = "text", binary: bool = False):
    self.path, self.text_field, self.binary = name, text_field, binary
    self.records, self.files, self.single_document = records, [], False
    self.total_bytes, self.bytes_done = len(records), 0  # Progress counts examples here.

  def pieces(self):
    for start in range(0, len(self.records), _PARQUET_ROWS):
      stop = min(start + _PARQUET_ROWS, len(self.records))
      for value in self.records.read(np.arange(start, stop))[self.text_field]:
        text = self.text_of(value, f"{self.path} example")
        if text:
          yield text, True
      self.bytes_done = stop


def _numbered_lines(path, raw):
  """(line number, line) of a JSON-lines file, decompressing .gz and .zst; damage is one DataError."""
  name = path.lower()
  try:
    if name.endswith(".gz"):
      lines = io.BufferedReader(gzip.GzipFile(fileobj=raw))
    elif name.endswith(".zst"):
      import zstandard
      lines = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
    else:
      lines = raw
    yield from enumerate(lines, 1)
  except Exception as e:  # gzip's BadGzipFile / EOFError, zstandard's ZstdError, a failing disk.
    raise DataError(f"{path} is damaged or truncated ({e}); replace it") from None
