"""EleutherAI's lm-evaluation-harness over a next-token model (GPT, its Llama shape, LSTM): what
`python -m pretrain.harness` runs on a run directory's checkpoint and the loop runs at each evaluation
(eval.harness_tasks). lm-eval is an optional extra: `pip install -e '.[eval]'`.

Scores are computed as lm-eval's `hf` backend computes them, so the two agree on the same weights: a
continuation is tokenized as part of context + continuation (trailing spaces of the context moved onto it),
an empty context is the prefix token (the tokenizer's end of text), inputs longer than the model's context
keep their last tokens, and rolling loglikelihoods score a document in disjoint windows of the context
(lm_eval.utils.get_rolling_token_windows). Requests are sorted by length and cut into batches of
--batch_size rows padded to the next power of two (at least 16, at most the context), so a few compiled
shapes serve a whole task. Generation goes through pretrain.sample's KV-cached loop (pretrain/models/generation.py).

pretrain.harness computes in float32 whatever model.dtype the run trained in, with LoRA adapters merged; the loop
scores its model as it trains (its dtype, adapters applied).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from pretrain.data import tokenizers
from pretrain.errors import ConfigError, DataError
from pretrain.models import generation, lora
from pretrain.trainer import run_dir

MIN_BUCKET = 16


def require_lm_eval():
  try:
    import lm_eval  # noqa: F401
    import lm_eval.api.model  # noqa: F401
  except ImportError:
    raise ConfigError("lm-evaluation-harness is not installed; install the extra: pip install -e '.[eval]'") from None


class Scorer:
  """A next-token model's log-likelihoods of token continuations, batched and bucketed by length."""

  def __init__(self, model, params, tokenizer, max_length: int, batch_size: int, family: str = "gpt"):
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.max_length, self.batch_size, self.family = max_length, batch_size, family
    self.prefix_id = prefix_id(tokenizer)
    self._score = jax.jit(self._score_batch)
    self.requests_scored = 0

  def encode(self, text: str) -> list[int]:
    try:
      return self.tokenizer.encode(text).tolist()
    except DataError as e:
      raise DataError(f"a benchmark text cannot be tokenized as the run's data was: {e}") from None

  def _score_batch(self, params, tokens_BxT, targets_BxT, weights_BxT):
    logits_BxTxV = self.model.apply({"params": params}, tokens_BxT).astype(jnp.float32)
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV, axis=-1)
    target_logp_BxT = jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
    greedy_BxT = (jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT) | (weights_BxT == 0)
    return jnp.sum(target_logp_BxT * weights_BxT, axis=-1), jnp.all(greedy_BxT, axis=-1)

  def bucket(self, length: int) -> int:
    return min(self.max_length, max(MIN_BUCKET, 1 << math.ceil(math.log2(max(length, 1)))))

  def score(self, pairs) -> list[tuple[float, bool]]:
    """(log p(continuation | context), whether every continuation token is the argmax) for each (context ids,
    continuation ids); the input keeps the last max_length tokens of context + continuation but its last."""
    rows = []
    for context, continuation in pairs:
      whole = (list(context) + list(continuation))[-(self.max_length + 1):]
      rows.append((whole[:-1], whole[1:], min(len(continuation), len(whole) - 1)))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    out = [None] * len(rows)
    B = self.batch_size
    for start in range(0, len(order), B):
      chunk = order[start:start + B]
      T = self.bucket(len(rows[chunk[0]][0]))
      tokens_BxT, targets_BxT = np.zeros((B, T), np.int32), np.zeros((B, T), np.int32)
      weights_BxT = np.zeros((B, T), np.float32)
      for r, i in enumerate(chunk):
        inputs, targets, n = rows[i]
        tokens_BxT[r, :len(inputs)], targets_BxT[r, :len(targets)] = inputs, targets
        weights_BxT[r, len(inputs) - n:len(inputs)] = 1.0
      ll_B, greedy_B = jax.device_get(self._score(self.params, tokens_BxT, targets_BxT, weights_BxT))
      for r, i in enumerate(chunk):
        out[i] = (float(ll_B[r]), bool(greedy_B[r]))
    self.requests_scored += len(rows)
    return out

  def generate(self, prompts: list[str], until: list[str], max_new_tokens: int, temperature: float) -> list[str]:
    """Each prompt continued (greedily at temperature 0) and cut before the first of `until`."""
    new = max(1, min(max_new_tokens, self.max_length - 1))
    encoded = [(self.encode(p) or [self.prefix_id])[-(self.max_length - new):] for p in prompts]
    out = []
    for start in range(0, len(encoded), self.batch_size):
      batch = encoded[start:start + self.batch_size]
      rows = generation.generate(self.model, self.params, batch, family=self.family, max_new_tokens=new,
                             temperature=temperature, end_id=self.tokenizer.end_of_text).tokens
      for ids in rows:
        text = self.tokenizer.decode(ids)
        cuts = [text.index(s) for s in until if s and s in text]
        out.append(text[:min(cuts)] if cuts else text)
    return out


def prefix_id(tokenizer) -> int:
  """What an empty context and a document's first window condition on: the end-of-text token (the data's, else
  a tokenizer file's own <|endoftext|> or declared end of sequence), else a newline."""
  for end in (tokenizer.end_of_text, getattr(tokenizer, "own_end_of_text", None)):
    if end is not None:
      return end
  newline = tokenizer.encode("\n")
  if len(newline) == 1:
    return int(newline[0])
  raise ConfigError("the run's tokenizer has no end-of-text token and no single newline token to condition a "
                    "document's first tokens on")


