"""Hugging Face GPT-2 <-> this project's GPT, exactly and offline, through safetensors files on disk.

  python -m pretrain.hf import --hf-dir D --workdir W [--config configs/NAME.py[:VARIANT] --config.a.b=value ...]
  python -m pretrain.hf export --workdir W --hf-dir D [--step N]

import reads a Transformers GPT-2 directory (config.json + model.safetensors) and writes W as pretraining
writes a run directory: config.json and an Orbax checkpoint of the whole train state (step 0, fresh optimizer
state), so W serves --config.init.workdir, pretrain.evaluate, pretrain.sample and resuming. The saved config
is --config's (default configs/base.py) with the model section taken from GPT-2's config.json; tokenizer
files in D are copied into W/tokenizer and become data.tokenizer=file. export writes the reverse, loadable by
transformers.GPT2LMHeadModel.from_pretrained(D). Weights are read and written with safetensors only.

Name map (GPT-2 -> ours): wte/wpe.weight -> wte/wpe.embedding; h.N.{ln_1,ln_2} and ln_f weight/bias ->
h_N/.../scale/bias; h.N.attn.{c_attn,c_proj} and h.N.mlp.{c_fc,c_proj} weight/bias -> kernel/bias. GPT-2's
Conv1D stores its weight as [in, out], which is already a Dense kernel; only an untied lm_head (an nn.Linear,
[out, in]) is transposed.
"""
import json
import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from pretrain import cli, configlib, data, models
from pretrain.trainer import checkpoint, layout, optim, run_dir, step
from pretrain.data import tokenizers
from pretrain.models import gpt
from pretrain.errors import CheckpointError, ConfigError, DataError

FLAGS = flags.FLAGS

WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"
# Transformers' activation names: the tanh approximation has three, the exact (erf) GELU one.
_GELU_APPROXIMATE = {"gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True, "gelu": False}
_BUFFERS = (".attn.bias", ".attn.masked_bias")  # Causal-mask buffers that old GPT-2 files carry; not weights.
_MAX_LISTED = 8


def _fail(what: str, problems: list[str]) -> None:
  if problems:
    listed = "; ".join(problems[:_MAX_LISTED]) + (f"; and {len(problems) - _MAX_LISTED} more"
                                                   if len(problems) > _MAX_LISTED else "")
    raise CheckpointError(f"{what}: {listed}")


def read_hf_config(hf_dir: str) -> dict:
  path = os.path.join(hf_dir, "config.json")
  if not os.path.isfile(path):
    raise CheckpointError(f"{hf_dir} has no config.json; point --hf-dir at a directory written by save_pretrained")
  return json.load(open(path))


def model_section(hf: dict) -> dict:
  """Our model.* settings for a GPT-2 config.json; one error lists everything that does not fit."""
  problems = []
  if hf.get("model_type") != "gpt2":
    problems.append(f"model_type={hf.get('model_type')!r} (only 'gpt2')")
  act = hf.get("activation_function", "gelu_new")
  if act not in _GELU_APPROXIMATE:
    problems.append(f"activation_function={act!r} (supported: {', '.join(_GELU_APPROXIMATE)})")
  for key, supported in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                         ("add_cross_attention", False)):
    if hf.get(key, supported) != supported:
      problems.append(f"{key}={hf[key]} (only {supported})")
  width, heads = hf.get("n_embd", 768), hf.get("n_head", 12)
  inner = hf.get("n_inner") or 4 * width
  if width % heads:
    problems.append(f"n_head={heads} does not divide n_embd={width}")
  if inner % width:
    problems.append(f"n_inner={inner} is not a multiple of n_embd={width}")
  _fail("cannot import this GPT-2", problems)
  # Our GPT has one dropout rate; where GPT-2's three differ, the residual one (resid_pdrop) is kept.
  dropouts = {hf.get(k, 0.1) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
  return dict(family="gpt", vocab_size=hf.get("vocab_size", 50257), context=hf.get("n_positions", 1024),
              num_layers=hf.get("n_layer", 12), num_heads=heads, width=width, mlp_ratio=inner // width,
              bias=True, position="learned", tie_embeddings=hf.get("tie_word_embeddings", True),
              gelu_approximate=_GELU_APPROXIMATE[act], layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
              dropout=hf.get("resid_pdrop", 0.1) if len(dropouts) > 1 else dropouts.pop())


def hf_config(m) -> dict:
  """GPT-2's config.json for our model section `m` (one dropout rate serves GPT-2's three)."""
  return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": m.vocab_size,
          "n_positions": m.context, "n_embd": m.width, "n_layer": m.num_layers, "n_head": m.num_heads,
          "n_inner": m.mlp_ratio * m.width, "activation_function": "gelu_new" if m.gelu_approximate else "gelu",
          "layer_norm_epsilon": m.layer_norm_eps, "resid_pdrop": m.dropout, "embd_pdrop": m.dropout,
          "attn_pdrop": m.dropout, "tie_word_embeddings": m.tie_embeddings, "scale_attn_weights": True,
          "initializer_range": 0.02, "dtype": "float32", "bos_token_id": None, "eos_token_id": None}


