"""Data mixtures (data.mixture) and documents that never see each other (data.document_mask)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import read_metrics, run_main
from pretrain.data import Mixture, TokenStream, train_batch
from pretrain.models import gpt, positions

END = 9  # The end-of-text id of the toy streams below.


def _mixture(weights=(0.7, 0.2, 0.1)):
  # Source s's tokens are all s, so a window says which source it came from.
  streams = tuple(TokenStream(np.full(1000, s, np.int32)) for s in range(len(weights)))
  return Mixture(tuple("abc"[:len(weights)]), streams, tuple(weights))


def test_batches_hold_each_sources_share_and_count_it_exactly():
  mix, seen = _mixture(), np.zeros(3)
  for step in range(50):
    tokens = train_batch(mix, step, seed=0, batch_size=20, seq_len=8)["tokens"]
    seen += np.bincount(tokens[:, 0], minlength=3)
    assert np.all(np.abs(np.bincount(tokens[:, 0], minlength=3) - np.array([0.7, 0.2, 0.1]) * 20) < 1 + 1e-9)
    np.testing.assert_array_equal(mix.rows_before((step + 1) * 20), seen)
  assert mix.tokens_given(50, 20, 8) == {"tokens/a": 5600, "tokens/b": 1600, "tokens/c": 800}


def test_batches_are_pure_functions_of_seed_step_and_split_over_processes_the_same():
  mix = Mixture(("a", "b"), (TokenStream(np.arange(5000) % 7), TokenStream(np.arange(5000) % 5 + 7)), (0.6, 0.4))
  one = train_batch(mix, 3, seed=1, batch_size=10, seq_len=16)
  again = train_batch(mix, 3, seed=1, batch_size=10, seq_len=16)
  halves = [train_batch(mix, 3, seed=1, batch_size=10, seq_len=16, process_index=i, process_count=2) for i in (0, 1)]
  np.testing.assert_array_equal(again["tokens"], one["tokens"])
  np.testing.assert_array_equal(np.concatenate([h["tokens"] for h in halves]), one["tokens"])
  assert not np.array_equal(train_batch(mix, 4, seed=1, batch_size=10, seq_len=16)["tokens"], one["tokens"])


def test_segment_ids_mark_documents_and_no_target_crosses_a_boundary():
  stream = TokenStream(np.array([1, 2, END, 3, 4, 5, END, 6, 7, 8], np.int32), document_end=END)
  batch = train_batch(stream, 0, seed=0, batch_size=1, seq_len=9)
  np.testing.assert_array_equal(batch["segment_ids"][0], [0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
  # Token 3 opens a document: nothing before it may predict it; the end-of-text itself is predicted.
  np.testing.assert_array_equal(batch["token_mask"][0], [1, 1, 1, 0, 1, 1, 1, 0, 1, 1])


def _model(position):
  return gpt.GPT(gpt.GPTConfig(vocab_size=16, context=12, num_layers=2, num_heads=2, width=16, position=position))


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_a_documents_logits_do_not_depend_on_the_one_before(position):
  model = _model(position)
  doc_b = jnp.array([3, 4, 5, 6, 7], jnp.int32)
  rows = [jnp.concatenate([jnp.array(a, jnp.int32), doc_b]) for a in ([1, 2, END], [8, 1, 2, 1, 1, 2, END])]
  params = model.init(jax.random.key(0), rows[1][None])
  logits_b = []
  for tokens in rows:
    segments = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(tokens[:-1] == END)])
    logits = model.apply(params, tokens[None], segment_ids_BxT=segments[None])[0]
    logits_b.append(logits[-len(doc_b):])
  alone = model.apply(params, doc_b[None])[0]  # Document B at the start of a row, unmasked.
  assert float(jnp.abs(logits_b[0] - logits_b[1]).max()) <= 1e-6
  assert float(jnp.abs(logits_b[0] - alone).max()) <= 1e-6  # Its positions restart at 0.


def test_positions_restart_at_each_document():
  segments = jnp.array([[0, 0, 0, 1, 1, 2, 2, 2, 2]])
  np.testing.assert_array_equal(positions.segment_positions(segments)[0], [0, 1, 2, 0, 1, 0, 1, 2, 3])


def test_masked_tokens_get_no_gradient():
  """A target with token_mask 0 adds nothing to the gradient: the last token is a target only (never an input),
  so changing it changes the gradient when it counts and leaves it bit-equal when masked."""
  from pretrain.objectives import next_token
  model = _model("rope")
  tokens = jnp.array([[1, 2, END, 3, 4, 5, 6]], jnp.int32)
  params = model.init(jax.random.key(0), tokens[:, :-1])

  def grads(last, weight):
    batch = {"tokens": tokens.at[0, -1].set(last), "mask": jnp.ones(1),
             "token_mask": jnp.array([[1, 1, 1, 0, 1, 1, weight]], jnp.float32),
             "segment_ids": jnp.array([[0, 0, 0, 1, 1, 1, 1]])}
    loss = lambda p: next_token.loss(model, p, batch, train=False, rng=None)[0]["loss_sum"]
    return jax.tree_util.tree_leaves(jax.grad(loss)(params))

  for x, y in zip(grads(6, 0.0), grads(11, 0.0)):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(grads(6, 1.0), grads(11, 1.0)))


def _text_folders(root):
  rng = np.random.default_rng(0)
  for name, letters in (("a", "abcdefghijklm"), ("b", "nopqrstuvwxyz")):
    os.makedirs(root / name)
    for part in range(2):
      words = ["".join(rng.choice(list(letters), size=rng.integers(2, 8))) for _ in range(3000)]
      (root / name / f"part{part}.txt").write_text(" ".join(words))
  return root


def _mixture_run(root, workdir, steps, *more):
  return run_main("--config", "configs/quickstart.py", "--config.data.name=text", "--config.data.tokenizer=byte",
                  "--config.model.context=32", "--config.model.num_layers=1", "--config.model.width=32",
                  f"--config.data.mixture=(\"a:path={root}/a,weight=3\", \"b:path={root}/b,weight=1\")",
                  "--config.train.batch_size=8", "--config.optim.decay_steps=40", f"--config.train.steps={steps}",
                  "--config.train.log_every=10", "--config.train.eval_every=20", "--config.train.checkpoint_every=20",
                  "--config.eval.batches=2", *more, "--workdir", workdir)


def test_a_mixture_trains_counts_each_source_scores_each_and_resumes_exactly(tmp_path):
  root = _text_folders(tmp_path)
  _mixture_run(root, tmp_path / "whole", 40)
  _mixture_run(root, tmp_path / "parts", 20)
  _mixture_run(root, tmp_path / "parts", 40)
  rows = read_metrics(tmp_path / "whole")
  last = [r for r in rows if r["split"] == "train"][-1]
  assert (last["tokens/a"], last["tokens/b"]) == (40 * 6 * 32, 40 * 2 * 32)
  assert {r["split"] for r in rows} >= {"train", "val", "a", "b"}
  keep = lambda rs: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "model_flops_per_s",
                      "model_flops_per_s_per_device", "seconds")} for r in rs if r["split"] != "events"]
  assert keep(read_metrics(tmp_path / "parts")) == keep(rows)


def test_sources_with_other_vocabularies_are_refused_in_one_line(tmp_path):
  root = _text_folders(tmp_path)
  proc = run_main("--config", "configs/quickstart.py", "--config.data.name=text", "--config.data.tokenizer=char",
                  f"--config.data.mixture=(\"a:path={root}/a,weight=1\", \"b:path={root}/b,weight=1\")",
                  "--workdir", tmp_path / "run", check=False)
  assert proc.returncode != 0
  assert "data.mixture 'b': its token ids mean other symbols" in proc.stderr.strip().splitlines()[-1]


def test_document_masking_gives_one_run_under_every_strategy(tmp_path):
  docs = tmp_path / "docs.jsonl"
  docs.write_text("".join(json.dumps({"text": f"doc {i}: " + "ab" * (i % 7)}) + "\n" for i in range(400)))
  losses = {}
  for strategy in ("single", "pmap", "mesh"):
    run_main("--config", "configs/quickstart.py:tiny", "--config.data.name=text", "--config.data.tokenizer=byte",
             f"--config.data.path={docs}", "--config.data.document_mask=true", f"--config.parallel.strategy={strategy}",
             "--config.model.context=32", "--workdir", tmp_path / strategy)
    losses[strategy] = read_metrics(tmp_path / strategy, "val")[-1]["loss"]
  assert np.isfinite(losses["single"])
  for strategy in ("pmap", "mesh"):
    assert abs(losses[strategy] - losses["single"]) <= 1e-5 * abs(losses["single"]), losses
