"""Llama, Mistral, Qwen2 and BERT from Transformers in and out, exactly; LoRA; the logit checker. Every model here
is built locally with random weights (offline)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
import torch  # torch and transformers come with the test extra (make test installs them).
import transformers

from pretrain import configlib, hf
from pretrain.errors import CheckpointError, ConfigError
from pretrain.hf import check
from pretrain.models import lora
from pretrain.trainer import optim, run_dir
from pretrain.trainer import train as trainer
from tests.conftest import ROOT, read_metrics, run_main

torch.set_num_threads(1)
V, EOT = 300, "<|endoftext|>"
SMALL = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=64)
CAUSAL = {
    # Grouped-query attention (2 key/value heads for 4), Llama 3.1's rope scaling, untied head.
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **SMALL, num_key_value_heads=2, rope_theta=500.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16})),
    "llama-linear": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **SMALL, rope_scaling={"rope_type": "linear", "factor": 2.0})),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(  # Multi-query attention.
        **SMALL, num_key_value_heads=1, sliding_window=None)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(  # q/k/v biases, tied head.
        **SMALL, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6)),
}


def _perturbed(model, seed=0):
  """Every parameter moved off its init (norm gains off 1, biases off 0), so a dropped mapping shows."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.2 * torch.randn_like(p))
  return model.eval()


def _save(model, directory, specials=()):
  model.save_pretrained(directory)
  tok = tokenizers.ByteLevelBPETokenizer()
  tok.train_from_iterator(["the cat sat on the mat and the dog ran " * 40], vocab_size=V - len(specials),
                          special_tokens=[EOT], show_progress=False)
  tok.add_special_tokens(list(specials))
  tok.save(os.path.join(directory, "tokenizer.json"))
  return tok


def _logits(model, tokens, **kw):
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(np.asarray(tokens, np.int64)), **kw).logits.numpy()


TOKENS = np.random.default_rng(0).integers(0, V, (2, 64))


@pytest.mark.parametrize("name", sorted(CAUSAL))
def test_causal_models_import_and_export_exactly(tmp_path, name):
  model = _perturbed(CAUSAL[name]())
  _save(model, tmp_path / "hf")
  config = hf.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"))
  m = config.model
  assert (m.norm, m.activation, m.position, m.num_kv_heads) == ("rmsnorm", "swiglu", "rope",
                                                                model.config.num_key_value_heads)
  theirs = _logits(model, TOKENS)
  _, params, _ = hf.restore(str(tmp_path / "w"))
  ours = check.our_logits(config, params, TOKENS)
  assert np.abs(theirs).max() > 1  # Far from uniform: the comparison means something.
  assert np.abs(ours - theirs).max() <= 2e-5
  hf.export_hf(str(tmp_path / "w"), str(tmp_path / "back"))
  back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "back")).eval()
  assert np.abs(_logits(back, TOKENS) - theirs).max() <= 1e-6
  assert os.path.isfile(tmp_path / "back" / "tokenizer.json")


def test_bert_masked_lm_logits_and_features(tmp_path):
  bert = _perturbed(transformers.BertForMaskedLM(transformers.BertConfig(**SMALL, hidden_dropout_prob=0.0)))
  tok = _save(bert, tmp_path / "hf", specials=("[MASK]",))
  (tmp_path / "hf" / "special_tokens_map.json").write_text(json.dumps({"mask_token": "[MASK]"}))
  config = hf.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"))
  assert (config.model.family, config.model.norm_position) == ("bert", "post")
  assert config.model.mask_id == tok.token_to_id("[MASK]") > 0
  _, params, _ = hf.restore(str(tmp_path / "w"))
  types_BxT = np.zeros_like(TOKENS)
  types_BxT[:, 32:] = 1
  model = hf.model_of(config)
  for token_types in (None, types_BxT):
    kw = {} if token_types is None else {"token_type_ids": torch.from_numpy(token_types)}
    ours = model.apply({"params": params}, jnp.asarray(TOKENS),
                       token_types_BxT=None if token_types is None else jnp.asarray(token_types))
    assert np.abs(np.asarray(ours) - _logits(bert, TOKENS, **kw)).max() <= 2e-5
  # [CLS] features, which a classifier pools: the encoder's last hidden states.
  with torch.no_grad():
    hidden = bert.bert(input_ids=torch.from_numpy(TOKENS)).last_hidden_state.numpy()
  features = model.apply({"params": params}, jnp.asarray(TOKENS), method=model.features)
  assert np.abs(np.asarray(features)[:, 0] - hidden[:, 0]).max() <= 1e-5
  hf.export_hf(str(tmp_path / "w"), str(tmp_path / "back"))
  back = transformers.AutoModelForMaskedLM.from_pretrained(str(tmp_path / "back")).eval()
  assert np.abs(_logits(back, TOKENS, token_type_ids=torch.from_numpy(types_BxT))
                - _logits(bert, TOKENS, token_type_ids=torch.from_numpy(types_BxT))).max() <= 1e-6


