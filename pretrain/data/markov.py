"""K seeded sparse Markov sources over a small alphabet, with their exact entropies.

A sequence is drawn by picking a source k uniformly, a first symbol from k's stationary distribution
and then L-1 transitions. Because the start is stationary, the entropy of a sequence given its source is
exactly H(pi_k) + (L-1) * h_k, where h_k = sum_i pi_k[i] H(P_k[i, :]) is the entropy rate. A model that
does not know k pays at most log2(K) extra bits per sequence (the entropy of the source id).
"""
import dataclasses

import numpy as np


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
