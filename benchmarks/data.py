"""Data at scale on this machine: preparation speed and memory against corpus size, and the loader.

  python -m benchmarks.data [--shared ../shared] [--sizes 0.5,3] [--bpe-gb 0.5] [--parquet-gb 0.3]

Writes corpora of tiny shakespeare's lines shuffled into documents of 20-400 lines (folders of 20 MB text
files; a JSON-lines file with a BPE tokenizer trained on a sample; Parquet shards) under TMPDIR, then for
each runs `python -m pretrain.prepare` and a 10-step `pretrain.main` on the prepared data (the
shakespeare_char:cpu model), under /usr/bin/time for peak RSS and wall time, against the same two commands
on tiny shakespeare itself. Last, the loader alone on one core: batches/s of `data.train_batch` at GPT-2
124M shapes (12 x 1024 tokens per device) and at the :cpu shape, without and with the prefetch thread,
after a warm-up pass.
Prints a markdown table; the temporary corpora are removed at the end.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def write_corpora(shakespeare: str, out: str, sizes, bpe_gb: float, parquet_gb: float) -> dict:
  lines = open(shakespeare, encoding="utf-8").read().split("\n")
  rng = np.random.default_rng(0)

  def doc():
    n = int(rng.integers(20, 400))
    start = int(rng.integers(0, len(lines) - n))
    return "\n".join(lines[start:start + n])
  paths = {}
  for gb in sizes:
    folder, total, i = os.path.join(out, f"text{gb}"), 0, 0
    os.makedirs(folder)
    while total < gb * 1e9:
      with open(os.path.join(folder, f"part{i:04d}.txt"), "w", encoding="utf-8") as f:
        size = 0
        while size < 20e6:
          d = doc() + "\n\n"
          f.write(d)
          size += len(d)
      total, i = total + size, i + 1
    paths[f"text {gb:g} GB"] = (folder, total)
  if bpe_gb:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    path, size = os.path.join(out, "corpus.jsonl"), 0
    with open(path, "w", encoding="utf-8") as f:
      while size < bpe_gb * 1e9:
        d = doc()
        f.write(json.dumps({"id": size, "text": d}) + "\n")
        size += len(d)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator([doc() for _ in range(20000)], trainers.BpeTrainer(vocab_size=8192,
                                                                               special_tokens=["<|endoftext|>"]))
    tok.save(os.path.join(out, "tokenizer.json"))
    paths[f"JSONL {bpe_gb:g} GB, BPE"] = (path, os.path.getsize(path))
  if parquet_gb:
    import pyarrow as pa
    import pyarrow.parquet as pq
    folder = os.path.join(out, "parquet")
    os.makedirs(folder)
    for j in range(3):
      texts, size = [], 0
      while size < parquet_gb * 1e9 / 3:
        texts.append(doc())
        size += len(texts[-1])
      pq.write_table(pa.table({"text": texts}), os.path.join(folder, f"train-{j:05d}-of-00003.parquet"))
    paths[f"Parquet {parquet_gb:g} GB, char"] = (folder, sum(os.path.getsize(os.path.join(folder, f))
                                                             for f in os.listdir(folder)))
  return paths


def timed(args, env) -> tuple[float, float]:
  """(wall seconds, peak RSS in GiB) of one command."""
  with tempfile.NamedTemporaryFile() as t:
    subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", t.name, sys.executable, *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, rss = open(t.name).read().split()[-2:]
  return float(wall), int(rss) / 2**20


def data_args(name, path, tmp):
  if name.startswith("JSONL"):
    return [f"--config.data.path={path}", "--config.data.tokenizer=file",
            f"--config.data.tokenizer_path={os.path.join(tmp, 'tokenizer.json')}"]
  return [f"--config.data.path={path}", f"--config.data.tokenizer={'char' if 'char' in name else 'byte'}"]


def loader_rates(config_args, batch_size, seq_len, steps=500) -> tuple[float, float]:
  """Batches/s of the training batches alone, on one core, after a warm-up pass (every shard's reader open,
  the page cache as a long run has it): without and with the prefetch thread."""
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  from pretrain import configlib, data
  config = configlib.load("configs/shakespeare_char.py:cpu", [tuple(a[len("--config."):].split("=", 1))
                                                              for a in config_args])
  split = data.load(config).train
  make = lambda s: data.train_batch(split, s, seed=0, batch_size=batch_size, seq_len=seq_len)
  rates = []
  for ahead in (0, 0, 2):  # The first pass warms up.
    batches = data.prefetched(make, range(steps), ahead)
    next(batches)
    start = time.perf_counter()
    for _ in range(steps - 1):
      next(batches)
    rates.append((steps - 1) / (time.perf_counter() - start))
  return rates[1], rates[2]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--shared", default="../shared")
  p.add_argument("--sizes", default="0.5,3", help="text corpus sizes in GB")
  p.add_argument("--bpe-gb", type=float, default=0.5)
  p.add_argument("--parquet-gb", type=float, default=0.3)
  opts = p.parse_args(argv)
  shakespeare = os.path.join(opts.shared, "data/tinyshakespeare/input.txt")
  tmp = tempfile.mkdtemp(prefix="bench-data-")
  try:
    env = {**os.environ, "PRETRAIN_DATA_DIR": os.path.join(tmp, "prepared")}
    corpora = {"tiny shakespeare, byte": (shakespeare, os.path.getsize(shakespeare)),
               **write_corpora(shakespeare, tmp, [float(s) for s in opts.sizes.split(",")], opts.bpe_gb,
                               opts.parquet_gb)}
    common = ["--config", "configs/shakespeare_char.py:cpu"]
    train = ["--config.train.steps=10", "--config.optim.decay_steps=10", "--config.train.log_every=10",
             "--config.eval.batches=2", "--config.train.checkpoint_every=1000"]
    rows = []
    for name, (path, size) in corpora.items():
      args = data_args(name, path, tmp)
      prep_s, prep_gib = timed(["-m", "pretrain.prepare", *common, *args], env)
      run_s, run_gib = timed(["-m", "pretrain.main", *common, *args, *train, "--workdir", os.path.join(tmp, name)], env)
      rows.append((name, size, prep_s, prep_gib, run_s, run_gib))
      print(f"{name}: prepare {prep_s:.1f} s {prep_gib:.2f} GiB, 10 steps {run_s:.1f} s {run_gib:.2f} GiB", flush=True)
    base_prep = rows[0][2]
    print("\n| corpus | input | prepare: wall | MB/s | peak RSS | prepared, 10 steps: wall | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for name, size, prep_s, prep_gib, run_s, run_gib in rows:
      rate = size / 1e6 / max(prep_s - base_prep, 1e-9) if name != rows[0][0] else float("nan")
      print(f"| {name} | {size / 1e6:,.0f} MB | {prep_s:.1f} s | {rate:.0f} | {prep_gib:.2f} GiB | {run_s:.1f} s | "
            f"{run_gib:.2f} GiB |")
    biggest = max((r for r in rows if r[0].startswith("text")), key=lambda r: r[1])
    args = data_args(biggest[0], corpora[biggest[0]][0], tmp)
    os.environ["PRETRAIN_DATA_DIR"] = env["PRETRAIN_DATA_DIR"]
    print(f"\nLoader alone on one core, {biggest[0]} prepared (batches/s; ms per batch):")
    print("| shape | no prefetch | prefetch thread |")
    print("|---|---|---|")
    for label, batch, seq in (("GPT-2 124M per device: 12 x 1024", 12, 1024), ("shakespeare_char:cpu: 12 x 64", 12, 64)):
      plain, ahead = loader_rates(args, batch, seq)
      print(f"| {label} | {plain:,.0f} ({1e3 / plain:.2f} ms) | {ahead:,.0f} ({1e3 / ahead:.2f} ms) |")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