def test_bert_without_mlm_head_imports_for_fine_tuning_with_its_pooler(tmp_path):
  """BertModel: features and pooler output as Transformers computes them; a classifier with pooling=cls puts the
  tokenizer's [CLS] first and reads the pooler."""
  from pretrain.models import classifier
  encoder = _perturbed(transformers.BertModel(transformers.BertConfig(**SMALL)))
  tok = _save(encoder, tmp_path / "hf", specials=("[CLS]", "[SEP]", "[MASK]"))
  (tmp_path / "hf" / "special_tokens_map.json").write_text(json.dumps({"mask_token": "[MASK]", "cls_token": "[CLS]"}))
  notes = []
  config = hf.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"), log=notes.append)
  assert "mlm_" in notes[0] and "randomly initialised" in notes[0]
  assert (config.model.pooler, config.model.cls_id) == (True, tok.token_to_id("[CLS]"))
  _, params, _ = hf.restore(str(tmp_path / "w"))
  model = hf.model_of(config)
  with_cls = np.concatenate([np.full((2, 1), config.model.cls_id), TOKENS[:, :-1]], axis=1)
  with torch.no_grad():
    out = encoder(input_ids=torch.from_numpy(with_cls))
  features = model.apply({"params": params}, jnp.asarray(with_cls), method=model.features)
  assert np.abs(np.asarray(features) - out.last_hidden_state.numpy()).max() <= 1e-5
  pooled = model.apply({"params": params}, features[:, 0], method=model.pool)
  assert np.abs(np.asarray(pooled) - out.pooler_output.numpy()).max() <= 1e-5
  # The classifier adds [CLS] itself: its input is the text, its pooled features those of [CLS] + text.
  head = classifier.Classifier(model, 3, "cls", cls_id=config.model.cls_id)
  variables = head.init(jax.random.key(0), jnp.asarray(TOKENS))
  variables = {"params": {**variables["params"], "backbone": params,
                          "head": {"kernel": jnp.eye(32, 3), "bias": jnp.zeros(3)}}}
  logits = head.apply(variables, jnp.asarray(TOKENS))
  assert np.abs(np.asarray(logits) - out.pooler_output.numpy()[:, :3]).max() <= 1e-5


def _write(tmp_path, name, **changes):
  model = CAUSAL[name]()
  model.save_pretrained(tmp_path / "hf")
  path = tmp_path / "hf" / "config.json"
  path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
  return str(tmp_path / "hf")


@pytest.mark.parametrize("name, changes, says", [
    ("mistral", {"sliding_window": 16}, "sliding_window=16 is shorter than max_position_embeddings=64"),
    ("llama", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}},
     "rope_scaling.rope_type='yarn'"),
    ("llama", {"attention_bias": True}, "attention_bias=true"),
    ("llama", {"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ("llama", {"model_type": "falcon"}, "model_type='falcon'; pretrain.hf converts gpt2, llama, mistral, qwen2, bert"),
])
def test_unrepresentable_configs_are_refused_in_one_line(tmp_path, name, changes, says):
  hf_dir = _write(tmp_path, name, **changes)
  proc = run_main("import", "--hf-dir", hf_dir, "--workdir", tmp_path / "w", module="pretrain.hf", check=False)
  assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
  assert says in proc.stderr
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_bf16_weights_import(tmp_path):
  model = _perturbed(CAUSAL["qwen2"]()).to(torch.bfloat16)
  model.save_pretrained(tmp_path / "hf")
  config = hf.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"))
  _, params, _ = hf.restore(str(tmp_path / "w"))
  # Transformers' own float32 load of the file (model.float() would keep the rotary frequencies' bf16 rounding).
  reference = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
  assert np.abs(check.our_logits(config, params, TOKENS) - _logits(reference, TOKENS)).max() <= 2e-5