def name_map(num_layers: int, tied: bool) -> list[tuple[tuple[str, ...], str, bool]]:
  """(our parameter path, GPT-2 tensor name, transposed) for every weight of a GPT-2."""
  pairs = [(("wte", "embedding"), "wte.weight", False), (("wpe", "embedding"), "wpe.weight", False)]
  layers = [("ln_1",), ("attn", "c_attn"), ("attn", "c_proj"), ("ln_2",), ("mlp", "c_fc"), ("mlp", "c_proj")]
  for i in range(num_layers):
    for module in layers:
      ours = (f"h_{i}", *module)
      pairs.append((ours + ("scale" if module[0].startswith("ln") else "kernel",),
                    ".".join((f"h.{i}", *module, "weight")), False))
      pairs.append((ours + ("bias",), ".".join((f"h.{i}", *module, "bias")), False))
  pairs += [(("ln_f", "scale"), "ln_f.weight", False), (("ln_f", "bias"), "ln_f.bias", False)]
  if not tied:
    pairs.append((("lm_head", "kernel"), "lm_head.weight", True))
  return pairs


def read_tensors(hf_dir: str) -> dict[str, np.ndarray]:
  """GPT-2's tensors as float32 numpy arrays, named without the `transformer.` prefix."""
  from safetensors import safe_open
  index = os.path.join(hf_dir, WEIGHTS_INDEX)
  if os.path.isfile(index):
    files = sorted(set(json.load(open(index))["weight_map"].values()))
  elif os.path.isfile(os.path.join(hf_dir, WEIGHTS)):
    files = [WEIGHTS]
  else:
    found = ", ".join(sorted(os.listdir(hf_dir))) if os.path.isdir(hf_dir) else "nothing"
    raise CheckpointError(f"{hf_dir} has no {WEIGHTS} (found: {found}); only safetensors are read, never pickle: "
                          "save the model with save_pretrained(DIR, safe_serialization=True)")
  tensors = {}
  for name in files:
    with safe_open(os.path.join(hf_dir, name), framework="flax") as f:  # "flax" reads bfloat16 too.
      for key in f.keys():
        tensors[key.removeprefix("transformer.")] = np.asarray(f.get_tensor(key), dtype=np.float32)
  return tensors


def _gpt(config):
  # The GPT's shapes need only the vocabulary size, which the config carries; no dataset is read.
  return gpt.GPT(gpt.gpt_config(config, types.SimpleNamespace(vocab_size=config.model.vocab_size)))


