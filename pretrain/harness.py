"""EleutherAI's lm-evaluation-harness on any run of a next-token family (GPT, its Llama shape, LSTM), offline.

  python -m pretrain.harness --workdir W --tasks T1,T2 [--num_fewshot K] [--limit N] [--batch_size B]
      [--include_path DIR] [--output FILE] [--step N]

Prints lm-eval's table and writes its results JSON to --output. lm-eval is an optional extra:
`pip install -e '.[eval]'`. Tasks are lm-eval's (`lm_eval --tasks list`) or your own YAML files in
--include_path (`dataset_path: json` with local `data_files` works offline; set HF_DATASETS_OFFLINE=1).
How requests are scored, as lm-eval's `hf` backend scores them: pretrain/trainer/harness.py.
"""
import json
import sys
import time

from absl import flags

from pretrain import cli
from pretrain.errors import ConfigError
from pretrain.trainer import harness

FLAGS = flags.FLAGS


def main(argv):
  del argv
  harness.require_lm_eval()
  from lm_eval.utils import handle_non_serializable, make_table
  tasks = [t for t in FLAGS.tasks.split(",") if t]
  if not tasks:
    raise ConfigError("--tasks is empty; name lm-eval tasks, e.g. --tasks hellaswag,lambada_openai")
  if FLAGS.batch_size < 1:
    raise ConfigError(f"--batch_size={FLAGS.batch_size} must be 1 or more")
  start = time.time()
  scorer = harness.load_scorer(FLAGS.workdir, FLAGS.batch_size, FLAGS.step)
  results = harness.evaluate(scorer, tasks, num_fewshot=FLAGS.num_fewshot, limit=FLAGS.limit, include_path=FLAGS.include_path)
  print(make_table(results))
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(results, f, indent=2, default=handle_non_serializable, ensure_ascii=False)
  seconds = time.time() - start
  print(f"scored {scorer.requests_scored} loglikelihood requests (rolling windows counted one each) in {seconds:.1f} s "
        f"({scorer.requests_scored / max(seconds, 1e-9):,.1f}/s){'; results in ' + FLAGS.output if FLAGS.output else ''}",
        file=sys.stderr)


def define_flags():
  flags.DEFINE_string("workdir", None, "A run directory (pretrain.main or pretrain.hf import).")
  flags.DEFINE_string("tasks", "", "Comma-separated lm-eval task names.")
  flags.DEFINE_integer("num_fewshot", None, "Few-shot examples per request; default the task's.")
  flags.DEFINE_float("limit", None, "At most this many documents per task (a fraction if below 1).")
  flags.DEFINE_integer("batch_size", 16, "Rows per forward pass.")
  flags.DEFINE_string("include_path", None, "A folder of your own task YAML files.")
  flags.DEFINE_string("output", None, "Write lm-eval's results JSON here.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")


if __name__ == "__main__":
  define_flags()
  cli.run(main, required=("workdir",))
