"""Hugging Face GPT-2 import/export and file tokenizers, offline: every GPT-2 here is built locally."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
import torch  # torch and transformers come with the test extra (make test installs them).
import transformers

from pretrain import configlib, data, hf
from pretrain.hf import check, gpt2
from pretrain.trainer import run_dir
from pretrain.errors import CheckpointError, ConfigError
from tests.conftest import ROOT, run_main

torch.set_num_threads(1)  # Tiny models: one thread, leaving the other cores to the rest of the suite.
WORDS = ("the cat dog sat ran on a mat log big small red and then it saw was here there quick slow fox "
         "jumped over under by with king queen said to me you").split()


def _corpus(n_lines=1500, seed=0) -> str:
  """Sentences from a sparse word-level Markov chain: learnable in a few hundred steps."""
  rng = np.random.default_rng(seed)
  nexts = {w: rng.choice(WORDS, 3, replace=False) for w in WORDS}
  lines = []
  for _ in range(n_lines):
    w = rng.choice(WORDS)
    words = [w]
    for _ in range(rng.integers(4, 12)):
      w = rng.choice(nexts[w])
      words.append(w)
    lines.append(" ".join(words).capitalize() + ".")
  return "\n".join(lines) + "\n"


def _bpe(text, vocab_size):
  bpe = tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator([text], vocab_size=vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"],
                          show_progress=False)
  return bpe


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A text file and a BPE tokenizer trained on it, saved both ways: tokenizer.json, vocab.json + merges.txt."""
  root = tmp_path_factory.mktemp("corpus")
  text = _corpus()
  (root / "text.txt").write_text(text)
  bpe = _bpe(text, 300)
  bpe.save(str(root / "tokenizer.json"))
  (root / "gpt2_tokenizer").mkdir()
  bpe.save_model(str(root / "gpt2_tokenizer"))
  return {"root": root, "text": text, "path": str(root / "text.txt"), "json": str(root / "tokenizer.json"),
          "gpt2": str(root / "gpt2_tokenizer"), "vocab_size": bpe.get_vocab_size()}


def _random_gpt2(directory, seed=0, **overrides):
  """A GPT-2 with random weights of every kind (scaled up, so that logits are far from uniform), saved."""
  config = transformers.GPT2Config(**{"vocab_size": 61, "n_positions": 24, "n_embd": 48, "n_layer": 2, "n_head": 4,
                                      **overrides})
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.3)
  model.save_pretrained(directory)
  return model


def _torch_logits(model, tokens):
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(np.asarray(tokens, np.int64))).logits.numpy()


def _our_logits(workdir, tokens):
  config, params, _ = hf.restore(workdir)
  return check.our_logits(config, params, tokens)


VARIANTS = {
    "gpt2": {},  # GPT-2's own settings: tanh GELU, tied head, 4x MLP, epsilon 1e-5.
    "erf_untied": {"activation_function": "gelu", "tie_word_embeddings": False, "n_inner": 96,
                   "layer_norm_epsilon": 1e-6},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_import_matches_pytorch_and_export_round_trips(tmp_path, variant):
  model = _random_gpt2(tmp_path / "hf", **VARIANTS[variant])
  given = None
  if variant != "gpt2":  # A --config whose model section differs from GPT-2 (rotary positions): GPT-2's wins.
    given = configlib.load(configlib.BASE_CONFIG)
    given.model.position = "rope"
  config = hf.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"), given)
  tokens = np.random.default_rng(0).integers(0, 61, (3, 24))
  theirs = _torch_logits(model, tokens)
  assert np.abs(theirs).max() > 3  # Far from uniform: the comparison below means something.
  assert np.abs(_our_logits(str(tmp_path / "w"), tokens) - theirs).max() <= 1e-4
  saved = run_dir.saved_config(str(tmp_path / "w"))
  assert {k: saved.model[k] for k in gpt2.model_section({"model_type": "gpt2"})} == \
      {k: config.model[k] for k in gpt2.model_section({"model_type": "gpt2"})}
  assert saved.model.position == "learned"
  assert (saved.model.gelu_approximate, saved.model.tie_embeddings) == ((True, True) if variant == "gpt2" else (False, False))
  assert os.listdir(tmp_path / "w" / "checkpoints") == ["0"]

  hf.export_hf(str(tmp_path / "w"), str(tmp_path / "back"))
  back = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "back")).eval()
  assert np.abs(_torch_logits(back, tokens) - theirs).max() <= 1e-6
  assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in os.listdir(tmp_path / "back"))


