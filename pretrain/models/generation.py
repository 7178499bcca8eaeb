"""Autoregressive generation through a family's generation steps (a GPT's key-value cache, an LSTM's carry;
pretrain/models/__init__.py: generation_steps): what pretrain.sample and the benchmark harness continue
prompts with.

One compiled call, with the parameters as its arguments, reads the prompts at once (prefill), then adds a
token to every row per step of a jitted loop over a fixed-size cache. Rows are left-padded to the longest
prompt: padding is masked out of attention and each row's positions count from its first real token, so a
row's output does not depend on the rows beside it.
"""
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from pretrain import plugins
from pretrain.errors import ConfigError


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
