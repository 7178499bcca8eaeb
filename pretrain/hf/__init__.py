"""Hugging Face models <-> run directories, exactly and offline, through safetensors files on disk.

  python -m pretrain.hf import --hf-dir D --workdir W [--config configs/NAME.py[:VARIANT] --config.a.b=value ...]
  python -m pretrain.hf export --workdir W --hf-dir D [--step N]
  python -m pretrain.hf check --hf-dir D --workdir W [--step N]

import reads a Transformers directory (config.json + model.safetensors or a sharded index, float32, bfloat16 or
float16) whose model_type one converter module here knows (gpt2.py: gpt2; llama.py: llama, mistral, qwen2;
bert.py: bert), and writes W as pretraining writes a run directory: config.json and an Orbax checkpoint (step
0), so W serves --config.init.workdir, pretrain.evaluate, pretrain.sample and resuming. The saved config is
--config's (default configs/base.py) with the model section from D's config.json; tokenizer files in D are
copied into W/tokenizer and become data.tokenizer=file. Tensors are read one at a time into the parameter
tree. export writes the reverse (LoRA adapters merged into their kernels), loadable by Transformers'
AutoModel classes; check (check.py) runs both on the same tokens and prints how far apart their logits are.

A converter module exports MODEL_TYPES, FAMILY (our model.family), model_section(hf config) -> model.*
settings, links(model section) -> [Link], unsupported(model section) -> [why it cannot export], hf_config(model
section, special ids) -> config.json, optionally fit(model section, tensor names, special ids) for what
config.json does not say, OBJECTIVE (what the model was pretrained with), PREFIXES (what their
names may start with), stored_name(name) (the name export writes) and IGNORED (regexes of their buffers that
are not weights).
"""
import dataclasses
import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from pretrain import configlib, data, models, tree
from pretrain.trainer import checkpoint, layout, run_dir, step
from pretrain.data import tokenizers
from pretrain.errors import CheckpointError, ConfigError, DataError
from pretrain.hf import files
from pretrain.hf.files import WEIGHTS, WEIGHTS_INDEX, Reader
from pretrain.models import gpt, lora

_MAX_LISTED = 8


@dataclasses.dataclass(frozen=True)
class Link:
  """One of our parameters and the tensors of theirs it is made of."""
  ours: str  # '/'-joined parameter name.
  theirs: tuple[str, ...]  # Their tensor names, concatenated along our last axis in this order (fused q/k/v).
  sizes: tuple[int, ...] = ()  # Our last-axis size of each of `theirs`, to split on export (when several).
  transpose: bool = False  # Theirs is an nn.Linear weight [out, in]; ours a Dense kernel [in, out].


def fail(what: str, problems: list[str]) -> None:
  """One CheckpointError listing every problem (the first few), when there are any."""
  if problems:
    listed = "; ".join(problems[:_MAX_LISTED]) + (f"; and {len(problems) - _MAX_LISTED} more"
                                                   if len(problems) > _MAX_LISTED else "")
    raise CheckpointError(f"{what}: {listed}")


def converters():
  from pretrain.hf import bert, gpt2, llama
  return (gpt2, llama, bert)


def read_hf_config(hf_dir: str) -> dict:
  path = os.path.join(hf_dir, "config.json")
  if not os.path.isfile(path):
    raise CheckpointError(f"{hf_dir} has no config.json; point --hf-dir at a directory written by save_pretrained")
  return json.load(open(path))


def converter_for(hf: dict):
  kind = hf.get("model_type")
  for module in converters():
    if kind in module.MODEL_TYPES:
      return module
  known = ", ".join(t for module in converters() for t in module.MODEL_TYPES)
  raise ConfigError(f"config.json has model_type={kind!r}; pretrain.hf converts {known}")


def model_of(config):
  """The family's network for config.model, without data: the vocabulary size is config.model.vocab_size."""
  return run_dir.family_model(config, config.model.vocab_size)


def _init(config, key):
  tokens = jnp.zeros((1, min(config.model.context, 8)), jnp.int32)
  return model_of(config).init(key, tokens, train=False)["params"]


def abstract_params(config) -> dict:
  return jax.eval_shape(lambda: _init(config, jax.random.key(0)))


def _their_name(reader_names, name, module):
  """Their tensor as stored: with or without the model's prefix (transformer., model., bert.)."""
  for candidate in (name, *(p + name for p in module.PREFIXES)):
    if candidate in reader_names:
      return candidate
  return None


