"""The embedded data source (data.name=markov): K seeded sparse Markov sources over a small alphabet, with
their exact entropies; the id of the source that emitted a sequence is its label.

A sequence is drawn by picking a source k uniformly, a first symbol from k's stationary distribution
and then L-1 transitions. Because the start is stationary, the entropy of a sequence given its source is
exactly H(pi_k) + (L-1) * h_k, where h_k = sum_i pi_k[i] H(P_k[i, :]) is the entropy rate. A model that
does not know k pays at most log2(K) extra bits per sequence (the entropy of the source id).
"""
import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from pretrain.data import Dataset, builders
from pretrain.errors import ConfigError

MAX_TABLE = 1 << 24  # Transition entries (128 MiB of float64).
MAX_TOKENS = 1 << 28  # Tokens drawn for the train and validation splits together.


def check(config) -> None:
  """Bounds on data.markov: the sources are dense K x V x V float64 tables and the samples are drawn in
  memory, so a typo fails here rather than as an out-of-memory error minutes later."""
  mk = config.data.markov
  for key in ("num_sources", "vocab_size", "num_train", "num_val"):
    if mk[key] < 1:
      raise ConfigError(f"data.markov.{key}={mk[key]} must be at least 1")
  if mk.seq_len < 2:
    raise ConfigError(f"data.markov.seq_len={mk.seq_len} must be at least 2")
  if not 1 <= mk.branching <= mk.vocab_size:
    raise ConfigError(f"data.markov.branching={mk.branching} must be between 1 and data.markov.vocab_size="
                      f"{mk.vocab_size}")
  if mk.num_sources * mk.vocab_size ** 2 > MAX_TABLE:
    raise ConfigError(f"data.markov.num_sources * vocab_size**2 = {mk.num_sources * mk.vocab_size ** 2} exceeds "
                      f"{MAX_TABLE} transition entries; use fewer sources or a smaller vocabulary")
  tokens = (mk.num_train + mk.num_val) * mk.seq_len
  if tokens > MAX_TOKENS:
    raise ConfigError(f"data.markov: (num_train + num_val) * seq_len = {tokens} tokens exceeds {MAX_TOKENS}; "
                      "use fewer or shorter sequences, or your own data with data.name=text")


def load(config) -> Dataset:
  """Both splits, each sequence behind a BOS token (id vocab_size) so the model predicts all of its symbols."""
  d, m = config.data, config.data.markov.to_dict()
  builder = builders.prepare(MarkovSequences, builders.default_data_dir(d.data_dir), **m)
  bos = m["vocab_size"]
  splits = [builders.records(builder, s).mapped(_with_bos(bos)) for s in (d.train_split, d.val_split)]
  return Dataset(config.data.name, *splits, vocab_size=m["vocab_size"] + 1, num_classes=m["num_sources"],
                 metadata=dict(builder.info.metadata), bos_id=bos, ids={"ids": "markov"})


def _with_bos(bos: int):
  def add(batch):
    tokens = batch["tokens"]
    return {**batch, "tokens": np.concatenate([np.full((len(tokens), 1), bos, tokens.dtype), tokens], axis=1)}
  return add