def _lora_config(rank=4, objective="next_token"):
  config = configlib.load(configlib.BASE_CONFIG)
  config.model.update(dict(vocab_size=V, context=16, num_layers=2, num_heads=4, num_kv_heads=2, width=32,
                           mlp_width=48, norm="rmsnorm", activation="swiglu", position="rope", tie_embeddings=False))
  config.model.lora.rank = rank
  config.objective = objective
  return config


def test_lora_adapters_start_at_zero_freeze_the_base_and_merge_on_export(tmp_path):
  config = _lora_config()
  base = hf.model_of(config)
  model = lora.wrap(base, config)
  tokens = jnp.asarray(TOKENS[:, :16])
  params = model.init(jax.random.key(0), tokens, train=False)["params"]
  names = optim.param_names(params)
  assert [n for n in names if lora.is_adapter(n)] == [f"h_{i}/attn/{p}/lora_{ab}" for i in range(2)
                                                      for p in ("c_attn", "c_proj") for ab in "ab"]
  base_params = lora.merged(params, 1.0)
  assert np.array_equal(model.apply({"params": params}, tokens), base.apply({"params": base_params}, tokens))

  # Only the adapters train and have optimizer state; the base gets no gradient.
  tx = optim.make(config)
  opt_state = tx.init(params)
  trained = sum(x.size for x in jax.tree_util.tree_leaves(opt_state))
  adapters = sum(x.size for n, x in zip(names, jax.tree_util.tree_leaves(params)) if lora.is_adapter(n))
  assert 2 * adapters <= trained <= 2 * adapters + 4  # Adam's two moments of each adapter, and step counts.
  assert optim.trainable_count(config, params) == adapters < 0.05 * sum(x.size for x in jax.tree_util.tree_leaves(params))
  grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, tokens) ** 2))(params)
  flat = dict(zip(names, jax.tree_util.tree_leaves(grads)))
  assert all(not np.any(g) for n, g in flat.items() if not lora.is_adapter(n))
  assert any(np.any(g) for n, g in flat.items() if n.endswith("lora_b"))

  # Trained adapters: the export (merged kernels) computes what the unmerged run does.
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x + (0.3 * rng.standard_normal(x.shape, np.float32) if "lora_b" in str(p) else 0), params)
  hf.write_workdir(config, params, str(tmp_path / "w"))
  hf.export_hf(str(tmp_path / "w"), str(tmp_path / "back"))
  back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "back")).eval()
  ours = np.asarray(model.apply({"params": params}, tokens))
  assert np.abs(ours - np.asarray(base.apply({"params": base_params}, tokens))).max() > 1e-2  # The adapters act.
  assert np.abs(_logits(back, TOKENS[:, :16]) - ours).max() <= 1e-5