def test_published_file_layouts(tmp_path):
  """As published GPT-2s come: names without `transformer.`, causal-mask buffers, bfloat16, sharded files."""
  from safetensors.torch import load_file, save_file
  model = _random_gpt2(tmp_path / "hf").to(torch.bfloat16)
  tensors = {k.removeprefix("transformer."): v.to(torch.bfloat16) for k, v in load_file(tmp_path / "hf" / hf.WEIGHTS).items()}
  for i in range(2):
    tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 24, 24))
  os.remove(tmp_path / "hf" / hf.WEIGHTS)
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
  for shard, keys in shards.items():
    save_file({k: tensors[k].contiguous() for k in keys}, tmp_path / "hf" / shard, metadata={"format": "pt"})
  index = {"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
  (tmp_path / "hf" / hf.WEIGHTS_INDEX).write_text(json.dumps(index))
  hf.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"))
  tokens = np.random.default_rng(0).integers(0, 61, (2, 24))
  assert np.abs(_our_logits(str(tmp_path / "w"), tokens) - _torch_logits(model.float(), tokens)).max() <= 1e-4


def test_export_of_a_gpt_without_biases(tmp_path):
  """nanoGPT-style (no biases, exact GELU, untied head) exports with zero biases and the same logits."""
  config = configlib.load(configlib.BASE_CONFIG)
  for key, value in dict(vocab_size=40, context=16, num_layers=2, num_heads=2, width=32, bias=False,
                         tie_embeddings=False, gelu_approximate=False).items():
    config.model[key] = value
  tokens = np.random.default_rng(1).integers(0, 40, (2, 16))
  model = hf.model_of(config)
  params = jax.jit(model.init)(jax.random.key(3), jnp.asarray(tokens))["params"]
  rng = np.random.default_rng(4)
  params = jax.tree_util.tree_map(lambda p: p + 0.3 * rng.standard_normal(p.shape, np.float32), params)
  hf.write_workdir(config, params, str(tmp_path / "w"))
  hf.export_hf(str(tmp_path / "w"), str(tmp_path / "hf"))
  back = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf")).eval()
  ours = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(tokens)))
  assert np.abs(_torch_logits(back, tokens) - ours).max() <= 1e-4

  config.model.position = "rope"  # GPT-2 has no rotary embeddings: say so rather than write a wrong model.
  hf.write_workdir(config, jax.jit(hf.model_of(config).init)(jax.random.key(3), jnp.asarray(tokens))["params"],
                   str(tmp_path / "rope"))
  with pytest.raises(ConfigError, match="gpt2 needs model.position=learned"):
    hf.export_hf(str(tmp_path / "rope"), str(tmp_path / "hf_rope"))


