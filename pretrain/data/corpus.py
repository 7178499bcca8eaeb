"""The documents of a corpus, read one at a time in bounded pieces, whatever the input holds.

`data.path` may be a text file (one document), a folder of files, `.jsonl` / `.jsonl.gz` / `.jsonl.zst`
files of JSON records (one document each, its text in `data.text_field`), `.csv` / `.tsv` files (a header
row names the columns; quoted fields may hold newlines; `.gz` / `.zst` too) or `.parquet` files with a text
column (one document per row, read in row-group batches with pyarrow). A folder holding any of these record
files is read as those files only (a Hugging Face export's README.md is not text to train on); otherwise each
of its files is one text document. TFDS catalog splits are read the same way, one example per document.

`Corpus.pieces()` yields (piece, ends_document) pairs: a text file arrives in blocks of about BLOCK bytes,
each cut after its last lone newline (or before its last lone space), where GPT-2-style pre-tokenizers split
anyway, so the pieces encode to the ids of the whole (tokenizers.safe_cut). `Corpus.records(label_field)`
yields whole labeled texts instead: (text, label, where) per record, or per file of a folder whose subfolders
are the classes (label_field="subfolder"). Pieces are `str`, or raw `bytes` with `binary=True` (the byte
tokenizer, which takes any file as it is); text that is not UTF-8 follows `decode_errors` ("strict": one
DataError naming the file and byte offset; "replace": U+FFFD). Nothing holds more than a few blocks, one
record or one batch of rows at a time; `bytes_done` / `total_bytes` measure progress through the input files.
"""
import codecs
import csv
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
CSV = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".csv.zst", ".tsv.zst")
PARQUET = (".parquet",)
SUBFOLDER = "subfolder"  # data.label_field value: a folder's subfolders are the classes.
DECODE_ERRORS = ("strict", "replace")
csv.field_size_limit(1 << 30)  # An e-mail or an article is one field; the default limit is 128 KiB.


def kind(path: str) -> str:
  name = path.lower()
  return ("jsonl" if name.endswith(JSONL) else "csv" if name.endswith(CSV) else
          "parquet" if name.endswith(PARQUET) else "text")


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
    raise DataError(f"data path {path!r} does not exist; set --config.data.path to a text, .jsonl, .csv or "
                    ".parquet file or a folder of them")
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


def decode(data: bytes, errors: str, where: str, offset: int = 0) -> str:
  """UTF-8 text of `data` under the decode_errors policy; strict failures name `where` and the byte offset."""
  try:
    return data.decode("utf-8", errors)
  except UnicodeDecodeError as e:
    raise DataError(f"{where} is not UTF-8 ({e.reason} at byte {offset + e.start}); set "
                    "--config.data.decode_errors=replace to read it with U+FFFD, or --config.data.tokenizer=byte "
                    "to keep its bytes") from None