def to_params(reader: Reader, config, module, may_be_fresh=(), what="the weights") -> tuple[dict, list[str]]:
  """Our parameter tree (float32 JAX arrays), read tensor by tensor after every name and shape has been checked
  against the model config.model builds; parameters matching `may_be_fresh` regexes may be absent from the
  files (they keep a fresh init). Returns (params, names of the fresh ones)."""
  expected = tree.flat(abstract_params(config))
  names = set(reader.names())
  links, problems, used = module.links(config.model), [], set()
  stored_names = {link.ours: [_their_name(names, t, module) for t in link.theirs] for link in links}
  for link in links:
    want = expected[link.ours].shape
    stored = stored_names[link.ours]
    used.update(s for s in stored if s)
    if any(s is None for s in stored):
      if not any(re.search(p, link.ours) for p in may_be_fresh):
        problems += [f"{t} missing (expected for {link.ours} {list(want)})" for t, s in zip(link.theirs, stored) if s is None]
      continue
    shapes = [reader.shape(s)[::-1] if link.transpose else reader.shape(s) for s in stored]
    joined = (*shapes[0][:-1], sum(s[-1] for s in shapes)) if shapes[0] else ()
    if joined != tuple(want) or any(s[:-1] != shapes[0][:-1] for s in shapes):
      stored_shapes = [list(reader.shape(s)) for s in stored]
      if len(stored) == 1:
        implied = list(want[::-1] if link.transpose else want)
        problems.append(f"{link.theirs[0]} has shape {stored_shapes[0]}, config.json implies {implied}")
      else:
        problems.append(f"{' + '.join(link.theirs)} have shapes {stored_shapes}, which do not make {link.ours} "
                        f"{list(want)} as config.json implies")
  problems += [f"{n} unexpected" for n in sorted(names - used) if not any(re.search(p, n) for p in module.IGNORED)]
  fail(f"{what} do not fit its config.json", problems)
  flat, fresh = {}, []
  for link in links:
    stored = stored_names[link.ours]
    if any(s is None for s in stored):
      fresh.append(link.ours)
      continue
    parts = [reader.get(s) for s in stored]
    parts = [p.T if link.transpose else p for p in parts]
    # Into JAX's memory now, so that each numpy array is freed before the next is read and Orbax saves the
    # arrays without a further copy of each.
    flat[link.ours] = jax.device_put(np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)))
    del parts
  if fresh:  # A fresh init in the right shapes, for the parameters their model does not have (BERT's MLM head).
    initial = tree.flat(jax.jit(lambda k: _init(config, k))(jax.random.key(config.seed)))
    flat.update({name: initial[name] for name in fresh})
  missing = sorted(set(expected) - set(flat))
  fail("no tensor maps onto these parameters (a converter bug)", missing)
  return tree.nested(flat), fresh


def from_params(params: dict, m, module) -> list[tuple[str, tuple, object]]:
  """Our parameter tree -> their tensors, by the converter's links: (name, shape, () -> float32 array), each
  array made only when it is written."""
  flat = tree.flat(params)
  tensors = []
  for link in module.links(m):
    sibling = link.ours.rsplit("/", 1)[0] + "/" + ("scale" if link.ours.rsplit("/", 2)[-2].startswith("ln") else "kernel")
    if link.ours not in flat and link.ours.endswith("/bias") and sibling in flat:  # Zero biases compute the same.
      flat[link.ours] = np.zeros(np.shape(flat[sibling])[-1:], np.float32)
    if link.ours not in flat:
      raise CheckpointError(f"the checkpoint has no parameter {link.ours}; it does not hold the model its config.json "
                            "describes")
    shape, starts = np.shape(flat[link.ours]), np.cumsum((0, *link.sizes))
    for i, name in enumerate(link.theirs):
      cut = (slice(None),) * (len(shape) - 1) + ((slice(starts[i], starts[i + 1]),) if len(link.theirs) > 1 else ())
      part_shape = (*shape[:-1], link.sizes[i]) if len(link.theirs) > 1 else shape
      make = (lambda value=flat[link.ours], cut=cut, transpose=link.transpose:
              np.asarray(value[cut] if cut else value, np.float32).T if transpose else
              np.asarray(value[cut] if cut else value, np.float32))
      tensors.append((module.stored_name(name), part_shape[::-1] if link.transpose else part_shape, make))
  return tensors


def write_workdir(config, params, workdir: str) -> None:
  """config.json and checkpoint 0 as pretrain.main writes them, but of the parameters only: the optimizer
  state of a model that has not trained here is its fresh init, which pretrain.main starts itself when it
  resumes the run (and which would triple what an import holds in memory and writes)."""
  state = step.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=None, model_state={})
  os.makedirs(workdir, exist_ok=True)
  run_dir.write_config(workdir, config)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.train.keep_checkpoints, async_save=False)
  ckpt.save(0, state)
  ckpt.close()


def special_ids(tokenizer_files: list[str]) -> dict:
  """{"bos"|"eos"|"pad"|"cls"|"sep"|"mask"|"unk": id}: the tokens the Transformers files beside the tokenizer
  declare, else BERT's and GPT-2's conventional ones, that the vocabulary has."""
  if not tokenizer_files:
    return {}
  named = tokenizers.declared_tokens(tokenizer_files[0])
  for kind, token in (("eos", tokenizers.END_OF_TEXT), ("mask", "[MASK]"), ("cls", "[CLS]"), ("sep", "[SEP]"),
                      ("pad", "[PAD]")):
    named.setdefault(kind, token)
  tok = tokenizers.FileTokenizer(os.path.dirname(tokenizer_files[0]) if len(tokenizer_files) > 1 else tokenizer_files[0])
  ids = {kind: tok.token_id(token) for kind, token in named.items()}
  return {kind: i for kind, i in ids.items() if i is not None}


