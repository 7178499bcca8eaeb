"""Data at any scale: every input kind, end-of-text tokens, streamed preparation in bounded memory, killed
preparations, per-process reads, one process vs two, and exact resume on prepared shards."""
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pretrain import data, finetune
from pretrain.data import batching, corpus, prepare, store, tokenizers
from pretrain.errors import CheckpointError, DataError
from tests.conftest import ROOT, read_metrics, run_main, tiny_config

DOCS = ["First document.\nIt has two lines.", "Second: ünïcode ✓", "third\n\nwith a blank line\n"]


def _config(path, **kw):
  return tiny_config(**{"data.name": "text", "data.path": path, **kw})


def _ids(ds):
  return np.concatenate([ds.train.tokens[:], ds.val.tokens[:]])


def _write_jsonl(path, docs, field="text", opener=open):
  with opener(path, "wt", encoding="utf-8") as f:
    for i, d in enumerate(docs):
      f.write(json.dumps({"id": i, field: d, "meta": {"x": [1, 2]}}) + "\n")


def _zst_opener(path, mode, encoding):
  import io
  import zstandard
  return io.TextIOWrapper(zstandard.ZstdCompressor().stream_writer(open(path, "wb")), encoding=encoding)


@pytest.mark.parametrize("kind", ["folder", "jsonl", "jsonl.gz", "jsonl.zst", "parquet", "parquet_folder"])
def test_every_input_kind_gives_its_documents_each_ended_by_end_of_text(tmp_path, kind):
  if kind == "folder":
    path = tmp_path / "docs"
    path.mkdir()
    for i, d in enumerate(DOCS):
      (path / f"{i:02d}.txt").write_text(d, encoding="utf-8")
  elif kind.startswith("jsonl"):
    path = tmp_path / f"docs.{kind}"
    _write_jsonl(path, DOCS, opener={"jsonl": open, "jsonl.gz": gzip.open, "jsonl.zst": _zst_opener}[kind])
  else:
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "parquet"
    path.mkdir()
    (path / "README.md").write_text("not a document")  # A Hugging Face export's card is not read.
    table = pa.table({"id": list(range(len(DOCS))), "text": DOCS})
    if kind == "parquet":
      pq.write_table(table, path / "train.parquet", row_group_size=2)
    else:
      pq.write_table(table.slice(0, 2), path / "train-00000-of-00002.parquet")
      pq.write_table(table.slice(2), path / "train-00001-of-00002.parquet")
  for tokenizer in ("byte", "char"):
    ds = data.load(_config(path, **{"data.tokenizer": tokenizer, "data.val_fraction": 0.2}))
    assert ds.decode(_ids(ds)) == "".join(d + tokenizers.END_OF_TEXT for d in DOCS)
    eot = ds.tokenizer.end_of_text
    assert eot == (256 if tokenizer == "byte" else len(ds.vocab)) and ds.vocab_size == eot + 1
    assert (_ids(ds) == eot).sum() == len(DOCS)
  assert set(ds.vocab) == set("".join(DOCS))  # Parsed text only: no JSON syntax, no other fields.


def test_one_text_file_is_one_document_without_end_of_text(tmp_path, monkeypatch):
  """Tiny shakespeare keeps nanoGPT's vocabulary and split exactly, in order across records and shards."""
  monkeypatch.setattr(store, "RECORD_TOKENS", 16)
  monkeypatch.setattr(store, "SHARD_RECORDS", 3)
  text = "".join(f"line {i}: to be, or not to be\n" for i in range(40))
  (tmp_path / "t.txt").write_text(text)
  ds = data.load(_config(tmp_path / "t.txt"))
  assert ds.tokenizer.end_of_text is None and ds.vocab == "".join(sorted(set(text)))
  assert ds.decode(ds.train.tokens[:]) == text[:int(len(text) * 0.9)]
  assert ds.decode(ds.val.tokens[:]) == text[int(len(text) * 0.9):]
  assert ds.decode(ds.train.tokens[100:200]) == text[100:200]
  assert ds.train.tokens[:].dtype == np.int32 and ds.metadata["documents"] == 1