class Corpus:
  """The documents under a data path (see the module docstring)."""

  def __init__(self, path: str, text_field: str = "text", binary: bool = False, decode_errors: str = "strict"):
    if decode_errors not in DECODE_ERRORS:
      raise DataError(f"data.decode_errors={decode_errors!r} is not one of {DECODE_ERRORS}")
    self.path, self.text_field, self.binary, self.errors = path, text_field, binary, decode_errors
    self.files = input_files(path)
    self.total_bytes = sum(os.path.getsize(f) for f in self.files)
    # One plain-text file is one document: there is no boundary in it to mark.
    self.single_document = os.path.isfile(path) and kind(path) == "text"
    self.bytes_done = 0

  def pieces(self):
    for f, progress in self._each_file():
      if kind(f) == "text":
        yield from self._text(f, progress)
      else:
        for record, where in self._rows(f, progress, (self.text_field,)):
          text = self._field(record, self.text_field, where)
          if text:
            yield text, True

  def records(self, label_field: str):
    """(text, label, where) of every record: the label as the record holds it (str or int), or the name of the
    subfolder holding the file. Texts are whole, str or (binary) bytes."""
    if label_field == SUBFOLDER:
      if not os.path.isdir(self.path):
        raise DataError(f"data.label_field=subfolder needs a folder with one subfolder per class, and {self.path} is "
                        "a file; point --config.data.path at the folder, or name the label field")
      for f, progress in self._each_file():
        label = os.path.relpath(f, self.path).split(os.sep)[0]
        if label == os.path.basename(f):
          raise DataError(f"{f} is not in a class subfolder of {self.path}; with data.label_field=subfolder every "
                          "file sits in the subfolder named after its class")
        with open(f, "rb") as handle:
          raw = handle.read()
        yield raw if self.binary else decode(raw, self.errors, f), label, f
        progress(len(raw))
      return
    for f, progress in self._each_file():
      if kind(f) == "text":
        raise DataError(f"{f} is a plain text file, which holds no labels; with data.label_field={label_field} give "
                        ".jsonl, .csv/.tsv or .parquet records, or a folder of class subfolders "
                        "(--config.data.label_field=subfolder)")
      for record, where in self._rows(f, progress, (self.text_field, label_field)):
        yield self._field(record, self.text_field, where), self._label(record, label_field, where), where

  def _each_file(self):
    """(file, progress(bytes done in it)) in order, keeping bytes_done."""
    self.bytes_done = 0
    for f in self.files:
      before = self.bytes_done
      yield f, lambda done, before=before: setattr(self, "bytes_done", before + done)
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
      decoder, carry = codecs.getincrementaldecoder("utf-8")(self.errors), ""
      offset = 0
      while True:
        block = f.read(BLOCK)
        try:
          text = carry + decoder.decode(block, final=not block)
        except UnicodeDecodeError as e:
          decode(block, "strict", path, offset)  # Raises, naming the offset of the bad byte in the file.
          raise DataError(f"{path} is not UTF-8 ({e.reason}); set --config.data.decode_errors=replace") from None
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

  def _rows(self, path, progress, columns):
    """(record dict, where) of a JSON-lines, CSV or Parquet file."""
    if kind(path) == "parquet":
      yield from self._parquet(path, progress, columns)
      return
    with open(path, "rb") as raw:
      lines = _numbered_lines(path, raw)
      rows = self._jsonl(path, lines) if kind(path) == "jsonl" else self._csv(path, lines)
      for i, (record, where) in enumerate(rows, 1):
        yield record, where
        if i % 256 == 0:
          progress(raw.tell())

  def _line_text(self, line: bytes, where: str) -> str:
    # Binary corpora keep undecodable bytes as surrogates, which text_of turns back into the same bytes.
    return line.decode("utf-8", "surrogateescape") if self.binary else decode(line, self.errors, where)

  def _jsonl(self, path, lines):
    for number, line in lines:
      if not line.strip():
        continue
      try:
        record = json.loads(self._line_text(line, f"{path} line {number}"))
      except ValueError as e:
        raise DataError(f"{path} line {number} is not valid JSON ({e}); fix or remove that line") from None
      yield record, f"{path} line {number}"

  def _csv(self, path, lines):
    """CSV (or TSV, by extension) rows as dicts keyed by the header row."""
    line_of = {}

    def text_lines():
      for number, line in lines:
        line_of["now"] = number
        yield self._line_text(line, f"{path} line {number}")
    delimiter = "\t" if ".tsv" in path.lower() else ","
    try:
      reader = csv.reader(text_lines(), delimiter=delimiter)
      header = next(reader, None)
      if header is None:
        return
      for row in reader:
        where = f"{path} record ending on line {line_of['now']}"
        if not row:
          continue
        if len(row) != len(header):
          raise DataError(f"{where} has {len(row)} fields, its header {len(header)}; fix that row (quote fields "
                          "holding the delimiter)")
        yield dict(zip(header, row)), where
    except csv.Error as e:
      raise DataError(f"{path} line {line_of.get('now', 1)} is not valid CSV ({e}); fix that line") from None

  def _parquet(self, path, progress, columns):
    import pyarrow.parquet as pq
    try:
      f = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)  # Streams a row group's pages.
    except Exception as e:  # pyarrow raises ArrowInvalid and OSError for damaged files.
      raise DataError(f"{path} is not a readable Parquet file ({str(e).splitlines()[0]}); replace it") from None
    names = f.schema_arrow.names
    for column in columns:
      if column not in names:
        raise DataError(f"{path} has no column {column!r} (its columns: {', '.join(names)}); set "
                        f"--config.data.{'text' if column == columns[0] else 'label'}_field to the one you mean")
    size, groups = os.path.getsize(path), max(f.num_row_groups, 1)
    row = 0
    try:
      for group in range(f.num_row_groups):
        for batch in f.iter_batches(batch_size=_PARQUET_ROWS, row_groups=[group], columns=list(columns)):
          values = [batch.column(c).to_pylist() for c in range(len(columns))]
          for record in zip(*values):
            row += 1
            yield dict(zip(columns, record)), f"{path} row {row}"
        progress(size * (group + 1) // groups)
    except DataError:
      raise
    except Exception as e:
      raise DataError(f"{path} is damaged ({str(e).splitlines()[0]}); replace it") from None

  def _field(self, record, field, where):
    """The text a record keeps in `field` (None: no text, skipped by pieces(), refused by records())."""
    if not isinstance(record, dict) or field not in record:
      keys = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
      raise DataError(f"{where} has no {field!r} field (it has: {keys}); set --config.data.text_field "
                      "to the one holding the text")
    return self.text_of(record[field], f"{where}, field {field!r},")

  def _label(self, record, field, where):
    value = record.get(field) if isinstance(record, dict) else None
    if value is None or value == "":
      keys = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
      raise DataError(f"{where} has no label in {field!r} (it has: {keys}); give every record a label or set "
                      "--config.data.label_field to the field holding them")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
      raise DataError(f"{where}: label {value!r} in {field!r} is a {type(value).__name__}; labels are strings or "
                      "integers")
    return value

  def text_of(self, value, where):
    """A record's text as this corpus yields it: str, or bytes when binary."""
    if value is None:
      return None
    if isinstance(value, bytes) and not self.binary:
      value = decode(value, self.errors, where)
    elif not isinstance(value, (str, bytes)):
      raise DataError(f"{where} holds a {type(value).__name__}, not text; set --config.data.text_field")
    return value.encode("utf-8", "surrogateescape") if self.binary and isinstance(value, str) else value


class TFDSCorpus(Corpus):
  """One split of a TFDS dataset (a pretrain.data Records of its rows), one document per example."""

  def __init__(self, rows, name: str, text_field: str = "text", binary: bool = False):
    self.path, self.text_field, self.binary, self.errors = name, text_field, binary, "strict"
    self.rows, self.files, self.single_document = rows, [], False
    self.total_bytes, self.bytes_done = len(rows), 0  # Progress counts examples here.

  def _batches(self):
    for start in range(0, len(self.rows), _PARQUET_ROWS):
      stop = min(start + _PARQUET_ROWS, len(self.rows))
      yield start, self.rows.read(np.arange(start, stop))
      self.bytes_done = stop

  def pieces(self):
    for _, batch in self._batches():
      for value in batch[self.text_field]:
        text = self.text_of(value, f"{self.path} example")
        if text:
          yield text, True

  def records(self, label_field: str):
    for start, batch in self._batches():
      for i, (value, label) in enumerate(zip(batch[self.text_field], batch[label_field])):
        where = f"{self.path} example {start + i}"
        yield self.text_of(value, where), int(label), where


def _numbered_lines(path, raw):
  """(line number, line) of a JSON-lines or CSV file, decompressing .gz and .zst; damage is one DataError."""
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