def _abstract_params(config) -> dict:
  tokens = jnp.zeros((1, config.model.context), jnp.int32)
  return jax.eval_shape(lambda: _gpt(config).init(jax.random.key(0), tokens, train=False))["params"]


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def to_params(tensors: dict[str, np.ndarray], config) -> dict:
  """GPT-2 tensors -> our parameter tree, after checking every name and shape against our GPT."""
  m, expected = config.model, _abstract_params(config)
  pairs = name_map(m.num_layers, m.tie_embeddings)
  problems = []
  for ours, theirs, transposed in pairs:
    want = _get(expected, ours).shape[::-1] if transposed else _get(expected, ours).shape
    if theirs not in tensors:
      problems.append(f"{theirs} missing (expected {list(want)})")
    elif tensors[theirs].shape != want:
      problems.append(f"{theirs} has shape {list(tensors[theirs].shape)}, config.json implies {list(want)}")
  known = {theirs for _, theirs, _ in pairs} | ({"lm_head.weight"} if m.tie_embeddings else set())
  problems += [f"{k} unexpected" for k in sorted(tensors) if k not in known and not k.endswith(_BUFFERS)]
  _fail("GPT-2 weights do not fit its config.json", problems)
  params = {}
  for ours, theirs, transposed in pairs:
    node = params
    for key in ours[:-1]:
      node = node.setdefault(key, {})
    node[ours[-1]] = jnp.asarray(tensors[theirs].T if transposed else tensors[theirs])
  return params


def from_params(params: dict, m) -> dict[str, np.ndarray]:
  """Our parameter tree -> GPT-2 tensors; a GPT without biases gets zero biases, which compute the same."""
  tensors = {}
  for ours, theirs, transposed in name_map(m.num_layers, m.tie_embeddings):
    try:
      value = np.asarray(_get(params, ours), np.float32)
    except KeyError:
      if ours[-1] != "bias":
        raise CheckpointError(f"the checkpoint has no parameter {'/'.join(ours)}; is it a GPT of model.family=gpt?")
      value = np.zeros(_get(params, ours[:-1] + ("scale" if ours[-2].startswith("ln") else "kernel",)).shape[-1:],
                       np.float32)
    prefix = "" if theirs.startswith("lm_head") else "transformer."
    tensors[prefix + theirs] = np.ascontiguousarray(value.T if transposed else value)
  return tensors


def write_workdir(config, params, workdir: str) -> None:
  """config.json and checkpoint 0 of the whole train state, as pretrain.main writes them."""
  tx = optim.make(config)
  state = step.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=jax.jit(tx.init)(params),
                          model_state={})
  os.makedirs(workdir, exist_ok=True)
  run_dir.write_config(workdir, config)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.train.keep_checkpoints, async_save=False)
  ckpt.save(0, state)
  ckpt.close()


def import_hf(hf_dir: str, workdir: str, config=None):
  """Writes GPT-2 in `hf_dir` into the new run directory `workdir`; returns the saved config."""
  if os.path.isdir(layout.checkpoints(workdir)) and os.listdir(layout.checkpoints(workdir)):
    raise CheckpointError(f"{workdir} already holds checkpoints; import into a new --workdir")
  hf = read_hf_config(hf_dir)
  given_data = config is not None
  base = configlib.load(configlib.BASE_CONFIG)
  if config is None:
    config = base
    config.data.name = "text"  # Text is what a GPT-2 reads; --config.data.path names it when fine-tuning.
  # The model is GPT-2 as Transformers computes it: every model field not read from hf_dir takes its default
  # (float32, GELU, no QK-norm), whatever the config given for the data chooses for its own models.
  with config.unlocked():
    config.model = base.model
  for key, value in model_section(hf).items():
    config.model[key] = value
  config.objective = "next_token"
  params = to_params(read_tensors(hf_dir), config)
  try:
    tokenizer_files = tokenizers.files(hf_dir)
  except DataError:  # No tokenizer beside the weights: the data config has to bring one that fits.
    tokenizer_files = []
  if tokenizer_files:
    os.makedirs(os.path.join(workdir, "tokenizer"), exist_ok=True)
    for f in tokenizer_files:
      shutil.copy(f, os.path.join(workdir, "tokenizer", os.path.basename(f)))
    config.data.tokenizer = "file"
    config.data.tokenizer_path = os.path.abspath(os.path.join(workdir, "tokenizer"))
  if given_data:  # The data it will fine-tune on must fit the vocabulary.
    models.vocab_size(config, data.load(config))
  write_workdir(config, params, workdir)
  return config


