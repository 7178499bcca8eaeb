"""Generation: the cached loop computes what the training forward does and continues prompts as Transformers does."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # torch and transformers come with the test extra (make test installs them).
import transformers

from pretrain import configlib, hf, sample
from pretrain.errors import ConfigError
from pretrain.models import gpt, lstm
from pretrain.models.gpt import GPTConfig
from tests.conftest import ROOT, run_main

torch.set_num_threads(1)  # Tiny models: one thread, leaving the other cores to the rest of the suite.
V = 50


def _noisy(params, scale, seed=1):
  """Random weights scaled up, so that logits are far from uniform and greedy choices far from ties."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda p: p + scale * rng.standard_normal(p.shape, np.float32), params)


def _model(family, position="learned"):
  tokens_1xT = jnp.zeros((1, 32), jnp.int32)
  if family == "lstm":
    model = lstm.LSTM(V, 32, 2)
  elif position == "llama":  # Grouped-query attention: the cache holds the 2 key/value heads of 4.
    model = gpt.GPT(GPTConfig(vocab_size=V, context=32, num_layers=2, num_heads=4, num_kv_heads=2, width=32,
                              mlp_width=48, norm="rmsnorm", activation="swiglu", position="rope", rope_theta=500.0,
                              qkv_bias=True, tie_embeddings=False))
  else:
    model = gpt.GPT(GPTConfig(vocab_size=V, context=32, num_layers=2, num_heads=2, width=32, bias=True,
                              position=position))
  return model, _noisy(model.init(jax.random.key(0), tokens_1xT)["params"], 1.0 if family == "lstm" else 0.3)


MODELS = ("gpt-learned", "gpt-rope", "gpt-llama", "lstm")


def _steps(model, params, family, total):
  return (gpt if family == "gpt" else lstm).generation_steps(model, params, total)


@pytest.mark.parametrize("name", MODELS)
def test_cached_logits_equal_uncached_at_every_position(name):
  family, _, position = name.partition("-")
  model, params = _model(family, position or "learned")
  tokens_BxT = jnp.asarray(np.random.default_rng(0).integers(0, V, (3, 24)), jnp.int32)
  full_BxTxV = model.apply({"params": params}, tokens_BxT)
  assert np.abs(full_BxTxV).max() > 3  # Far from uniform: the comparison below means something.
  prefill, step = _steps(model, params, family, 24)
  P = 5
  logits_BxV, state = jax.jit(prefill)(tokens_BxT[:, :P], jnp.ones((3, P), bool))
  cached = [logits_BxV]
  step = jax.jit(step)
  for t in range(P, 24):
    logits_BxV, state = step(tokens_BxT[:, t], state)
    cached.append(logits_BxV)
  np.testing.assert_allclose(np.stack(cached, axis=1), full_BxTxV[:, P - 1:], rtol=0, atol=2e-5)


@pytest.mark.parametrize("name", MODELS)
def test_batched_with_left_padding_equals_one_by_one(name):
  family, _, position = name.partition("-")
  model, params = _model(family, position or "learned")
  prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
  kwargs = dict(family=family, max_new_tokens=12, temperature=0)
  batched = sample.generate(model, params, prompts, **kwargs).tokens
  alone = [sample.generate(model, params, [p], **kwargs).tokens[0] for p in prompts]
  assert batched == alone
  assert len({tuple(row) for row in batched}) == 3
  # One by one is the plain forward over the growing sequence, argmax at its end (right padding of a causal
  # model's input changes nothing before it, and one window shape compiles once).
  forward = jax.jit(lambda tokens_1xT: model.apply({"params": params}, tokens_1xT))
  ids = list(prompts[1])
  for _ in range(12):
    logits_1xTxV = forward(jnp.asarray([ids + [0] * (32 - len(ids))], jnp.int32))
    ids.append(int(jnp.argmax(logits_1xTxV[0, len(ids) - 1])))
  assert batched[1] == ids[len(prompts[1]):]


def test_end_of_text_stops_a_row_and_the_loop():
  model, params = _model("gpt")
  greedy = sample.generate(model, params, [[1, 2, 3], [7]], max_new_tokens=12, temperature=0)
  end = greedy.tokens[0][4]
  first = greedy.tokens[0].index(end)
  out = sample.generate(model, params, [[1, 2, 3], [7]], max_new_tokens=12, temperature=0, end_id=end)
  assert out.tokens[0] == greedy.tokens[0][:first]
  other = greedy.tokens[1].index(end) if end in greedy.tokens[1] else 12
  assert out.tokens[1] == greedy.tokens[1][:other]
  assert out.count == first + 1 + min(other + 1, 12)


