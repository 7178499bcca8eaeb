"""Continue prompts from a run's checkpoint through its family's generation steps: a GPT's key-value cache, an
LSTM's carry (pretrain/models/__init__.py: generation_steps).

  python -m pretrain.sample --workdir DIR [--prompt TEXT | --prompts_file PATH] [--chat] [--num_samples N] [--mesh_shape D,F,T]
      [--max_new_tokens N] [--temperature T] [--top_k K] [--top_p P] [--stop TEXT] [--seed S] [--format text|jsonl]

How the prompts are continued: pretrain/models/generation.py. Stderr gets the call's speed, compilation
excluded.
"""
import json
import os
import sys

import numpy as np
from absl import flags

from pretrain import cli, models
from pretrain.errors import ConfigError
from pretrain.models.generation import (Generation, check_length, filter_logits, generate, generating_family,  # noqa: F401
                                        generator, left_pad, pick)

FLAGS = flags.FLAGS


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
  strategy = None
  if FLAGS.mesh_shape:  # The parameters split over a mesh as a mesh run splits them; XLA places the rest.
    from pretrain.trainer import parallel
    config.parallel.strategy = "mesh"
    config.parallel.mesh_shape = tuple(int(x) for x in FLAGS.mesh_shape.strip("()").split(","))
    strategy = parallel.make(config)
  run = run_dir.load(FLAGS.workdir, at_step=FLAGS.step, config=config, strategy=strategy)
  texts = [t for t in _prompt_texts() for _ in range(FLAGS.num_samples)]
  if FLAGS.chat:  # As data.messages_field rendered the chats it was fine-tuned on.
    from pretrain.data import sft
    template = sft.ChatTemplate.of(config.data.tokenizer_path)
    texts = [template.render([{"role": "user", "content": t}], add_generation_prompt=True) for t in texts]
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
  flags.DEFINE_bool("chat", False, "Each prompt is a user's message: rendered in the run's chat template (its "
                    "tokenizer's tokenizer_config.json) with the assistant's generation prompt, as data.messages_field "
                    "fine-tuning renders chats.")
  flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate per sample; with the prompt at most model.context "
                       "for a GPT.")
  flags.DEFINE_float("temperature", 1.0, "Softmax temperature; 0 picks the most likely token (greedy).")
  flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens; 0 uses all.")
  flags.DEFINE_float("top_p", 1.0, "Sample among the fewest most likely tokens whose probability reaches p; "
                     "1 uses all.")
  flags.DEFINE_string("stop", None, "Cut each completion before this text. A tokenizer's end-of-text token always "
                      "ends a sample.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_string("mesh_shape", None, "data,fsdp,tensor sizes (e.g. 1,1,8): the parameters restored into their "
                      "shards on that mesh, as parallel.strategy=mesh splits them; default one device.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
  flags.DEFINE_enum("format", "text", ["text", "jsonl"], "text: each sample as prompt + completion, separated by "
                    "a line of dashes; jsonl: one {\"prompt\", \"completion\"} object a line.")
  flags.DEFINE_enum("dtype", "float32", ["float32", "config"], "Compute dtype: float32 whatever the run trained in "
                    "(greedy output then matches a float32 implementation such as Transformers'), or config: the "
                    "run's model.dtype (bfloat16 is faster on hardware built for it).")


if __name__ == "__main__":
  define_flags()
  cli.run(main, required=("workdir",))
