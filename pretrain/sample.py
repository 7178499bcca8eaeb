"""Continue prompts from a run's checkpoint through its family's generation steps: a GPT's key-value cache, an
LSTM's carry (pretrain/models/__init__.py: generation_steps).

  python -m pretrain.sample --workdir DIR [--prompt TEXT | --prompts_file PATH] [--num_samples N]
      [--max_new_tokens N] [--temperature T] [--top_k K] [--top_p P] [--stop TEXT] [--seed S] [--format text|jsonl]

One compiled call, with the parameters as its arguments, reads the prompts at once (prefill), then adds a
token to every row per step of a jitted loop over a fixed-size cache. Rows are left-padded to the longest
prompt: padding is masked out of attention and each row's positions count from its first real token, so a
row's output does not depend on the rows beside it. Stderr gets the call's speed, compilation excluded.
"""
import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from pretrain import cli, models, plugins
from pretrain.errors import ConfigError

FLAGS = flags.FLAGS


def filter_logits(logits_BxV, top_k: int = 0, top_p: float = 1.0):
  """-inf outside the allowed tokens: the top_k most likely (0: all), then the fewest most likely whose
  probability reaches top_p (1.0: all); the most likely token always stays."""
  if top_k and top_k < logits_BxV.shape[-1]:
    kth_Bx1 = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
  if top_p < 1.0:
    sorted_BxV = jnp.flip(jnp.sort(logits_BxV, axis=-1), axis=-1)
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV  # The mass of the more likely tokens.
    kept_B = jnp.sum(before_BxV < top_p, axis=-1)
    cutoff_Bx1 = jnp.take_along_axis(sorted_BxV, kept_B[:, None] - 1, axis=-1)
    logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)
  return logits_BxV


def pick(logits_BxV, key, temperature: float, top_k: int = 0, top_p: float = 1.0):
  """The next token of each row: the most likely at temperature 0, else a draw from the filtered softmax."""
  if temperature <= 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, filter_logits(logits_BxV / temperature, top_k, top_p)).astype(jnp.int32)


def left_pad(prompts: list) -> tuple[np.ndarray, np.ndarray]:
  """tokens [B, P] int32 and valid [B, P] bool, each prompt right-aligned behind padding (token 0)."""
  P = max(len(p) for p in prompts)
  tokens_BxP, valid_BxP = np.zeros((len(prompts), P), np.int32), np.zeros((len(prompts), P), bool)
  for row, p in enumerate(prompts):
    tokens_BxP[row, P - len(p):], valid_BxP[row, P - len(p):] = p, True
  return tokens_BxP, valid_BxP


def generator(model, family, *, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
              top_p: float = 1.0, end_id: int | None = None):
  """fn(params, tokens_BxP, valid_BxP, key) -> (new tokens [B, N], lengths [B]) to jit: a row's length counts
  its tokens up to and with end_id; the loop stops once every row has one."""
  def generate_fn(params, tokens_BxP, valid_BxP, key):
    B, P = tokens_BxP.shape
    prefill, step = family.generation_steps(model, params, P + max_new_tokens)
    logits_BxV, state = prefill(tokens_BxP, valid_BxP)

    def body(loop):
      i, logits_BxV, state, new_BxN, lengths_B, done_B = loop
      token_B = pick(logits_BxV, jax.random.fold_in(key, i), temperature, top_k, top_p)
      new_BxN = jax.lax.dynamic_update_slice(new_BxN, token_B[:, None], (0, i))
      lengths_B = jnp.where(done_B, lengths_B, i + 1)
      done_B = done_B | (token_B == (-1 if end_id is None else end_id))
      logits_BxV, state = step(token_B, state)  # The last step's logits go unused; the cache has room for it.
      return i + 1, logits_BxV, state, new_BxN, lengths_B, done_B

    def more(loop):
      return (loop[0] < max_new_tokens) & ~jnp.all(loop[-1])

    start = (jnp.zeros((), jnp.int32), logits_BxV, state, jnp.zeros((B, max_new_tokens), jnp.int32),
             jnp.zeros((B,), jnp.int32), jnp.zeros((B,), bool))
    _, _, _, new_BxN, lengths_B, _ = jax.lax.while_loop(more, body, start)
    return new_BxN, lengths_B
  return generate_fn