# skip_registration: TFDS would otherwise refuse a second class of this name, e.g. a copy of this module.
class MarkovSequences(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Sequences from K seeded sparse Markov sources; `label` is the source id (for fine-tuning).

  Metadata holds the exact bits/token of a sequence given its source, the most that not knowing the
  source can add, and the score of the best possible model on the validation split, so a run can report
  its distance from it.
  """
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "best_bits_per_token: the exact posterior predictive's score on the validation split."}

  def __init__(self, *, num_sources, vocab_size, branching, seq_len, num_train, num_val, seed, **kwargs):
    self._params = dict(num_sources=num_sources, vocab_size=vocab_size, branching=branching,
                        seq_len=seq_len, num_train=num_train, num_val=num_val, seed=seed)
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="Sequences from seeded sparse Markov sources (embedded, no download).",
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(self._params["seq_len"],), dtype=np.int32),
            "label": tfds.features.ClassLabel(num_classes=self._params["num_sources"]),
        }),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    p = self._params
    sources = make_sources(p["num_sources"], p["vocab_size"], p["branching"], p["seed"])
    train = sample(sources, p["num_train"], p["seq_len"], p["seed"] + 1)
    val = sample(sources, p["num_val"], p["seq_len"], p["seed"] + 2)
    self.info.metadata.update(
        entropy_bits_per_token=sequence_entropy_bits_per_token(sources, p["seq_len"]),
        source_id_bound_bits_per_token=source_id_bound_bits_per_token(p["num_sources"], p["seq_len"]),
        best_bits_per_token=best_bits_per_token(sources, val[0]),
        entropy_rate_bits=entropy_rates_bits(sources).tolist(),
        **p)
    return {"train": self._generate_examples(*train), "validation": self._generate_examples(*val)}

  def _generate_examples(self, tokens, labels):
    for i in range(len(tokens)):
      yield i, {"tokens": tokens[i], "label": labels[i]}


@dataclasses.dataclass(frozen=True)
class MarkovSources:
  transitions_KxVxV: np.ndarray  # Row-stochastic transition matrix of each source.
  stationary_KxV: np.ndarray  # Stationary distribution of each source (the start distribution).


def make_sources(num_sources: int, vocab_size: int, branching: int, seed: int) -> MarkovSources:
  if not 1 <= branching <= vocab_size:
    raise ValueError(f"branching={branching} must be in [1, vocab_size={vocab_size}]")
  rng = np.random.default_rng(seed)
  transitions = np.zeros((num_sources, vocab_size, vocab_size))
  for k in range(num_sources):
    cycle = rng.permutation(vocab_size)  # An edge along a random cycle makes every source irreducible.
    successor = np.empty(vocab_size, dtype=int)
    successor[cycle] = np.roll(cycle, -1)
    for i in range(vocab_size):
      others = np.setdiff1d(np.arange(vocab_size), [successor[i]])
      targets = np.concatenate([[successor[i]], rng.choice(others, branching - 1, replace=False)])
      transitions[k, i, targets] = rng.dirichlet(np.full(branching, 0.5))
  stationary = np.stack([_stationary(p) for p in transitions])
  return MarkovSources(transitions, stationary)


def _stationary(p_VxV: np.ndarray) -> np.ndarray:
  """The unique stationary distribution of an irreducible chain: solve pi (P - I) = 0, sum(pi) = 1."""
  v = p_VxV.shape[0]
  a = np.vstack([(p_VxV - np.eye(v)).T, np.ones(v)])
  b = np.concatenate([np.zeros(v), [1.0]])
  pi = np.linalg.lstsq(a, b, rcond=None)[0]
  pi = np.clip(pi, 0, None)
  return pi / pi.sum()


def _entropy_bits(p: np.ndarray, axis=-1) -> np.ndarray:
  with np.errstate(divide="ignore", invalid="ignore"):
    return -np.sum(np.where(p > 0, p * np.log2(p), 0.0), axis=axis)


def entropy_rates_bits(sources: MarkovSources) -> np.ndarray:
  """h_k in bits per transition for each source."""
  return np.sum(sources.stationary_KxV * _entropy_bits(sources.transitions_KxVxV), axis=-1)


def sequence_entropy_bits_per_token(sources: MarkovSources, seq_len: int) -> float:
  """E_k[H(x_1..L | k)] / L: the best achievable bits/token for a model that is told the source."""
  first = _entropy_bits(sources.stationary_KxV)
  per_sequence = first + (seq_len - 1) * entropy_rates_bits(sources)
  return float(per_sequence.mean() / seq_len)


def source_id_bound_bits_per_token(num_sources: int, seq_len: int) -> float:
  """What not knowing the source can add, at most: log2(K) bits per sequence, spread over L tokens."""
  return float(np.log2(num_sources) / seq_len)


def best_bits_per_token(sources: MarkovSources, x_NxL: np.ndarray) -> float:
  """The bits/token of the best possible model on these sequences: the exact posterior predictive
  p(x_t | x_<t) = sum_k p(k | x_<t) P_k[x_t-1, x_t], which knows the sources but not which one emitted a
  sequence. Above the entropy given the source by what identifying the source costs (at most log2(K)/L)."""
  n, length = x_NxL.shape
  k = sources.transitions_KxVxV.shape[0]
  log_posterior_NxK = np.full((n, k), -np.log(k))
  total_bits = 0.0
  with np.errstate(divide="ignore"):
    for t in range(length):
      if t == 0:
        likelihood_NxK = sources.stationary_KxV[:, x_NxL[:, 0]].T
      else:
        likelihood_NxK = sources.transitions_KxVxV[:, x_NxL[:, t - 1], x_NxL[:, t]].T
      posterior_NxK = np.exp(log_posterior_NxK - log_posterior_NxK.max(axis=1, keepdims=True))
      posterior_NxK /= posterior_NxK.sum(axis=1, keepdims=True)
      total_bits -= np.log2(np.sum(posterior_NxK * likelihood_NxK, axis=1)).sum()
      log_posterior_NxK = log_posterior_NxK + np.log(likelihood_NxK)
  return float(total_bits / (n * length))


def sample(sources: MarkovSources, num_sequences: int, seq_len: int, seed: int):
  """Returns (tokens NxL int32, source ids N int64), a pure function of the seed."""
  rng = np.random.default_rng(seed)
  k_N = rng.integers(0, sources.transitions_KxVxV.shape[0], num_sequences)
  cum_KxVxV = _cumulative(sources.transitions_KxVxV)
  cum_start_KxV = _cumulative(sources.stationary_KxV)
  u_NxL = rng.random((num_sequences, seq_len))
  x_NxL = np.empty((num_sequences, seq_len), dtype=np.int32)
  x_NxL[:, 0] = _draw(cum_start_KxV[k_N], u_NxL[:, 0])
  for t in range(1, seq_len):
    x_NxL[:, t] = _draw(cum_KxVxV[k_N, x_NxL[:, t - 1]], u_NxL[:, t])
  return x_NxL, k_N.astype(np.int64)


def _cumulative(p):
  cum = np.cumsum(p, axis=-1)
  return cum / cum[..., -1:]  # exactly 1 at the end, so every u in [0, 1) lands on a symbol


def _draw(cum_NxV, u_N):
  return (u_N[:, None] < cum_NxV).argmax(axis=-1)