def _allowed(logits_V, top_k, top_p):
  """The reference: indices of the top_k largest, then the fewest of them whose probability reaches top_p."""
  order = np.argsort(-logits_V, kind="stable")[:top_k or len(logits_V)]
  probs = np.exp(logits_V[order] - logits_V[order].max())
  probs /= probs.sum()
  kept = int(np.sum(np.cumsum(probs) - probs < top_p))
  return set(order[:kept].tolist())


@pytest.mark.parametrize("top_k,top_p", [(5, 1.0), (0, 0.6), (8, 0.5), (1, 1.0)])
def test_top_k_and_top_p_never_emit_a_token_outside_the_allowed_set(top_k, top_p):
  logits_BxV = jnp.asarray(np.random.default_rng(2).standard_normal((4, V)) * 2, jnp.float32)
  draw = jax.jit(jax.vmap(lambda key: sample.pick(logits_BxV, key, 1.0, top_k, top_p)))
  tokens_NxB = np.asarray(draw(jax.random.split(jax.random.key(0), 2000)))
  for row in range(4):
    allowed = _allowed(np.asarray(logits_BxV[row]), top_k, top_p)
    assert set(tokens_NxB[:, row].tolist()) <= allowed
    assert len(set(tokens_NxB[:, row].tolist())) == len(allowed)  # Each allowed token does come up.


def _random_gpt2(directory, vocab_size, context, seed=0):
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=vocab_size, n_positions=context, n_embd=48, n_layer=2, n_head=4, bos_token_id=None,
      eos_token_id=None)).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.3)
  model.save_pretrained(directory)
  return model


def test_greedy_equals_transformers_generate(tmp_path):
  theirs = _random_gpt2(tmp_path / "hf", 61, 32)
  config = hf.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"))
  _, params, _ = hf.restore(str(tmp_path / "w"))
  prompts = [[3, 14, 15, 9, 2], [26], [53, 58, 9]]
  ours = sample.generate(hf.model_of(config), params, prompts, max_new_tokens=24, temperature=0).tokens
  for prompt, row in zip(prompts, ours):
    with torch.no_grad():
      want = theirs.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False, pad_token_id=0)
    assert row == want[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
  """A GPT-2 over a text's characters, imported as the 16-generate check does (configs/shakespeare_char.py:cpu)."""
  root = tmp_path_factory.mktemp("char_run")
  text = "to be or not to be, that is the question.\nwhether 'tis nobler in the mind to suffer\n" * 20
  (root / "t.txt").write_text(text)
  _random_gpt2(root / "hf", len(set(text)), 40)
  config = configlib.load(os.path.join(ROOT, "configs/shakespeare_char.py:cpu"), [("data.path", str(root / "t.txt"))])
  hf.import_hf(str(root / "hf"), str(root / "w"), config)
  return root


def test_command_line_samples_batches_and_reports_speed(char_run):
  (char_run / "prompts.txt").write_text("to be\nwhether 'tis\n")
  proc = run_main("--workdir", char_run / "w", "--prompts_file", char_run / "prompts.txt", "--num_samples", 2,
                  "--max_new_tokens", 20, "--top_k", 5, "--top_p", 0.9, "--format", "jsonl", "--stop", "q",
                  module="pretrain.sample")
  rows = [json.loads(line) for line in proc.stdout.splitlines()]
  assert [r["prompt"] for r in rows] == ["to be", "to be", "whether 'tis", "whether 'tis"]
  assert all("q" not in r["completion"] and len(r["completion"]) <= 20 for r in rows)
  assert "generated 80 tokens in " in proc.stderr and proc.stderr.rstrip().endswith("tokens/s)"), proc.stderr

  proc = run_main("--workdir", char_run / "w", "--prompt", "to be", "--max_new_tokens", 36, module="pretrain.sample",
                  check=False)
  assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
  assert "the prompt has 5 tokens and --max_new_tokens=36, 41 in all, more than model.context=40" in proc.stderr


def test_bert_is_refused_with_one_line(tmp_path):
  bert = configlib.load(os.path.join(ROOT, "configs/bert_shakespeare.py"))
  (tmp_path / "config.json").write_text(configlib.to_json(bert))
  proc = run_main("--workdir", tmp_path, "--prompt", "to be", module="pretrain.sample", check=False)
  assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
  assert "model.family=bert, which is not autoregressive" in proc.stderr
  with pytest.raises(ConfigError, match="not autoregressive"):
    sample.generate(None, None, [[1]], family="bert", max_new_tokens=1)