@dataclasses.dataclass
class Generation:
  tokens: list  # Each row's new tokens, without the end-of-text token that stopped it.
  count: int  # New tokens over all rows, end-of-text tokens included.
  seconds: float  # The compiled call alone.

  @property
  def tokens_per_s(self) -> float:
    return self.count / max(self.seconds, 1e-9)


def generating_family(name: str, where: str = ""):
  """The family module `name` names (model.family), which must have generation steps."""
  family = plugins.load(plugins.FAMILY, name)
  if not hasattr(family, "generation_steps"):
    able = [n for n in plugins.builtins(plugins.FAMILY)
            if hasattr(plugins.builtin(plugins.FAMILY, n), "generation_steps")]
    raise ConfigError(f"{where}model.family={name}, which is not autoregressive (its module has no "
                      f"generation_steps), so it cannot continue a prompt; sample from a run of model.family="
                      f"{' or '.join(able)}")
  return family


def check_length(prompts: list, max_new_tokens: int, context: int) -> None:
  longest = max(len(p) for p in prompts)
  if longest + max_new_tokens > context:
    raise ConfigError(f"the prompt has {longest} tokens and --max_new_tokens={max_new_tokens}, "
                      f"{longest + max_new_tokens} in all, more than model.context={context}; shorten the prompt "
                      f"or set --max_new_tokens={max(context - longest, 0)} or less")


def generate(model, params, prompts: list, *, family: str = "gpt", max_new_tokens: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0, end_id: int | None = None,
             max_length: int | None = None) -> Generation:
  """Continues each prompt (a list of token ids; rows of one batch) by up to max_new_tokens tokens, through the
  generation steps of the model.family `family` names; prompt and new tokens fit in max_length (None: no limit)."""
  family = generating_family(family)
  if max_length is not None:
    check_length(prompts, max_new_tokens, max_length)
  tokens_BxP, valid_BxP = left_pad(prompts)
  fn = jax.jit(generator(model, family, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                         top_p=top_p, end_id=end_id))
  args = (params, jnp.asarray(tokens_BxP), jnp.asarray(valid_BxP), jax.random.key(seed))
  compiled = fn.lower(*args).compile()
  start = time.perf_counter()
  new_BxN, lengths_B = jax.block_until_ready(compiled(*args))
  seconds = time.perf_counter() - start
  new_BxN, lengths_B = np.asarray(new_BxN), np.asarray(lengths_B)
  rows = []
  for row, n in zip(new_BxN, lengths_B):
    rows.append(row[:n - int(end_id is not None and n > 0 and row[n - 1] == end_id)].tolist())
  return Generation(rows, int(lengths_B.sum()), seconds)


def _check_flags(config) -> None:
  generating_family(config.model.family, where=f"{FLAGS.workdir} holds ")
  if config.objective != "next_token":
    raise ConfigError(f"{FLAGS.workdir} was trained with objective={config.objective}, so its model predicts no "
                      "next token; sample from a run of objective=next_token")
  for name, ok, want in (("max_new_tokens", FLAGS.max_new_tokens >= 1, "1 or more"),
                         ("num_samples", FLAGS.num_samples >= 1, "1 or more"),
                         ("top_k", FLAGS.top_k >= 0, "0 or more"), ("top_p", 0 < FLAGS.top_p <= 1, "in (0, 1]"),
                         ("temperature", FLAGS.temperature >= 0, "0 or more")):
    if not ok:
      raise ConfigError(f"--{name}={FLAGS[name].value} must be {want}")