def test_file_tokenizer_streams_long_documents_in_batches(tmp_path, monkeypatch, capsys):
  """Pieces and batches far smaller than the documents give the ids of encoding each document whole."""
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers
  rng = np.random.default_rng(0)
  words = ["alpha", "beta", "gamma", "delta", "  indented", "\n", "\n\n", "x" * 30]
  docs = ["".join(rng.choice(words, 3000)) for _ in range(4)]
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=300, special_tokens=[tokenizers.END_OF_TEXT]))
  tok.save(str(tmp_path / "tokenizer.json"))
  _write_jsonl(tmp_path / "docs.jsonl", docs[:2])
  for i, d in enumerate(docs[2:]):
    (tmp_path / f"long{i}.txt").write_text(d)
  monkeypatch.setattr(corpus, "BLOCK", 1000)
  monkeypatch.setattr(prepare, "BATCH_CHARS", 5000)
  monkeypatch.setattr(prepare, "PROGRESS_S", 0.0)  # A progress line for every piece.
  eot = tok.token_to_id(tokenizers.END_OF_TEXT)
  for path, expected in ((tmp_path / "docs.jsonl", docs[:2]), (tmp_path / "long0.txt", docs[2:3])):
    ds = data.load(_config(path, **{"data.tokenizer": "file", "data.tokenizer_path": tmp_path / "tokenizer.json"}))
    whole = [tok.encode(d).ids + ([eot] if len(expected) > 1 else []) for d in expected]
    assert _ids(ds).tolist() == sum(whole, [])
  progress = capsys.readouterr().err.splitlines()
  assert any(" MB/s | " in line and "tokens/s" in line and "eta" in line for line in progress)


def test_stored_stream_reads_only_the_records_a_window_needs(tmp_path, monkeypatch):
  monkeypatch.setattr(store, "RECORD_TOKENS", 64)
  monkeypatch.setattr(store, "SHARD_RECORDS", 4)
  writer = store.ShardWriter(str(tmp_path / "stream"), np.uint16)
  ids = np.random.default_rng(0).integers(0, 60000, 5000)
  for a in range(0, len(ids), 333):
    writer.write(ids[a:a + 333])
  writer.close()
  n_train = int(len(ids) * 0.9)
  infos = store.carve(str(tmp_path), writer, {"train": (0, n_train), "validation": (n_train, len(ids))})
  store.write_metadata(str(tmp_path), store.features(np.uint16), infos, {"num_tokens": {"train": n_train, "validation": len(ids) - n_train},
                                                          "record_tokens": 64}, "test")
  assert not any(f.startswith(("stream", "copy")) for f in os.listdir(tmp_path))
  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(str(tmp_path))
  train, val = store.split_tokens(builder, "train"), store.split_tokens(builder, "validation")
  assert np.array_equal(train[:], ids[:n_train]) and np.array_equal(val[:], ids[n_train:])
  read = []
  counted = store.Tokens(lambda i: (read.append(i), builder.as_data_source("train")[i]["tokens"])[1], n_train, 64, cache=0)
  split = batching.TokenStream(counted)
  kw = dict(seed=1, batch_size=8, seq_len=20)
  whole = batching.train_batch(split, 7, **kw)["tokens"]
  read.clear()
  parts = [batching.train_batch(split, 7, process_index=p, process_count=2, **kw)["tokens"] for p in range(2)]
  assert np.array_equal(np.concatenate(parts), whole)  # One process or two: the same global batch.
  assert len(read) <= 2 * 8  # Each row reads the one or two records its window overlaps, nothing else.
  read.clear()
  batching.train_batch(split, 7, process_index=1, process_count=2, **kw)
  assert len(read) <= 2 * 4  # A process reads only its own rows.