def restore(workdir: str, at_step: int | None = None) -> tuple[object, dict, int]:
  """(saved config, parameters as numpy arrays, step) of a run directory, reading neither its dataset nor
  its optimizer state."""
  config = run_dir.saved_config(workdir)
  directory = layout.checkpoints(os.path.abspath(workdir))
  chosen, tree = checkpoint.saved_tree(directory, run_dir.checkpoint_step(workdir, at_step))
  target = {"params": jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), tree["params"])}
  return config, checkpoint.restore_subtree(directory, chosen, target)["params"], chosen


def export_hf(workdir: str, hf_dir: str, at_step: int | None = None) -> None:
  """Writes the GPT of `workdir` as a Transformers GPT-2 directory (config.json + model.safetensors)."""
  from safetensors.numpy import save_file
  config, params, _ = restore(workdir, at_step)
  m = config.model
  if m.family != "gpt":
    raise ConfigError(f"{workdir} holds model.family={m.family!r}; export writes GPT-2, from model.family=gpt")
  if m.position != "learned":
    raise ConfigError(f"{workdir} holds a GPT with model.position={m.position!r}; GPT-2 has learned position "
                      "embeddings, so only model.position=learned exports")
  if m.qk_norm or m.activation != "gelu":
    raise ConfigError(f"{workdir} holds a GPT with qk_norm={m.qk_norm}, activation={m.activation!r}; GPT-2 has neither QK-norm nor another activation than GELU, "
                      "so only model.qk_norm=false, model.activation=gelu export")
  m.vocab_size, m.context = params["wte"]["embedding"].shape[0], params["wpe"]["embedding"].shape[0]
  os.makedirs(hf_dir, exist_ok=True)
  hf = hf_config(m)
  if config.data.tokenizer == "file" and config.data.tokenizer_path:
    tokenizer = tokenizers.FileTokenizer(config.data.tokenizer_path)
    for f in tokenizer.files:
      shutil.copy(f, os.path.join(hf_dir, os.path.basename(f)))
    end = tokenizer.token_id(tokenizers.END_OF_TEXT)
    hf["bos_token_id"] = hf["eos_token_id"] = end
  with open(os.path.join(hf_dir, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  save_file(from_params(params, m), os.path.join(hf_dir, WEIGHTS), metadata={"format": "pt"})


def main(argv):
  commands = ("import", "export")
  if len(argv) != 2 or argv[1] not in commands:
    cli.fail("usage: python -m pretrain.hf import --hf-dir D --workdir W | export --workdir W --hf-dir D")
  for name in ("hf-dir", "workdir"):
    if FLAGS[name].value is None:
      cli.fail(f"--{name} is required")
  if argv[1] == "import":
    config = cli.load_config(FLAGS.config, cli.OVERRIDES) if FLAGS.config else None
    config = import_hf(FLAGS["hf-dir"].value, FLAGS.workdir, config)
    m = config.model
    print(f"imported GPT-2 ({m.num_layers} layers, width {m.width}, vocab {m.vocab_size}, context {m.context}) "
          f"into {FLAGS.workdir}; tokenizer: {config.data.tokenizer_path or 'none in --hf-dir'}")
  else:
    export_hf(FLAGS.workdir, FLAGS["hf-dir"].value, FLAGS.step)
    print(f"exported {FLAGS.workdir} to {FLAGS['hf-dir'].value}")


def define_flags():
  """Only when run as a program, so that importing this module next to other CLIs defines no flag twice."""
  flags.DEFINE_string("hf-dir", None, "Transformers GPT-2 directory: config.json + model.safetensors.")
  flags.DEFINE_alias("hf_dir", "hf-dir")
  flags.DEFINE_string("workdir", None, "Run directory to write (import) or read (export).")
  flags.DEFINE_string("config", None, "import: config whose non-model sections W keeps; default configs/base.py.")
  flags.DEFINE_integer("step", None, "export: checkpoint step; default the latest.")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