def test_lora_fine_tune_reports_trainable_parameters_and_resumes_exactly(tmp_path):
  """From an imported Llama: run.json's parameter counts, loss going down, and stop-resume equal to one run."""
  model = _perturbed(CAUSAL["llama"]())
  _save(model, tmp_path / "hf")
  text = tmp_path / "text.txt"
  text.write_text("the cat sat on the mat and the dog ran\n" * 300)
  run_main("import", "--hf-dir", tmp_path / "hf", "--workdir", tmp_path / "base", module="pretrain.hf")
  tokenizer = run_dir.saved_config(str(tmp_path / "base")).data.tokenizer_path
  common = ["--config", os.path.join(ROOT, "configs/shakespeare_char.py"), f"--config.init.workdir={tmp_path / 'base'}",
            f"--config.data.path={text}", "--config.data.tokenizer=file", f"--config.data.tokenizer_path={tokenizer}",
            "--config.model.lora.rank=4", "--config.model.dropout=0.0", "--config.train.batch_size=8",
            "--config.train.log_every=2", "--config.train.eval_every=4", "--config.train.checkpoint_every=4",
            "--config.eval.batches=2", "--config.optim.lr=1e-2", "--config.optim.warmup_steps=2",
            "--config.optim.decay_steps=8", "--config.train.steps=8"]  # A schedule that train.steps=4 leaves alone.
  run_main(*common, "--workdir", tmp_path / "one")
  run_main(*common, "--config.train.steps=4", "--workdir", tmp_path / "two")  # Stopped at 4 ...
  run_main(*common, "--workdir", tmp_path / "two")  # ... and resumed to 8.
  record = json.loads((tmp_path / "one" / "run.json").read_text())["parameters"]
  assert 0 < record["trainable"] < 0.05 * record["total"]
  assert record["optimizer_state_bytes"] < 3 * 4 * record["trainable"] + 64
  one, two = read_metrics(tmp_path / "one", "train"), read_metrics(tmp_path / "two", "train")
  assert [r["loss"] for r in one] == [r["loss"] for r in two]
  assert one[-1]["loss"] < one[0]["loss"]
  for command in (["--workdir", tmp_path / "one", "--prompt", "the cat", "--max_new_tokens", "8", "--temperature", "0"],):
    assert run_main(*command, module="pretrain.sample").stdout.startswith("the cat")
  assert "val" in {r["split"] for r in read_metrics(tmp_path / "one")}
  evaluated = run_main("--workdir", tmp_path / "one", *common[:2], f"--config.data.path={text}",
                       "--config.data.tokenizer=file", f"--config.data.tokenizer_path={tokenizer}",
                       "--config.eval.batches=2", module="pretrain.evaluate").stdout
  assert json.loads(evaluated.splitlines()[-1])["loss"] > 0


def test_logit_checker_prints_the_difference_and_kl(tmp_path):
  model = _perturbed(CAUSAL["qwen2"]())
  _save(model, tmp_path / "hf")
  run_main("import", "--hf-dir", tmp_path / "hf", "--workdir", tmp_path / "w", module="pretrain.hf")
  out = run_main("check", "--hf-dir", tmp_path / "hf", "--workdir", tmp_path / "w", module="pretrain.hf").stdout
  first = out.splitlines()[0]
  assert first.startswith("max abs logit difference") and "KL divergence" in first
  assert float(first.split()[4]) <= 1e-4
  assert len(out.splitlines()) == 2 + 2 * 64  # The summary, a header, one line per position.
  # The import holds parameters only; training the imported run itself starts its optimizer state.
  text = tmp_path / "text.txt"
  text.write_text("the cat sat on the mat and the dog ran\n" * 100)
  config = run_dir.saved_config(str(tmp_path / "w"))
  config.data.path = str(text)
  config.train.update(dict(steps=4, batch_size=4, eval_every=4, checkpoint_every=4, log_every=2))
  config.eval.batches = 1
  config.train.allow_config_change = True  # The import named no data (data.path None).
  trainer.train(config, str(tmp_path / "w"))
  assert [r["step"] for r in read_metrics(tmp_path / "w", "train")][-1] == 4


def test_bert_import_needs_its_mask_token(tmp_path):
  transformers.BertForMaskedLM(transformers.BertConfig(**SMALL)).save_pretrained(tmp_path / "hf")
  _save(transformers.BertForMaskedLM(transformers.BertConfig(**SMALL)), tmp_path / "hf")  # A tokenizer without [MASK].
  with pytest.raises(ConfigError, match=r"\[MASK\]"):
    hf.import_hf(str(tmp_path / "hf"), str(tmp_path / "w"))