def test_unsupported_architecture_and_shape_mismatch_list_everything(tmp_path):
  _random_gpt2(tmp_path / "hf")
  config_path = tmp_path / "hf" / "config.json"
  good = json.loads(config_path.read_text())
  config_path.write_text(json.dumps({**good, "activation_function": "relu", "scale_attn_by_inverse_layer_idx": True}))
  with pytest.raises(CheckpointError, match="activation_function='relu'.*scale_attn_by_inverse_layer_idx=True"):
    hf.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"))

  config_path.write_text(json.dumps({**good, "vocab_size": 70, "n_layer": 3}))  # The weights: 61 tokens, 2 layers.
  proc = run_main("import", "--hf-dir", tmp_path / "hf", "--workdir", tmp_path / "w", module="pretrain.hf", check=False)
  assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
  assert proc.stderr.startswith(f"error: the gpt2 weights in {tmp_path / 'hf'} do not fit its config.json")
  assert "wte.weight has shape [61, 48], config.json implies [70, 48]; h.2.ln_1.weight missing" in proc.stderr
  assert proc.stderr.strip().endswith("and 5 more")  # 1 + 12 problems, 8 of them named.
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_pickle_is_never_read(tmp_path):
  model = _random_gpt2(tmp_path / "hf")
  os.remove(tmp_path / "hf" / "model.safetensors")
  torch.save(model.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
  with pytest.raises(CheckpointError, match="only safetensors are read, never pickle"):
    hf.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"))


def _text_config(path, tokenizer_path, **overrides):
  return configlib.load(os.path.join(ROOT, "configs/shakespeare_char.py:cpu"), [
      ("data.path", path), ("data.tokenizer", "file"), ("data.tokenizer_path", tokenizer_path),
      *((k, str(v)) for k, v in overrides.items())])


def test_file_tokenizers_match_transformers_and_are_part_of_the_dataset(corpus, tmp_path):
  reference = transformers.GPT2Tokenizer.from_pretrained(corpus["gpt2"])
  sample = "The quick fox<|endoftext|> jumped\n\n  over the mat."
  for path in (corpus["json"], corpus["gpt2"]):
    ds = data.load(_text_config(corpus["path"], path))
    assert ds.vocab_size == corpus["vocab_size"] == len(reference)
    assert ds.encode(sample).tolist() == reference(sample)["input_ids"]
    assert ds.decode(np.concatenate([ds.train.tokens[:], ds.val.tokens[:]])) == corpus["text"]
  with pytest.raises(ConfigError, match="data.tokenizer=file"):
    data.load(configlib.load(os.path.join(ROOT, "configs/shakespeare_char.py:cpu"), [("data.path", corpus["path"]),
                                                                  ("data.tokenizer_path", corpus["json"])]))
  # Same path, new content: a new dataset, not the one prepared with the old tokenizer.
  path = tmp_path / "tokenizer.json"
  shutil.copy(corpus["json"], path)
  assert data.load(_text_config(corpus["path"], str(path))).vocab_size == corpus["vocab_size"]
  _bpe(corpus["text"], 280).save(str(path))
  assert data.load(_text_config(corpus["path"], str(path))).vocab_size == 280


def test_pytorch_trained_gpt2_keeps_its_loss_samples_and_exports(corpus, tmp_path):
  """A GPT-2 trained in PyTorch on the user's text with its own BPE vocabulary: after import, pretrain.evaluate
  gives its validation loss, greedy sampling continues a prompt as Transformers does, export gives its logits."""
  T = 32
  ids = np.array(tokenizers.Tokenizer.from_file(corpus["json"]).encode(corpus["text"]).ids)
  train, val = ids[:int(len(ids) * 0.9)], ids[int(len(ids) * 0.9):]
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
      vocab_size=corpus["vocab_size"], n_positions=T, n_embd=64, n_layer=2, n_head=4,
      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
  opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
  rng = np.random.default_rng(0)
  for _ in range(300):
    x = torch.from_numpy(np.stack([train[i:i + T] for i in rng.integers(0, len(train) - T, 16)]))
    loss = model(input_ids=x, labels=x).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
  model.eval()
  total, count = 0.0, 0  # Our evaluation's windows: every T tokens, the last one shorter.
  with torch.no_grad():
    for s in range(0, len(val) - 1, T):
      window = torch.from_numpy(val[s:s + T + 1])[None]
      logits = model(input_ids=window[:, :-1]).logits[0]
      total += torch.nn.functional.cross_entropy(logits, window[0, 1:], reduction="sum").item()
      count += window.shape[1] - 1
  hf_loss = total / count
  assert hf_loss < 0.6 * np.log(corpus["vocab_size"])  # It learned something worth keeping.
  hf_dir, w = tmp_path / "hf", tmp_path / "w"
  model.save_pretrained(hf_dir)
  for f in ("vocab.json", "merges.txt"):
    shutil.copy(os.path.join(corpus["gpt2"], f), hf_dir / f)

  text_flags = ("--config", "configs/shakespeare_char.py:cpu", "--config.data.path", corpus["path"])
  run_main("import", "--hf-dir", hf_dir, "--workdir", w, *text_flags, module="pretrain.hf")
  assert sorted(os.listdir(w / "tokenizer")) == ["merges.txt", "vocab.json"]
  proc = run_main("--workdir", w, *text_flags, "--config.data.tokenizer=file", f"--config.data.tokenizer_path={hf_dir}",
                  module="pretrain.evaluate")
  ours = json.loads(proc.stdout.strip().splitlines()[-1])
  assert ours["count"] == count and abs(ours["loss"] - hf_loss) <= 1e-4, (ours, hf_loss)
  assert ours["step"] == 0 and {"bits_per_token", "perplexity", "loss_sem", "perplexity_sem"} <= set(ours)

  prompt = "The king said"
  reference = transformers.GPT2Tokenizer.from_pretrained(str(hf_dir))
  prompt_ids = torch.tensor([reference(prompt)["input_ids"]])
  greedy = model.generate(prompt_ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[0, prompt_ids.shape[1]:]
  proc = run_main("--workdir", w, "--prompt", prompt, "--max_new_tokens", 12, "--temperature", 0, module="pretrain.sample")
  assert proc.stdout.rstrip("\n").endswith(prompt + reference.decode(greedy.tolist()))

  run_main("export", "--workdir", w, "--hf-dir", tmp_path / "back", module="pretrain.hf")
  back = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "back")).eval()
  tokens = val[None, :T]
  assert np.abs(_torch_logits(back, tokens) - _torch_logits(model, tokens)).max() <= 1e-6
  assert transformers.GPT2Tokenizer.from_pretrained(str(tmp_path / "back"))(prompt)["input_ids"] == prompt_ids[0].tolist()