def _prompt_texts() -> list[str]:
  if FLAGS.prompts_file is None:
    return [FLAGS.prompt]
  if not os.path.isfile(FLAGS.prompts_file):
    raise ConfigError(f"--prompts_file={FLAGS.prompts_file} does not exist; give a text file with one prompt a line")
  texts = open(FLAGS.prompts_file, encoding="utf-8").read().splitlines()
  if not texts:
    raise ConfigError(f"--prompts_file={FLAGS.prompts_file} is empty; give a text file with one prompt a line")
  return texts


def _encode(dataset, text: str) -> list[int]:
  ids = dataset.encode(text) if text else np.array([dataset.vocab_size - 1], np.int32)
  if dataset.bos_id is not None:  # The data's sequences start with it.
    ids = np.concatenate([[dataset.bos_id], ids])
  return [int(i) for i in ids]


def main(argv):
  del argv
  from pretrain.trainer import run_dir
  config = run_dir.saved_config(FLAGS.workdir)
  _check_flags(config)
  if FLAGS.dtype == "float32":
    config.model.dtype = "float32"
  config.model.remat = "none"  # Rematerialisation saves memory in the backward pass only.
  run = run_dir.load(FLAGS.workdir, at_step=FLAGS.step, config=config)
  texts = [t for t in _prompt_texts() for _ in range(FLAGS.num_samples)]
  end_id = getattr(run.dataset.tokenizer, "end_of_text", None)
  family = models.family(config)
  out = generate(run.model, run.params, [_encode(run.dataset, t) for t in texts], family=config.model.family,
                 max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature, top_k=FLAGS.top_k,
                 top_p=FLAGS.top_p, seed=FLAGS.seed, end_id=end_id,
                 max_length=family.max_length(config) if hasattr(family, "max_length") else None)
  for i, (text, new) in enumerate(zip(texts, out.tokens)):
    completion = run.dataset.decode(new)
    if FLAGS.stop and FLAGS.stop in completion:
      completion = completion[:completion.index(FLAGS.stop)]
    if FLAGS.format == "jsonl":
      print(json.dumps({"prompt": text, "completion": completion}, ensure_ascii=False))
    else:
      print(("" if i == 0 else "-" * 40 + "\n") + text + completion)
  print(f"generated {out.count} tokens in {out.seconds:.2f} s ({out.tokens_per_s:,.0f} tokens/s)", file=sys.stderr,
        flush=True)


def define_flags():
  """Only when run as a program, so that importing this module next to other CLIs defines no flag twice."""
  flags.DEFINE_string("workdir", None, "A run directory with config.json and checkpoints.")
  flags.DEFINE_string("prompt", "\n", "Text to continue.")
  flags.DEFINE_string("prompts_file", None, "A text file of prompts, one a line, in place of --prompt; one batch.")
  flags.DEFINE_integer("num_samples", 1, "Samples of each prompt.")
  flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate per sample; with the prompt at most model.context "
                       "for a GPT.")
  flags.DEFINE_float("temperature", 1.0, "Softmax temperature; 0 picks the most likely token (greedy).")
  flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens; 0 uses all.")
  flags.DEFINE_float("top_p", 1.0, "Sample among the fewest most likely tokens whose probability reaches p; "
                     "1 uses all.")
  flags.DEFINE_string("stop", None, "Cut each completion before this text. A tokenizer's end-of-text token always "
                      "ends a sample.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
  flags.DEFINE_enum("format", "text", ["text", "jsonl"], "text: each sample as prompt + completion, separated by "
                    "a line of dashes; jsonl: one {\"prompt\", \"completion\"} object a line.")
  flags.DEFINE_enum("dtype", "float32", ["float32", "config"], "Compute dtype: float32 whatever the run trained in "
                    "(greedy output then matches a float32 implementation such as Transformers'), or config: the "
                    "run's model.dtype (bfloat16 is faster on hardware built for it).")


if __name__ == "__main__":
  define_flags()
  cli.run(main, required=("workdir",))
