"""BERT's masked-token prediction: log p(x_i | x corrupted) summed over the selected tokens; counts are those
tokens."""
import jax
import jax.numpy as jnp
import optax

from pretrain.objectives import apply, token_weights

MASK_RATE = 0.15  # BERT: the fraction of tokens whose identity is predicted ...
MASK_SPLIT = (0.8, 0.1)  # ... of which 80% are shown as [MASK], 10% as a random token and 10% unchanged.
_EVAL_MASK_SEED = 0  # Evaluation masks every eval batch the same way, so evaluations compare like for like.


def mask_tokens(tokens_BxT, w_BxT, rng, *, mask_id: int, random_ids: int = 0):
  """BERT's corruption, a pure function of `rng`: (model inputs, selected [B, T] 0/1 targets).

  Each counted token is selected with probability MASK_RATE; a selected token becomes `mask_id` (80%),
  a uniformly random id in [0, random_ids or mask_id) (10%), or stays as it is (10%).
  """
  k_select, k_action, k_random = jax.random.split(rng, 3)
  selected_BxT = (jax.random.uniform(k_select, tokens_BxT.shape) < MASK_RATE) & (w_BxT > 0)
  u_BxT = jax.random.uniform(k_action, tokens_BxT.shape)
  random_BxT = jax.random.randint(k_random, tokens_BxT.shape, 0, random_ids or mask_id, dtype=tokens_BxT.dtype)
  inputs_BxT = jnp.where(selected_BxT & (u_BxT < MASK_SPLIT[0]), mask_id, tokens_BxT)
  inputs_BxT = jnp.where(selected_BxT & (u_BxT >= MASK_SPLIT[0]) & (u_BxT < sum(MASK_SPLIT)), random_BxT, inputs_BxT)
  return inputs_BxT, selected_BxT.astype(jnp.float32)


def model_inputs(batch):
  return batch["tokens"][:, :-1]


def loss(model, variables, batch, *, train, rng):
  """The model reads the first T tokens of each window (as next-token models do); `model.mask_id` is [MASK].
  """
  tokens_BxT = batch["tokens"][:, :-1]
  w_BxT = token_weights(batch, batch["tokens"])[:, :-1]
  if rng is None:
    mask_rng, dropout_rng = jax.random.key(_EVAL_MASK_SEED), None
  else:
    mask_rng, dropout_rng = jax.random.split(rng)
  inputs_BxT, selected_BxT = mask_tokens(tokens_BxT, w_BxT, mask_rng, mask_id=model.mask_id,
                                             random_ids=getattr(model, "random_ids", 0))
  logits_BxTxV, model_state = apply(model, variables, inputs_BxT, train=train, rng=dropout_rng)
  nll_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, tokens_BxT)
  return {"loss_sum": jnp.sum(nll_BxT * selected_BxT), "count": jnp.sum(selected_BxT)}, model_state
