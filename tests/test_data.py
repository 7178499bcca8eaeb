import os

import numpy as np
import pytest

from pretrain import data
from pretrain.data import batching, markov
from pretrain.errors import DataError
from tests.conftest import tiny_config, rows


def _text_config(path, **kw):
  overrides = {"data.name": "text", "data.path": path, **kw}
  return tiny_config(**overrides)


def test_char_builder_vocab_and_contiguous_split(tmp_path):
  text = "hello world, the quick brown fox\n" * 50
  f = tmp_path / "input.txt"
  f.write_text(text)
  ds = data.load(_text_config(f))
  assert ds.vocab == "".join(sorted(set(text)))
  n_train = int(len(text) * 0.9)
  assert ds.decode(ds.train.tokens[:]) == text[:n_train]
  assert ds.decode(ds.val.tokens[:]) == text[n_train:]


def test_byte_builder_and_directory_of_files(tmp_path):
  """Each file of a folder is a document and ends with the end-of-text id (256 for bytes)."""
  (tmp_path / "a.txt").write_bytes("ça va\n".encode() * 40)
  (tmp_path / "b.txt").write_bytes(b"\x00\xff binary ok\n" * 40)
  ds = data.load(_text_config(tmp_path, **{"data.tokenizer": "byte", "data.val_fraction": 0.25}))
  whole = np.concatenate([ds.train.tokens[:], ds.val.tokens[:]])
  a, b = (list((tmp_path / f).read_bytes()) for f in ("a.txt", "b.txt"))
  assert whole.tolist() == a + [256] + b + [256]
  assert ds.vocab_size == 257 and len(ds.val) == len(whole) - int(len(whole) * 0.75)
  assert ds.decode(whole).endswith("binary ok\n<|endoftext|>")