def test_documents_end_with_the_tokenizers_declared_end_of_sequence(tmp_path):
  """A Llama-style tokenizer has no <|endoftext|>: documents end with the </s> its tokenizer_config.json names,
  so the vocabulary keeps the imported model's size."""
  from pretrain import data
  from pretrain.data import tokenizers as ours
  tok = tokenizers.ByteLevelBPETokenizer()
  tok.train_from_iterator(["the cat sat on the mat " * 20], vocab_size=280, special_tokens=["<s>", "</s>"],
                          show_progress=False)
  folder = tmp_path / "tok"
  folder.mkdir()
  tok.save(str(folder / "tokenizer.json"))
  (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>"}}))
  assert ours.FileTokenizer(str(folder), end_of_text=True).end_of_text == tok.token_to_id("</s>")
  assert ours.FileTokenizer(str(folder), end_of_text=True).vocab_size == tok.get_vocab_size()
  docs = tmp_path / "docs.jsonl"
  docs.write_text("".join(json.dumps({"text": "the cat sat"}) + "\n" for _ in range(50)))
  config = configlib.load(os.path.join(ROOT, "configs/shakespeare_char.py"), [
      ("data.path", str(docs)), ("data.tokenizer", "file"), ("data.tokenizer_path", str(folder))])
  dataset = data.load(config)
  assert dataset.vocab_size == tok.get_vocab_size()
  assert tok.token_to_id("</s>") in set(np.asarray(dataset.train.tokens[:]).tolist())


def test_imported_bert_fine_tunes_as_a_classifier_on_cls(tmp_path):
  bert = _perturbed(transformers.BertForMaskedLM(transformers.BertConfig(**SMALL)))
  _save(bert, tmp_path / "hf", specials=("[CLS]", "[MASK]"))
  (tmp_path / "hf" / "special_tokens_map.json").write_text(json.dumps({"mask_token": "[MASK]", "cls_token": "[CLS]"}))
  run_main("import", "--hf-dir", tmp_path / "hf", "--workdir", tmp_path / "bert", module="pretrain.hf")
  text = tmp_path / "text.txt"
  # Longer first text: the halves' last windows (which validate) are each half's own text.
  text.write_text("the cat sat on the mat\n" * 300 + "and the dog ran\n" * 200)
  tokenizer = run_dir.saved_config(str(tmp_path / "bert")).data.tokenizer_path
  run_main("--config", os.path.join(ROOT, "configs/bert_shakespeare.py:finetune"), "--workdir", tmp_path / "cls",
           f"--config.init.workdir={tmp_path / 'bert'}", f"--config.data.path={text}", "--config.data.tokenizer=file",
           f"--config.data.tokenizer_path={tokenizer}", "--config.data.text_segments=2",
           "--config.data.labels_per_class=16", "--config.model.head.pooling=cls", "--config.train.steps=60",
           "--config.train.batch_size=8", "--config.train.eval_every=60", "--config.train.log_every=20",
           "--config.train.checkpoint_every=60", "--config.eval.batches=2", "--config.eval.batch_size=16",
           "--config.optim.lr=2e-3", "--config.optim.warmup_steps=5")
  val = read_metrics(tmp_path / "cls", "val")[-1]
  assert val["accuracy"] > 0.8  # The two texts differ in every window.


def test_llama_config_trains_and_exports_to_transformers(tmp_path):
  """configs/llama_shakespeare.py: a few steps from scratch, then export; Transformers computes our logits."""
  text = tmp_path / "text.txt"
  text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 60)
  run_main("--config", os.path.join(ROOT, "configs/llama_shakespeare.py:cpu"), "--workdir", tmp_path / "w",
           f"--config.data.path={text}", "--config.train.steps=10", "--config.train.eval_every=10",
           "--config.train.checkpoint_every=10", "--config.eval.batches=1", "--config.model.dtype=float32",
           "--config.parallel.strategy=single", "--config.parallel.cpu_devices=0")
  run_main("export", "--workdir", tmp_path / "w", "--hf-dir", tmp_path / "hf", module="pretrain.hf")
  assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llama"
  config, params, _ = hf.restore(str(tmp_path / "w"))
  config.model.vocab_size = params["wte"]["embedding"].shape[0]  # 0 in the config: the data's.
  tokens = np.random.default_rng(0).integers(0, config.model.vocab_size, (2, config.model.context))
  back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
  assert np.abs(check.our_logits(config, params, tokens) - _logits(back, tokens)).max() <= 1e-4


