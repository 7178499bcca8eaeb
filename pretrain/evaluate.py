"""Evaluate a run's checkpoint on the validation split of a dataset.

  python -m pretrain.evaluate --workdir W --config configs/NAME.py[:VARIANT] [--step N] [--config.a.b=value ...]

The model comes from W's saved config (with its objective and optimizer, which the checkpoint's layout
follows); the data and the eval batch size come from --config. The whole validation split is evaluated unless
--config.eval.batches is given. `--config.model.*` overrides that keep every parameter shape (dtype,
attention) apply to W's model; one that changes a shape stops with the list of what does not fit.

Output: the metrics (nats/token as `loss`, bits/token, perplexity, each with its standard error over eval
batches) as one JSON line, the last line of standard output, also appended to W/metrics.jsonl with
split "evaluate".
"""
import copy
import json

import jax
import ml_collections
from absl import flags

from pretrain import cli, configlib, data, tree
from pretrain.trainer import checkpoint, layout, metrics, run_dir, step
from pretrain.errors import ConfigError

FLAGS = flags.FLAGS


def eval_config(saved, given, overrides=()) -> ml_collections.ConfigDict:
  """W's saved config with the data and eval sections of `given`; eval.batches=0 unless overridden."""
  config = copy.deepcopy(saved)
  config.data = ml_collections.ConfigDict(given.data.to_dict())
  config.eval = ml_collections.ConfigDict(given.eval.to_dict())
  config.eval.batch_size = given.eval.batch_size or given.train.batch_size
  keys = {key for key, _ in overrides}
  if "eval.batches" not in keys:
    config.eval.batches = 0
  for key, value in overrides:
    if key.startswith("model."):
      configlib.set_value(config, key, value)
  return config


def check_fits(parts, saved_data, workdir: str, at_step: int) -> None:
  """Stops with one error listing every entry where W's checkpoint and the model this data implies differ."""
  config, dataset = parts.config, parts.dataset
  saved = config.model
  if saved.vocab_size and dataset.vocab_size > saved.vocab_size:
    raise ConfigError(f"the data has {dataset.vocab_size} token ids but {workdir}'s model reads {saved.vocab_size}; "
                      "evaluate on data with the model's tokenizer (data.tokenizer, data.tokenizer_path)")
  if saved_data.tokenizer == "file" and config.data.tokenizer != "file":
    raise ConfigError(f"{workdir}'s model reads ids of the tokenizer in {saved_data.tokenizer_path}; set "
                      f"--config.data.tokenizer=file --config.data.tokenizer_path={saved_data.tokenizer_path}")
  want = {"params": parts.shapes.params, **parts.shapes.model_state}
  _, have = checkpoint.saved_tree(layout.checkpoints(workdir), at_step)
  have = {"params": have["params"], **(have.get("model_state") or {})}
  want, have = tree.shapes(want), tree.shapes(have)
  problems = [f"{name}: checkpoint {have.get(name, 'missing')}, model {want.get(name, 'missing')}"
              for name in sorted(set(want) | set(have)) if want.get(name) != have.get(name)]
  if problems:
    raise ConfigError(f"{workdir}'s checkpoint does not fit its model with this data ({dataset.vocab_size} token ids)"
                      f": {'; '.join(problems[:8])}{'; ...' if len(problems) > 8 else ''}")


def evaluate(workdir: str, given, at_step: int | None = None, overrides=()) -> dict:
  """Metrics of W's checkpoint on `given`'s validation split; also appended to W/metrics.jsonl."""
  saved = run_dir.saved_config(workdir)
  config = eval_config(saved, given, overrides)
  at_step = run_dir.checkpoint_step(workdir, at_step)
  data.check(config)
  parts = run_dir.build(config)
  check_fits(parts, saved.data, workdir, at_step)
  run = run_dir.load(workdir, at_step, parts=parts)
  batch_size, accum_steps = configlib.eval_batching(config, num_devices=1)
  eval_step = jax.jit(step.make_eval_step(parts.model, parts.objective.loss, accum_steps=accum_steps))
  out = run_dir.evaluate(parts, eval_step, run.state(), batch_size=batch_size, max_batches=config.eval.batches)
  out["data"] = parts.dataset.name
  writer = metrics.MetricWriter(workdir)
  writer.write(run.step, "evaluate", out)
  writer.close()
  return {"step": run.step, **out}


def main(argv):
  del argv
  given = cli.load_config(FLAGS.config, cli.OVERRIDES)
  print(json.dumps(evaluate(FLAGS.workdir, given, FLAGS.step, cli.OVERRIDES)), flush=True)


def define_flags():
  """Only when run as a program, so that importing this module next to other CLIs defines no flag twice."""
  flags.DEFINE_string("workdir", None, "Run directory whose checkpoint is evaluated (config.json + checkpoints/).")
  flags.DEFINE_string("config", None, "Config whose data section (and eval batch size) to evaluate on.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")


if __name__ == "__main__":
  define_flags()
  cli.run(main, required=("workdir", "config"))