def _copy_tokenizer(tokenizer_files: list[str], folder: str) -> None:
  """The tokenizer files and the Transformers files naming its special tokens."""
  os.makedirs(folder, exist_ok=True)
  beside = os.path.dirname(tokenizer_files[0])
  extras = [os.path.join(beside, f) for f in tokenizers.SPECIAL_TOKEN_FILES if os.path.isfile(os.path.join(beside, f))]
  for f in [*tokenizer_files, *extras]:
    shutil.copy(f, os.path.join(folder, os.path.basename(f)))


def import_hf(hf_dir: str, workdir: str, config=None, log=print):
  """Writes the model in `hf_dir` into the new run directory `workdir`; returns the saved config."""
  if os.path.isdir(layout.checkpoints(workdir)) and os.listdir(layout.checkpoints(workdir)):
    raise CheckpointError(f"{workdir} already holds checkpoints; import into a new --workdir")
  hf = read_hf_config(hf_dir)
  module = converter_for(hf)
  given_data = config is not None
  base = configlib.load(configlib.BASE_CONFIG)
  if config is None:
    config = base
    config.data.name = "text"  # Text is what these models read; --config.data.path names it when fine-tuning.
  # The model is theirs as Transformers computes it: every model field not read from hf_dir takes its default
  # (float32, no QK-norm, ...), whatever the config given for the data chooses for its own models.
  with config.unlocked():
    config.model = base.model
  section = module.model_section(hf)
  for key, value in section.items():
    if isinstance(value, dict):
      for k, v in value.items():
        config.model[key][k] = v
    else:
      config.model[key] = value
  config.objective = module.OBJECTIVE
  try:
    tokenizer_files = tokenizers.files(hf_dir)
  except DataError:  # No tokenizer beside the weights: the data config has to bring one that fits.
    tokenizer_files = []
  specials = special_ids(tokenizer_files) if tokenizer_files else {}
  reader = Reader(hf_dir)
  if hasattr(module, "fit"):
    module.fit(config.model, reader.names(), specials)
  try:
    params, fresh = to_params(reader, config, module, getattr(module, "MAY_BE_FRESH", ()),
                              what=f"the {hf.get('model_type')} weights in {hf_dir}")
  finally:
    reader.close()
  if fresh:
    log(f"note: {hf_dir} has no {', '.join(sorted({n.split('/')[0] for n in fresh}))}: randomly initialised "
        f"({module.FRESH_NOTE})")
  if tokenizer_files:
    _copy_tokenizer(tokenizer_files, os.path.join(workdir, "tokenizer"))
    config.data.tokenizer = "file"
    config.data.tokenizer_path = os.path.abspath(os.path.join(workdir, "tokenizer"))
  if given_data:  # The data it will fine-tune on must fit the vocabulary.
    models.vocab_size(config, data.load(config))
  write_workdir(config, params, workdir)
  return config


restore = run_dir.restore_params


def exporter_for(m):
  """The converter that writes our model section `m`, or one ConfigError saying why none can."""
  reasons = []
  for module in converters():
    if module.FAMILY != m.family:
      continue
    why = module.unsupported(m)
    if not why:
      return module
    reasons.append(f"{'/'.join(module.MODEL_TYPES)} needs {'; '.join(why)}")
  if not reasons:
    raise ConfigError(f"model.family={m.family!r} has no Hugging Face counterpart here; export writes "
                      f"{', '.join(sorted({c.FAMILY for c in converters()}))} models")
  raise ConfigError(f"this {m.family} cannot be written as a Transformers model: {' | '.join(reasons)}")


def export_hf(workdir: str, hf_dir: str, at_step: int | None = None) -> str:
  """Writes the model of `workdir` as a Transformers directory (config.json + model.safetensors, the tokenizer
  files); returns its model_type."""
  config, params, _ = restore(workdir, at_step)
  m = config.model
  module = exporter_for(m)
  if m.scan_layers:  # Transformers keeps one set of weights per layer.
    params = gpt.unstack_layers(params)
  params = lora.merge(params, m.lora)
  m.vocab_size = tree.shapes(params).get("wte/embedding", (m.vocab_size,))[0]
  specials = {}
  os.makedirs(hf_dir, exist_ok=True)
  if config.data.tokenizer == "file" and config.data.tokenizer_path:
    tokenizer_files = tokenizers.files(config.data.tokenizer_path)
    _copy_tokenizer(tokenizer_files, hf_dir)
    specials = special_ids(tokenizer_files)
  hf = module.hf_config(m, specials)
  with open(os.path.join(hf_dir, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  files.write(os.path.join(hf_dir, WEIGHTS), from_params(params, m, module))
  return hf["model_type"]