def load_scorer(workdir: str, batch_size: int, at_step: int | None = None) -> Scorer:
  """The scorer of a run directory's checkpoint: its model in float32, its tokenizer from dataset.json."""
  config, params, _ = run_dir.restore_params(workdir, at_step)
  if config.objective != "next_token":
    raise ConfigError(f"{workdir} was trained with objective={config.objective}; lm-eval scores next-token models "
                      "(objective=next_token)")
  generation.generating_family(config.model.family, where=f"{workdir} holds ")
  params = lora.merge(params, config.model.lora)
  config.model.dtype = "float32"
  config.model.remat = "none"
  saved = run_dir.saved_dataset(workdir)
  vocab_size = config.model.vocab_size or saved.get("vocab_size")
  if not vocab_size:
    raise ConfigError(f"{workdir} records no vocabulary size (model.vocab_size, dataset.json); is it a run directory?")
  tokenizer = tokenizers.described(saved.get("vocabulary"), config)
  model = run_dir.family_model(config, int(vocab_size))
  return Scorer(model, jax.device_put(params), tokenizer, config.model.context, batch_size, config.model.family)


def lm(scorer: Scorer):
  """An lm_eval.api.model.LM over `scorer`."""
  require_lm_eval()
  from lm_eval import utils
  from lm_eval.api.model import TemplateLM

  class RunLM(TemplateLM):
    @property
    def eot_token_id(self):
      return scorer.prefix_id

    @property
    def max_length(self):
      return scorer.max_length

    def tok_encode(self, string, add_special_tokens=None, **kwargs):
      return scorer.encode(string)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
      return scorer.score([(context, continuation) for _, context, continuation in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
      windows, owners = [], []
      for i, (text,) in enumerate(r.args for r in requests):
        for window in utils.get_rolling_token_windows(token_list=scorer.encode(text), prefix_token=scorer.prefix_id,
                                                      max_seq_len=scorer.max_length, context_len=1):
          windows.append(utils.make_disjoint_window(window))
          owners.append(i)
      totals = [0.0] * len(requests)
      for i, (ll, _) in zip(owners, scorer.score(windows)):
        totals[i] += ll
      return totals

    def generate_until(self, requests, disable_tqdm: bool = False):
      out = [None] * len(requests)
      groups = {}
      for i, (context, kwargs) in enumerate(r.args for r in requests):
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
        key = (tuple(until), int(kwargs.get("max_gen_toks", 256)), temperature)
        groups.setdefault(key, []).append((i, context))
      for (until, max_new, temperature), items in groups.items():
        texts = scorer.generate([c for _, c in items], list(until), max_new, temperature)
        for (i, _), text in zip(items, texts):
          out[i] = text
      return out

  return RunLM()


def task_manager(tasks: list[str], include_path=None, where: str = "--include_path"):
  """lm-eval's TaskManager, after checking that it knows every task (one line naming those it does not)."""
  require_lm_eval()
  from lm_eval.tasks import TaskManager
  if include_path:  # Your own tasks alone are indexed in a blink; lm-eval's ~14,000 YAML files take ~15 s.
    own = TaskManager(include_path=include_path, include_defaults=False)
    if all(t in own.all_tasks for t in tasks):
      return own
  manager = TaskManager(include_path=include_path) if include_path else TaskManager()
  unknown = [t for t in tasks if t not in manager.all_tasks]
  if unknown:
    raise ConfigError(f"lm-eval knows no task {', '.join(unknown)}; list them with `lm_eval --tasks list`, or give "
                      f"the folder of your task YAML files with {where}")
  return manager


def evaluate(scorer: Scorer, tasks: list[str], *, num_fewshot=None, limit=None, include_path=None,
             manager=None) -> dict:
  """lm-eval's results dict for `tasks` scored by `scorer`."""
  from lm_eval import evaluator
  manager = manager or task_manager(tasks, include_path)
  # No torch seed: nothing here uses torch, and importing it would cost seconds.
  return evaluator.simple_evaluate(model=lm(scorer), tasks=tasks, num_fewshot=num_fewshot, limit=limit,
                                   task_manager=manager, log_samples=False, torch_random_seed=None)


def metrics(results: dict) -> dict:
  """{"harness/TASK/METRIC": value} of lm-eval's results (a filter other than "none" joins the metric name)."""
  out = {}
  for task, values in results.get("results", {}).items():
    for key, value in values.items():
      metric, _, kind = key.partition(",")
      if metric != "sample_len" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        out[f"harness/{task}/{metric if kind in ('', 'none') else metric + '_' + kind}"] = float(value)
  return out


class InLoop:
  """eval.harness_tasks, scored at each evaluation of a training run on its parameters as they are then."""

  def __init__(self, run):
    c = run.config
    require_lm_eval()
    if c.objective != "next_token":
      raise ConfigError(f"eval.harness_tasks scores next-token models, not objective={c.objective}; leave it empty")
    if run.dataset.tokenizer is None:
      raise ConfigError(f"eval.harness_tasks needs text read by a tokenizer; dataset {run.dataset.name} has none")
    if jax.process_count() > 1:
      raise ConfigError("eval.harness_tasks runs in one process; score a checkpoint with python -m pretrain.harness")
    generation.generating_family(c.model.family, where="eval.harness_tasks: ")
    self.run, self.tasks = run, list(c.eval.harness_tasks)
    self.limit = c.eval.harness_limit or None
    self.manager = task_manager(self.tasks, c.eval.harness_include_path or None, "eval.harness_include_path")
    self.scorer = Scorer(run.model, None, run.dataset.tokenizer, c.model.context, c.eval.harness_batch_size,
                         c.model.family)

  def __call__(self, state) -> dict:
    self.scorer.params = self.run.strategy.for_checkpoint(state).params
    return metrics(evaluate(self.scorer, self.tasks, limit=self.limit, manager=self.manager))
