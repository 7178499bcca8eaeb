"""lm-evaluation-harness on a run (pretrain.harness) and bits per byte in evaluations, offline on small runs."""
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pretrain import configlib, data
from pretrain.trainer import harness
from pretrain.data import tokenizers
from pretrain.objectives import next_token
from pretrain.trainer import run_dir, step
from tests.conftest import ROOT, read_metrics, run_main

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A byte-level GPT trained a few steps on a small text: its workdir and text file."""
  root = tmp_path_factory.mktemp("harness")
  (root / "text.txt").write_text(TEXT)
  run_main("--config", os.path.join(ROOT, "configs/shakespeare_char.py:cpu"), "--workdir", root / "w",
           f"--config.data.path={root / 'text.txt'}", "--config.data.tokenizer=byte", "--config.train.steps=20",
           "--config.train.eval_every=20", "--config.train.checkpoint_every=20", "--config.eval.batches=2",
           "--config.model.context=32", "--config.parallel.strategy=single", "--config.parallel.cpu_devices=0",
           "--config.model.dtype=float32")
  return root


def _direct(scorer, context, continuation):
  """log p(continuation | context) from one unpadded forward pass."""
  whole = np.array([list(context) + list(continuation)], np.int32)
  logp = jax.nn.log_softmax(scorer.model.apply({"params": scorer.params}, jnp.asarray(whole[:, :-1])), -1)
  picked = np.take_along_axis(np.asarray(logp), whole[:, 1:, None], -1)[0, :, 0]
  return float(picked[-len(continuation):].sum())


def test_loglikelihood_equals_the_runs_eval_step(run):
  scorer = harness.load_scorer(str(run / "w"), batch_size=4)
  encode = scorer.encode
  pairs = [(encode("First Citizen:\nBefore"), encode(" we proceed")), (encode("All:\n"), encode("Speak, speak.")),
           (encode("x" * 40), encode(" hear me")),  # Longer than the context: the input keeps its last 32 tokens.
           ([scorer.prefix_id], encode("First"))]
  scored = scorer.score(pairs)
  for (context, continuation), (ll, _) in zip(pairs, scored):
    whole = (context + continuation)[-33:]
    assert ll == pytest.approx(_direct(scorer, whole[:len(whole) - len(continuation)], continuation), abs=2e-5)
  # The eval step's loss sum over one window is the score of its tokens after the first.
  tokens = np.array([encode(TEXT[:33])], np.int32)
  batch = {"tokens": tokens, "mask": np.ones(1, np.float32)}
  sums = step.make_eval_step(scorer.model, next_token.loss)(
      step.TrainState(step=0, params=scorer.params, opt_state=None, model_state={}), batch)
  (ll, _), = scorer.score([(tokens[0, :1].tolist(), tokens[0, 1:].tolist())])
  assert -float(sums["loss_sum"]) == pytest.approx(ll, rel=1e-5)


def test_rolling_windows_cover_every_token_once(run):
  pytest.importorskip("lm_eval")
  scorer = harness.load_scorer(str(run / "w"), batch_size=4)
  seen = []
  score = scorer.score
  scorer.score = lambda pairs: (seen.extend(pairs), score(pairs))[1]
  document = TEXT[:300]

  class Request:
    args = (document,)
  total, = harness.lm(scorer).loglikelihood_rolling([Request()])
  ids = scorer.encode(document)
  assert [t for _, continuation in seen for t in continuation] == ids  # Each token predicted once, in order.
  assert all(len(c) + len(t) - 1 <= scorer.max_length for c, t in seen)
  assert total == pytest.approx(sum(_direct(scorer, c, t) for c, t in seen), abs=1e-4)


def test_bits_per_byte_on_bytes_equals_bits_per_token(run):
  val = read_metrics(run / "w", "val")[-1]
  assert val["bits_per_byte"] == pytest.approx(val["bits_per_token"], rel=1e-6)
  assert val["bytes"] == val["count"]


def test_token_bytes_of_each_tokenizer(tmp_path):
  import tokenizers as hf_tokenizers
  assert tokenizers.CharTokenizer("a\u00e9\u20ac", end_of_text=True).token_bytes().tolist() == [1, 2, 3, 0]
  assert tokenizers.ByteTokenizer(end_of_text=True).token_bytes().sum() == 256
  bpe = hf_tokenizers.ByteLevelBPETokenizer()
  bpe.train_from_iterator(["caf\u00e9 na\u00efve r\u00e9sum\u00e9 " * 50], vocab_size=300, special_tokens=["<|endoftext|>"],
                          show_progress=False)
  bpe.save(str(tmp_path / "tokenizer.json"))
  tok = tokenizers.FileTokenizer(str(tmp_path / "tokenizer.json"))
  table = tok.token_bytes()
  text = "caf\u00e9 r\u00e9sum\u00e9 na\u00efve"
  assert table[tok.encode(text)].sum() == len(text.encode("utf-8"))
  assert table[tok.token_id("<|endoftext|>")] == 0


def test_refusals_are_one_line(run, tmp_path):
  pytest.importorskip("lm_eval")
  proc = run_main("--workdir", run / "w", "--tasks", "no_such_task", module="pretrain.harness", check=False)
  assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
  assert "no_such_task" in proc.stderr and "--include_path" in proc.stderr
  # Without lm-eval installed: one line naming the extra.
  code = ("import sys; sys.modules['lm_eval'] = None; from pretrain import cli, harness; harness.define_flags(); "
          f"sys.argv = ['harness', '--workdir', {str(run / 'w')!r}, '--tasks', 'x']; cli.run(harness.main)")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
  assert "pip install -e '.[eval]'" in proc.stderr


def _tasks(tasks):
  """A multiple-choice task and a rolling perplexity task from local JSON files, as lm-eval reads them offline."""
  tasks.mkdir()
  rows = [{"context": "All:", "choices": ["Speak, speak.", "Before we"], "label": 0},
          {"context": "First", "choices": ["Citizen:", "speak."], "label": 0}]
  (tasks / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (tasks / "ppl.jsonl").write_text(json.dumps({"text": TEXT[:200]}) + "\n")
  for name, body in (("tiny_mc", "output_type: multiple_choice\ndoc_to_text: context\ndoc_to_choice: choices\n"
                                  "doc_to_target: label\nmetric_list:\n  - metric: acc\n"),
                     ("tiny_ppl", "output_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: text\n"
                                  "metric_list:\n  - metric: bits_per_byte\n")):
    source = tasks / ("mc.jsonl" if name == "tiny_mc" else "ppl.jsonl")
    (tasks / f"{name}.yaml").write_text(f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                                        f"    test: {source}\ntest_split: test\n{body}")
  return tasks


OFFLINE = {"HF_DATASETS_OFFLINE": "1"}


def test_harness_command_on_local_tasks(run, tmp_path):
  pytest.importorskip("lm_eval")
  tasks = _tasks(tmp_path / "tasks")
  out = tmp_path / "results.json"
  proc = run_main("--workdir", run / "w", "--tasks", "tiny_mc,tiny_ppl", "--include_path", tasks, "--output", out,
                  module="pretrain.harness", env={**OFFLINE, "HF_DATASETS_CACHE": str(tmp_path / "c")})
  assert "tiny_mc" in proc.stdout and "tiny_ppl" in proc.stdout
  results = json.loads(out.read_text())["results"]
  assert 0 <= results["tiny_mc"]["acc,none"] <= 1
  # Rolling bits per byte of one document: its summed log-likelihood (unpadded forward passes over lm-eval's
  # windows) over its 200 bytes.
  scorer = harness.load_scorer(str(run / "w"), batch_size=4)
  from lm_eval import utils
  windows = map(utils.make_disjoint_window, utils.get_rolling_token_windows(
      token_list=scorer.encode(TEXT[:200]), prefix_token=scorer.prefix_id, max_seq_len=32, context_len=1))
  ll = sum(_direct(scorer, context, continuation) for context, continuation in windows)
  assert results["tiny_ppl"]["bits_per_byte,none"] == pytest.approx(-ll / math.log(2) / 200, rel=1e-5)


def test_benchmarks_in_the_loop(run, tmp_path):
  """eval.harness_tasks: harness/TASK/METRIC in every val row, and in pretrain.report's table."""
  pytest.importorskip("lm_eval")
  tasks = _tasks(tmp_path / "tasks")
  run_main("--config", os.path.join(ROOT, "configs/shakespeare_char.py:cpu"), "--workdir", tmp_path / "w",
           f"--config.data.path={run / 'text.txt'}", "--config.data.tokenizer=byte", "--config.train.steps=10",
           "--config.train.eval_every=5", "--config.train.steps_per_call=5", "--config.train.checkpoint_every=10",
           "--config.eval.batches=1",
           "--config.model.context=32", "--config.eval.harness_tasks=tiny_mc,tiny_ppl",
           f"--config.eval.harness_include_path={tasks}", env={**OFFLINE, "HF_DATASETS_CACHE": str(tmp_path / "c")})
  val = read_metrics(tmp_path / "w", "val")
  assert [r["step"] for r in val] == [5, 10]
  assert all(0 <= r["harness/tiny_mc/acc"] <= 1 and r["harness/tiny_ppl/bits_per_byte"] > 0 for r in val)
  run_main(tmp_path / "w", "--out", tmp_path / "report", module="pretrain.report")
  assert "tiny_ppl/bits_per_byte" in (tmp_path / "report" / "report.md").read_text()
  # Sorted by bits per byte, best first: the module's run (20 steps) before this one (10).
  run_main(run / "w", tmp_path / "w", "--out", tmp_path / "sorted", "--metric", "val.bits_per_byte", "--sort",
           module="pretrain.report")
  import csv
  rows = list(csv.DictReader(open(tmp_path / "sorted" / "report.csv")))
  values = [float(r["val.bits_per_byte_mean"]) for r in rows]
  assert len(values) == 2 and values == sorted(values)


def test_generate_until_continues_greedily_and_cuts_at_the_stop(run):
  pytest.importorskip("lm_eval")
  from pretrain.models import generation
  scorer = harness.load_scorer(str(run / "w"), batch_size=4)

  class Request:
    args = ("hear me", {"until": ["."], "max_gen_toks": 12})  # Prompt and new tokens fit the context.
  out, = harness.lm(scorer).generate_until([Request()])
  ids = generation.generate(scorer.model, scorer.params, [scorer.encode(Request.args[0])], max_new_tokens=12,
                            temperature=0).tokens[0]
  assert out == scorer.tokenizer.decode(ids).split(".")[0]
  assert "." not in out and len(out) <= 12