def test_missing_empty_and_undecodable_text(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    data.load(_text_config(tmp_path / "nope.txt"))
  (tmp_path / "empty.txt").write_text("")
  with pytest.raises(DataError, match="empty"):
    data.load(_text_config(tmp_path / "empty.txt"))
  (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00" * 100)
  with pytest.raises(DataError, match="tokenizer=byte"):
    data.load(_text_config(tmp_path / "bin.txt"))


def test_markov_metadata_entropy_matches_monte_carlo():
  sources = markov.make_sources(num_sources=4, vocab_size=8, branching=3, seed=0)
  assert np.allclose(sources.transitions_KxVxV.sum(-1), 1)
  assert np.allclose(np.einsum("kv,kvw->kw", sources.stationary_KxV, sources.transitions_KxVxV), sources.stationary_KxV)
  seq_len = 16
  x, k = markov.sample(sources, 20000, seq_len, seed=1)
  logp = np.log2(sources.stationary_KxV[k, x[:, 0]])
  logp += np.log2(sources.transitions_KxVxV[k[:, None], x[:, :-1], x[:, 1:]]).sum(1)
  empirical = -logp.mean() / seq_len
  exact = markov.sequence_entropy_bits_per_token(sources, seq_len)
  assert abs(empirical - exact) < 0.02 * exact


def test_best_possible_score_is_the_mixture_likelihood():
  """The posterior predictive, multiplied out, is the mixture (1/K) sum_k p_k(x): computed here directly.
  It is never worse than knowing the source by more than log2(K) bits per sequence."""
  sources = markov.make_sources(num_sources=5, vocab_size=8, branching=2, seed=3)
  seq_len = 12
  x, k = markov.sample(sources, 500, seq_len, seed=4)
  log_p_KxN = np.log(sources.stationary_KxV[:, x[:, 0]])
  log_p_KxN += np.log(sources.transitions_KxVxV[:, x[:, :-1], x[:, 1:]]).sum(-1)
  mixture_bits_N = -(np.logaddexp.reduce(log_p_KxN, axis=0) - np.log(5)) / np.log(2)
  best = markov.best_bits_per_token(sources, x)
  assert best == pytest.approx(mixture_bits_N.mean() / seq_len, rel=1e-9)
  true_source_bits_N = -log_p_KxN[k, np.arange(len(k))] / np.log(2)
  assert (mixture_bits_N <= true_source_bits_N + np.log2(5) + 1e-9).all()
  assert true_source_bits_N.mean() / seq_len < best


def test_markov_dataset_labels_bos_and_metadata():
  ds = data.load(tiny_config())
  m = tiny_config().data.markov
  assert rows(ds.train)["tokens"].shape == (m.num_train, m.seq_len + 1)
  assert (rows(ds.train)["tokens"][:, 0] == m.vocab_size).all()  # BOS
  assert ds.vocab_size == m.vocab_size + 1 and ds.num_classes == m.num_sources
  assert set(np.unique(rows(ds.train)["label"])) <= set(range(m.num_sources))
  assert 0 < ds.metadata["entropy_bits_per_token"] < np.log2(m.vocab_size)
  assert ds.metadata["source_id_bound_bits_per_token"] == pytest.approx(np.log2(m.num_sources) / m.seq_len)
  sources = markov.make_sources(m.num_sources, m.vocab_size, m.branching, m.seed)
  val_tokens = rows(ds.val)["tokens"][:, 1:]  # Without the BOS.
  assert ds.metadata["best_bits_per_token"] == pytest.approx(markov.best_bits_per_token(sources, val_tokens))


@pytest.mark.parametrize("kind", ["stream", "records"])
def test_train_batches_are_pure_and_split_across_processes(kind):
  split = (batching.TokenStream(np.arange(1000, dtype=np.int32)) if kind == "stream"
           else batching.Records({"tokens": np.arange(70 * 9, dtype=np.int32).reshape(70, 9)}))
  kw = dict(seed=3, batch_size=8, seq_len=8)
  a = batching.train_batch(split, 17, **kw)
  b = batching.train_batch(split, 17, **kw)
  assert all(np.array_equal(a[k], b[k]) for k in a)
  assert not np.array_equal(a["tokens"], batching.train_batch(split, 18, **kw)["tokens"])
  parts = [batching.train_batch(split, 17, process_index=p, process_count=4, **kw) for p in range(4)]
  assert np.array_equal(np.concatenate([p["tokens"] for p in parts]), a["tokens"])


def test_records_epochs_visit_every_example_once():
  split = batching.Records({"tokens": np.arange(20, dtype=np.int32)[:, None].repeat(3, 1)})
  seen = np.concatenate([batching.train_batch(split, s, seed=0, batch_size=5, seq_len=2)["tokens"][:, 0]
                         for s in range(4)])
  assert sorted(seen) == list(range(20))


@pytest.mark.parametrize("n_tokens, batch", [(101, 4), (64, 3), (1000, 7)])
def test_stream_eval_counts_every_target_once(n_tokens, batch):
  split = batching.TokenStream(np.arange(n_tokens, dtype=np.int32))
  counted = []
  for b in batching.eval_batches(split, batch_size=batch, seq_len=8):
    targets, weights = b["tokens"][:, 1:], b["token_mask"][:, 1:] * b["mask"][:, None]
    counted.extend(targets[weights > 0].tolist())
  assert sorted(counted) == list(range(1, n_tokens))


def test_records_eval_pads_last_batch():
  split = batching.Records({"tokens": np.arange(11 * 3, dtype=np.int32).reshape(11, 3)})
  batches = list(batching.eval_batches(split, batch_size=4, seq_len=2))
  assert len(batches) == 3 and [b["mask"].sum() for b in batches] == [4, 4, 3]
  assert sorted(np.concatenate([b["tokens"][b["mask"] > 0, 0] for b in batches])) == list(range(0, 33, 3))


def test_unprepared_catalog_dataset_offline_fails_fast(tmp_path):
  """No network and nothing prepared: one DataError within 5 s naming the dataset and manual_dir."""
  import time
  start = time.perf_counter()
  with pytest.raises(DataError) as err:
    data.load(tiny_config(**{"data.name": "tiny_shakespeare", "data.data_dir": tmp_path}))
  assert time.perf_counter() - start < 5
  message = str(err.value)
  assert "'tiny_shakespeare'" in message and "manual_dir" in message and "\n" not in message


def test_unknown_catalog_name_is_a_data_error(tmp_path):
  with pytest.raises(DataError, match="no_such_dataset_xyz"):
    data.load(tiny_config(**{"data.name": "no_such_dataset_xyz", "data.data_dir": tmp_path}))