def test_bad_records_give_one_line_errors_naming_file_and_line(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "fine"}\n{"text": "oops",\n')
  with pytest.raises(DataError, match=r"bad.jsonl line 2 is not valid JSON"):
    data.load(_config(bad))
  (tmp_path / "field.jsonl").write_text('{"body": "x", "id": 1}\n')
  with pytest.raises(DataError, match=r"line 1 has no 'text' field \(it has: body, id\).*data.text_field"):
    data.load(_config(tmp_path / "field.jsonl"))
  (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"text": "abc"}\n' * 1000)[:-20])
  with pytest.raises(DataError, match="damaged or truncated"):
    data.load(_config(tmp_path / "cut.jsonl.gz"))
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table({"content": ["a"], "url": ["u"]}), tmp_path / "p.parquet")
  with pytest.raises(DataError, match=r"no column 'text' \(its columns: content, url\)"):
    data.load(_config(tmp_path / "p.parquet"))
  (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
  with pytest.raises(DataError, match="not a readable Parquet file"):
    data.load(_config(tmp_path / "junk.parquet"))
  (tmp_path / "empty.jsonl").write_text("\n\n")
  with pytest.raises(DataError, match="empty"):
    data.load(_config(tmp_path / "empty.jsonl", **{"data.tokenizer": "byte"}))
  assert not [f for f in os.listdir(os.environ["PRETRAIN_DATA_DIR"]) if ".partial-" in f]


def test_damaged_prepared_shards_are_one_line_errors(tmp_path):
  (tmp_path / "t.txt").write_text("some text to prepare\n" * 2000)
  config = _config(tmp_path / "t.txt", **{"data.data_dir": tmp_path / "data"})
  ds = data.load(config)
  folder = next(p for p in (tmp_path / "data").iterdir() if p.is_dir())
  shard = next(folder.glob("text-train.array_record-*"))
  shard.write_bytes(shard.read_bytes()[:len(shard.read_bytes()) // 2])
  with pytest.raises(DataError, match="delete that folder"):
    data.load(config)
  del ds


def _prepare(path, *extra, **popen):
  return [sys.executable, "-m", "pretrain.prepare", "--config", "configs/quickstart.py:tiny", "--config.data.name=text",
          f"--config.data.path={path}", *extra]


def _peak_rss_mib(args, env) -> float:
  """Peak resident memory of one child process, from its own rusage."""
  code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
          "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
  out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
  return int(out.stdout.split()[-1]) / 1024


def test_preparation_memory_does_not_grow_with_the_corpus(tmp_path):
  """Preparing 160 MB peaks within 48 MiB of preparing 16 MB (reading it whole would take hundreds more)."""
  line = "All the world's a stage, and all the men and women merely players. 0123456789\n"
  peaks = {}
  for mb in (16, 160):
    folder = tmp_path / f"c{mb}"
    folder.mkdir()
    for i in range(mb // 16):
      (folder / f"{i}.txt").write_text(line * (16_000_000 // len(line)))
    env = {**os.environ, "PRETRAIN_DATA_DIR": str(tmp_path / f"data{mb}")}
    peaks[mb] = _peak_rss_mib(_prepare(folder, "--config.data.tokenizer=char"), env)
  assert peaks[160] - peaks[16] < 48, peaks


def test_killed_preparation_is_redone_not_read(tmp_path):
  folder = tmp_path / "corpus"
  folder.mkdir()
  for i in range(12):
    (folder / f"{i}.txt").write_text(f"document {i} " * 800_000)
  env = {**os.environ, "PRETRAIN_DATA_DIR": str(tmp_path / "data")}
  proc = subprocess.Popen(_prepare(folder, "--config.data.tokenizer=byte"), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  partial = lambda: [f for f in os.listdir(tmp_path / "data")] if (tmp_path / "data").exists() else []
  while time.time() < deadline and not any(".partial-" in f and os.listdir(tmp_path / "data" / f) for f in partial()):
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert any(".partial-" in f for f in partial()), "the preparation finished before it could be killed"
  assert not [f for f in partial() if f.startswith("text-") and ".partial-" not in f and not f.endswith(".lock")]
  out = run_main("--config", "configs/quickstart.py:tiny", "--config.data.name=text", f"--config.data.path={folder}",
                 "--config.data.tokenizer=byte", module="pretrain.prepare", env=env)
  summary = json.loads(out.stdout.splitlines()[-1])
  assert summary["train"] + summary["validation"] == sum(len(f"document {i} ") * 800_000 + 1 for i in range(12))
  assert [f for f in partial() if ".partial-" in f] == []  # The abandoned folder is gone.


def test_fine_tuning_checks_the_end_of_text_id(tmp_path):
  from pretrain import configlib
  os.makedirs(tmp_path / "pre")
  (tmp_path / "pre" / "config.json").write_text(configlib.to_json(tiny_config()))
  with open(tmp_path / "pre" / "run.json", "w") as f:
    json.dump({"vocabulary": {"ids": "bytes", "end_of_text": None, "vocab_size": 256}}, f)
  finetune.check_vocabulary(str(tmp_path / "pre"), {"ids": "bytes", "end_of_text": None, "vocab_size": 256})
  with pytest.raises(CheckpointError, match="end-of-text id 256.*never saw"):
    finetune.check_vocabulary(str(tmp_path / "pre"), {"ids": "bytes", "end_of_text": 256, "vocab_size": 257})
  with open(tmp_path / "pre" / "run.json", "w") as f:
    json.dump({"vocabulary": {"ids": "bytes", "end_of_text": 256, "vocab_size": 257}}, f)
  finetune.check_vocabulary(str(tmp_path / "pre"), {"ids": "bytes", "end_of_text": None, "vocab_size": 256})
  config = finetune.resolve_config(tiny_config(**{"init.workdir": tmp_path / "pre"}))
  assert config.model.vocab_size == 257  # The backbone keeps its table, end-of-text row included.


TEXT_RUN = ["--config", "configs/quickstart.py:tiny", "--config.data.name=text", "--config.data.tokenizer=char",
            "--config.model.context=32", "--config.train.steps=30", "--config.train.checkpoint_every=10",
            "--config.train.eval_every=10"]


@pytest.fixture(scope="module")
def jsonl_corpus(tmp_path_factory):
  path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
  rng = np.random.default_rng(0)
  _write_jsonl(path, ["".join(rng.choice(list("abcdefgh \n"), int(rng.integers(50, 400)))) for _ in range(300)])
  return path


def test_resume_on_prepared_shards_is_bitwise_the_uninterrupted_run(tmp_path, jsonl_corpus):
  """Killed with batches prefetched ahead: the rerun reads exactly the batches the uninterrupted run read."""
  args = [*TEXT_RUN, f"--config.data.path={jsonl_corpus}"]
  run_main(*args, "--workdir", tmp_path / "full")
  proc = subprocess.Popen([sys.executable, "-m", "pretrain.main", *args, "--workdir", str(tmp_path / "part")],
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and not (tmp_path / "part" / "checkpoints" / "10").exists():
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -9 and (tmp_path / "part" / "checkpoints" / "10").exists()
  assert not (tmp_path / "part" / "checkpoints" / "30").exists(), "the kill landed after the last step"
  run_main(*args, "--workdir", tmp_path / "part")
  a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
  assert [(r["step"], r["split"], r["loss"]) for r in a] == [(r["step"], r["split"], r["loss"]) for r in b]


def test_two_processes_prepare_once_and_match_one_process(tmp_path, jsonl_corpus):
  """The corpus is unprepared: process 0 prepares it while process 1 waits; losses equal one process's."""
  env = {"PRETRAIN_DATA_DIR": str(tmp_path / "fresh")}
  args = [*TEXT_RUN, f"--config.data.path={jsonl_corpus}", "--config.train.batch_size=8"]
  out = run_main("--processes", "2", "--devices-per-process", "1", "--", *args, "--workdir", tmp_path / "two",
                 module="launch.multiprocess", env=env, timeout=600)
  assert (out.stdout + out.stderr).count("prepared ") == 1
  run_main(*args, "--workdir", tmp_path / "one", "--config.parallel.strategy=mesh",
           env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  a, b = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
  assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
  np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-5)
