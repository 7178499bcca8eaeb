"""Continue a prompt from a run's latest checkpoint.

  python -m pretrain.sample --workdir DIR --prompt TEXT --max-new-tokens N [--temperature T] [--top-k K]
"""
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from pretrain import cli

flags.DEFINE_string("workdir", None, "A run directory with config.json and checkpoints.")
flags.DEFINE_string("prompt", "\n", "Text to continue.")
flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate.")
flags.DEFINE_float("temperature", 1.0, "Softmax temperature; 0 picks the most likely token.")
flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens; 0 uses all.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
FLAGS = flags.FLAGS


def generate(model, params, prompt_ids, *, max_new_tokens, context, temperature, top_k, seed):
  """Autoregressive sampling with a fixed-size window, so one compiled forward serves every position."""
  @jax.jit
  def next_logits(window_1xT, position):
    logits_1xTxV = model.apply({"params": params}, window_1xT, train=False)
    return logits_1xTxV[0, position]

  ids = list(prompt_ids)
  rng = jax.random.key(seed)
  for _ in range(max_new_tokens):
    window = ids[-context:]
    padded = np.zeros((1, context), np.int32)
    padded[0, :len(window)] = window
    logits = next_logits(jnp.asarray(padded), len(window) - 1)
    if temperature <= 0:
      token = int(jnp.argmax(logits))
    else:
      logits = logits / temperature
      if top_k:
        kth = jnp.sort(logits)[-min(top_k, logits.shape[-1])]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
      rng, key = jax.random.split(rng)
      token = int(jax.random.categorical(key, logits))
    ids.append(token)
  return ids[len(prompt_ids):]


def main(argv):
  del argv
  from pretrain import run_dir
  run = run_dir.load(FLAGS.workdir, at_step=FLAGS.step)
  if FLAGS.prompt:
    prompt = run.dataset.encode(FLAGS.prompt)
  else:
    prompt = np.array([run.dataset.vocab_size - 1], np.int32)
  if run.dataset.name == "markov":  # Sequences start with BOS.
    prompt = np.concatenate([[run.dataset.vocab_size - 1], prompt]).astype(np.int32)
  out = generate(run.model, run.params, prompt.tolist(), max_new_tokens=FLAGS.max_new_tokens,
                 context=run.config.model.context, temperature=FLAGS.temperature, top_k=FLAGS.top_k, seed=FLAGS.seed)
  print(FLAGS.prompt + run.dataset.decode(out))


if __name__ == "__main__":
  cli.run(main, required=("workdir",))