def test_imported_bert_continues_masked_lm_pretraining(tmp_path):
  bert = _perturbed(transformers.BertForMaskedLM(transformers.BertConfig(**SMALL, hidden_dropout_prob=0.0)))
  tok = _save(bert, tmp_path / "hf", specials=("[MASK]",))
  (tmp_path / "hf" / "special_tokens_map.json").write_text(json.dumps({"mask_token": "[MASK]"}))
  run_main("import", "--hf-dir", tmp_path / "hf", "--workdir", tmp_path / "bert", module="pretrain.hf")
  text = tmp_path / "text.txt"
  text.write_text("the cat sat on the mat and the dog ran\n" * 200)
  tokenizer = run_dir.saved_config(str(tmp_path / "bert")).data.tokenizer_path
  run_main("--config", os.path.join(ROOT, "configs/bert_shakespeare.py:cpu"), "--workdir", tmp_path / "mlm",
           f"--config.init.workdir={tmp_path / 'bert'}", f"--config.data.path={text}", "--config.data.tokenizer=file",
           f"--config.data.tokenizer_path={tokenizer}", "--config.train.steps=20", "--config.train.eval_every=20",
           "--config.train.checkpoint_every=20", "--config.train.log_every=10", "--config.eval.batches=2",
           "--config.train.batch_size=8")
  saved = run_dir.saved_config(str(tmp_path / "mlm"))
  assert (saved.model.mask_id, saved.model.vocab_size) == (tok.token_to_id("[MASK]"), V)  # The model's vocabulary, kept.
  losses = [r["loss"] for r in read_metrics(tmp_path / "mlm", "train")]
  assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_supervised_fine_tuning_from_an_imported_llama_counts_completions_only(tmp_path):
  """SFT (prompt/completion JSON lines) from an imported Llama with LoRA: the eval count is the completions' tokens
  plus one end-of-text per record, and the completions' loss falls."""
  _save(_perturbed(CAUSAL["llama"]()), tmp_path / "hf")
  run_main("import", "--hf-dir", tmp_path / "hf", "--workdir", tmp_path / "base", module="pretrain.hf")
  tokenizer_path = run_dir.saved_config(str(tmp_path / "base")).data.tokenizer_path
  records = [{"prompt": f"the {a} sat on", "completion": f" the {b}"} for a, b in [("cat", "mat"), ("dog", "log")] * 60]
  for name, rows in (("train", records), ("val", records[:10])):
    (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  run_main("--config", os.path.join(ROOT, "configs/shakespeare_char.py"), f"--config.init.workdir={tmp_path / 'base'}",
           f"--config.data.path={tmp_path / 'train.jsonl'}", f"--config.data.val_path={tmp_path / 'val.jsonl'}",
           "--config.data.prompt_field=prompt", "--config.data.completion_field=completion",
           "--config.data.tokenizer=file", f"--config.data.tokenizer_path={tokenizer_path}",
           "--config.model.lora.rank=4", "--config.model.dropout=0.0", "--config.model.context=16",
           "--config.train.batch_size=8", "--config.train.steps=20", "--config.train.log_every=10",
           "--config.train.eval_every=10", "--config.train.checkpoint_every=20", "--config.optim.lr=1e-2",
           "--config.optim.warmup_steps=2", "--workdir", tmp_path / "sft")
  tok = tokenizers.Tokenizer.from_file(os.path.join(tokenizer_path, "tokenizer.json")
                                       if os.path.isdir(tokenizer_path) else tokenizer_path)
  want = sum(len(tok.encode(r["completion"], add_special_tokens=False).ids) + 1 for r in records[:10])
  val = read_metrics(tmp_path / "sft", "val")
  assert [r["count"] for r in val] == [want, want]
  assert val[-1]["loss"] < val[0]["loss"]
