"""Model zoo: shapes, objectives against hand-computed values, causality and masking, BatchNorm state."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pretrain import data, errors
from pretrain.models import bert, classifier, lstm, pixelcnn, resnet, seed_cnn
from pretrain.models.gpt import GPTConfig
from pretrain.objectives import classification, masked_lm, pixels
from pretrain.trainer import metrics, run_dir, step
from tests.conftest import tiny_config


class FixedLogits(nn.Module):
  """A stand-in model whose output is a given array: objectives can be checked by hand."""
  logits: np.ndarray
  mask_id: int = 0

  @nn.compact
  def __call__(self, inputs, train=False):
    del train
    self.param("unused", nn.initializers.zeros, ())
    return jnp.asarray(self.logits)[:inputs.shape[0]]


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _init(model, x, **kw):
  return model.init(jax.random.key(0), x, **kw)


def _shapes(model, x, method=None):
  """Output shape (and parameter shapes) without running anything: shape tests stay fast."""
  def run():
    variables = model.init(jax.random.key(0), x)
    return model.apply(variables, x, method=method), variables["params"]
  out, params = jax.eval_shape(run)
  return out.shape, jax.tree_util.tree_map(lambda p: p.shape, params)


def test_seed_cnn_is_the_design_network():
  model = classifier.Classifier(seed_cnn.SeedCNN(), num_classes=10)
  out, params = _shapes(model, jnp.zeros((2, 32, 32, 3)))
  shapes = {k: v["kernel"] for k, v in params["backbone"].items()}
  assert shapes == {"Conv_0": (3, 3, 3, 32), "Conv_1": (3, 3, 32, 64), "Conv_2": (3, 3, 64, 64), "Dense_0": (1024, 64)}
  assert params["head"]["kernel"] == (64, 10) and out == (2, 10)
  # Any input size from 18x18 up; smaller ones are refused with the fix.
  assert _shapes(model, jnp.zeros((1, 28, 28, 1)))[1]["backbone"]["Dense_0"]["kernel"] == (576, 64)
  assert _shapes(model, jnp.zeros((1, 18, 18, 1)))[0] == (1, 10)
  with pytest.raises(errors.ConfigError, match="at least 18x18"):
    _shapes(model, jnp.zeros((1, 17, 17, 1)))


def test_family_shapes():
  x = jnp.zeros((2, 28, 28, 1))
  assert _shapes(resnet.ResNet(), x)[0] == (2, 64)
  r18, params = _shapes(resnet.ResNet((2, 2, 2, 2), (64, 128, 256, 512)), jnp.zeros((2, 32, 32, 3)))
  assert r18 == (2, 512) and sum(np.prod(s) for s in jax.tree_util.tree_leaves(params, is_leaf=lambda t: isinstance(
      t, tuple))) > 11e6  # ResNet-18 on CIFAR: about 11.2M parameters
  tokens = jnp.zeros((2, 12), jnp.int32)
  lm = lstm.LSTM(vocab_size=30, width=16, num_layers=2)
  assert _shapes(lm, tokens)[0] == (2, 12, 30) and _shapes(lm, tokens, "features")[0] == (2, 12, 16)
  enc = bert.BERT(GPTConfig(vocab_size=31, context=16, num_layers=1, num_heads=2, width=16, causal=False), mask_id=30)
  assert _shapes(enc, tokens)[0] == (2, 12, 31) and _shapes(enc, tokens, "features")[0] == (2, 12, 16)
  pix = pixelcnn.PixelCNN(levels=256, width=12, num_layers=1, channels=3)
  img = jnp.zeros((2, 6, 5, 3), jnp.uint8)
  assert _shapes(pix, img)[0] == (2, 6, 5, 3, 256) and _shapes(pix, img, "features")[0] == (2, 6, 5, 12)


def test_classification_objective_by_hand():
  logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 0.0]], np.float32)
  batch = {"image": np.zeros((3, 1, 1, 1), np.float32), "label": np.array([0, 1, 2]),
           "mask": np.array([1.0, 1.0, 0.0], np.float32)}
  model = FixedLogits(logits)
  sums, _ = classification.loss(model, _init(model, batch["image"]), batch, train=False, rng=None)
  expected = -(_log_softmax(logits)[0, 0] + _log_softmax(logits)[1, 1])  # row 2 is padding
  np.testing.assert_allclose(float(sums["loss_sum"]), expected, rtol=1e-6)
  assert float(sums["count"]) == 2 and float(sums["correct"]) == 1  # row 0 right, row 1 wrong
  assert metrics.summarize_eval([sums])["accuracy"] == 0.5


def test_pixels_objective_by_hand_bits_per_dim_and_nats_per_image():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 2, (2, 3, 2, 1)).astype(np.uint8)
  logits = rng.normal(size=(2, 3, 2, 1, 2)).astype(np.float32)
  model = FixedLogits(logits)
  batch = {"image": image, "mask": np.ones(2, np.float32)}
  sums, _ = pixels.loss(model, _init(model, image), batch, train=False, rng=None)
  logp = _log_softmax(logits)
  nll = -np.take_along_axis(logp, image[..., None].astype(int), -1).sum()
  np.testing.assert_allclose(float(sums["loss_sum"]), nll, rtol=1e-6)
  assert float(sums["count"]) == 12 and float(sums["images"]) == 2
  out = metrics.summarize_eval([sums])
  np.testing.assert_allclose(out["nats_per_image"], nll / 2, rtol=1e-6)
  np.testing.assert_allclose(out["bits_per_dim"], nll / 12 / np.log(2), rtol=1e-6)


def test_masked_lm_objective_by_hand():
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, 7, (3, 41)).astype(np.int32)
  logits = rng.normal(size=(3, 40, 8)).astype(np.float32)
  model = FixedLogits(logits, mask_id=7)
  batch = {"tokens": tokens, "token_mask": np.ones_like(tokens, np.float32), "mask": np.ones(3, np.float32)}
  key = jax.random.key(5)
  sums, _ = masked_lm.loss(model, _init(model, tokens[:, :-1]), batch, train=True, rng=key)
  _, selected = masked_lm.mask_tokens(jnp.asarray(tokens[:, :-1]), jnp.ones((3, 40)), jax.random.split(key)[0],
                                       mask_id=7)
  selected = np.asarray(selected)
  logp = np.take_along_axis(_log_softmax(logits), tokens[:, :-1, None], -1)[..., 0]
  np.testing.assert_allclose(float(sums["loss_sum"]), -(logp * selected).sum(), rtol=1e-5)
  assert float(sums["count"]) == selected.sum() > 0
  # Evaluation masks with a fixed key: two evaluations of the same batch agree.
  a, _ = masked_lm.loss(model, _init(model, tokens[:, :-1]), batch, train=False, rng=None)
  b, _ = masked_lm.loss(model, _init(model, tokens[:, :-1]), batch, train=False, rng=None)
  assert float(a["loss_sum"]) == float(b["loss_sum"])


def test_mlm_masking_proportions_and_purity():
  V = 1000
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (400, 500)), jnp.int32)
  w = jnp.ones(tokens.shape).at[:, -50:].set(0)  # padding is never selected
  inputs, selected = masked_lm.mask_tokens(tokens, w, jax.random.key(0), mask_id=V)
  inputs, selected, tokens = np.asarray(inputs), np.asarray(selected).astype(bool), np.asarray(tokens)
  assert not selected[:, -50:].any() and np.array_equal(inputs[~selected], tokens[~selected])
  assert abs(selected[:, :-50].mean() - 0.15) < 0.003
  s_in, s_tok = inputs[selected], tokens[selected]
  masked, kept = (s_in == V).mean(), (s_in == s_tok).mean()
  replaced = ((s_in != V) & (s_in != s_tok)).mean()
  assert abs(masked - 0.8) < 0.01 and abs(replaced - 0.1 * (1 - 1 / V)) < 0.01 and abs(kept - 0.1) < 0.01
  assert (s_in <= V).all() and (s_in >= 0).all()
  again, _ = masked_lm.mask_tokens(jnp.asarray(tokens), w, jax.random.key(0), mask_id=V)
  other, _ = masked_lm.mask_tokens(jnp.asarray(tokens), w, jax.random.key(1), mask_id=V)
  assert np.array_equal(np.asarray(again), inputs) and not np.array_equal(np.asarray(other), inputs)


@pytest.mark.parametrize("channels", [1, 3])
def test_pixelcnn_is_causal_in_raster_order(channels):
  """Changing sub-pixel i never changes the predicted distribution of any sub-pixel before i (rows, then
  columns, then channels), including i itself; it does change some later ones."""
  H, W, C, L = 5, 4, channels, 4
  model = pixelcnn.PixelCNN(levels=L, width=2 * C, num_layers=1, channels=C)
  rng = np.random.default_rng(0)
  x = rng.integers(0, L, (1, H, W, C)).astype(np.int32)
  n = H * W * C
  perturbed = np.repeat(x, n, axis=0).reshape(n, n)  # row i: x with sub-pixel i (raster order) changed
  perturbed[np.arange(n), np.arange(n)] = (perturbed[np.arange(n), np.arange(n)] + 1 + rng.integers(0, L - 1, n)) % L

  @jax.jit
  def logits(images):
    variables = model.init(jax.random.key(1), images[:1])
    # Random biases too, so no output is exactly zero by construction.
    leaves, tree = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    leaves = [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    return model.apply(jax.tree_util.tree_unflatten(tree, leaves), images)

  out = np.asarray(logits(jnp.asarray(np.concatenate([x.reshape(1, n), perturbed]).reshape(n + 1, H, W, C))))
  base, out = out[0].reshape(n, L), out[1:].reshape(n, n, L)
  changed = np.abs(out - base[None]).max(-1) > 1e-6  # [which input changed, which output]
  for i in range(n):
    assert not changed[i, :i + 1].any(), f"an output before or at sub-pixel {i} moved when it changed"
  assert changed[np.triu_indices(n, 1)].mean() > 0.3  # later sub-pixels do see earlier ones


def test_lstm_is_causal_and_bert_is_not():
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 20, (1, 10)), jnp.int32)
  both = jnp.concatenate([tokens, tokens.at[0, 6].set((tokens[0, 6] + 1) % 20)])  # token 6 changed in row 1
  lm = lstm.LSTM(vocab_size=20, width=8, num_layers=2)
  out = jax.jit(lambda x: lm.apply(lm.init(jax.random.key(0), x), x))(both)
  diff = np.abs(np.asarray(out[1] - out[0])).max(-1)
  assert (diff[:6] == 0).all() and (diff[6:] > 0).all()
  enc = bert.BERT(GPTConfig(vocab_size=21, context=10, num_layers=1, num_heads=2, width=8, causal=False), mask_id=20)
  out = jax.jit(lambda x: enc.apply(enc.init(jax.random.key(0), x), x))(both)
  assert (np.abs(np.asarray(out[1] - out[0])).max(-1) > 0).all()  # every position reads the whole window


def test_batchnorm_statistics_train_eval_and_pmap():
  """Training updates the running statistics from the batch, evaluation reads them and changes nothing;
  under pmap every device ends with the statistics of the whole global batch."""
  n, per_device = jax.local_device_count(), 4
  assert n == 8, "conftest gives 8 CPU devices"
  rng = np.random.default_rng(0)
  # Each device's rows have a different mean, so local statistics differ.
  image = (rng.normal(size=(n, per_device, 8, 8, 1)) * 3 + np.arange(n)[:, None, None, None, None])
  batch = {"image": image.astype(np.float32), "label": rng.integers(0, 3, (n, per_device)),
           "mask": np.ones((n, per_device), np.float32)}
  model = classifier.Classifier(resnet.ResNet((1, 1), (4, 8)), num_classes=3)
  tx = optax.sgd(0.1)
  state = jax.jit(lambda: step.init_state(model, tx, batch["image"][0, :1], seed=0))()
  assert set(state.model_state) == {"batch_stats"}
  stem = lambda s: np.asarray(s.model_state["batch_stats"]["backbone"]["stem_norm"]["mean"])

  single = jax.jit(step.make_train_step(model, classification.loss, tx, seed=0))
  alone = [single(state, {k: v[d] for k, v in batch.items()})[0] for d in range(n)]
  assert not np.allclose(stem(alone[0]), stem(state)) and not np.allclose(stem(alone[0]), stem(alone[1]))

  evaluate = jax.jit(step.make_eval_step(model, classification.loss))
  first = {k: v[0] for k, v in batch.items()}
  only_row0 = {**first, "mask": np.eye(per_device, dtype=np.float32)[0]}
  others_changed = {**only_row0, "image": np.concatenate([first["image"][:1], first["image"][1:] * 5 + 7])}
  a, b = float(evaluate(alone[0], only_row0)["loss_sum"]), float(evaluate(alone[0], others_changed)["loss_sum"])
  np.testing.assert_allclose(a, b, rtol=1e-5)  # eval normalizes with running statistics, not the batch's

  # Under pmap BatchNorm synchronises over the data axis: every device normalizes with the whole global
  # batch's statistics and keeps the running averages one device computes on all the rows.
  synced = classifier.Classifier(resnet.ResNet((1, 1), (4, 8), data_axis="batch"), num_classes=3)
  train = jax.pmap(step.make_train_step(synced, classification.loss, tx, seed=0, axis_name="batch"),
                   axis_name="batch")
  replicated = jax.tree_util.tree_map(lambda x: np.broadcast_to(x, (n, *np.shape(x))), state)
  trained = train(replicated, batch)[0]
  whole = single(state, {k: v.reshape(n * per_device, *v.shape[2:]) for k, v in batch.items()})[0]
  stem_var = lambda s: np.asarray(s.model_state["batch_stats"]["backbone"]["stem_norm"]["var"])
  for stat in (stem, stem_var):
    per_device_stats = stat(trained)
    assert np.allclose(per_device_stats, per_device_stats[0])  # one set of statistics on every device
    np.testing.assert_allclose(per_device_stats[0], stat(whole), rtol=1e-4, atol=1e-5)
  # The devices' rows have different means, so the global variance is not the mean of per-device ones.
  assert not np.allclose(stem_var(whole), np.mean([stem_var(s) for s in alone], axis=0), rtol=1e-2)


def test_objectives_refuse_families_they_cannot_train():
  config = tiny_config(**{"objective": "masked_lm", "model.family": "gpt"})
  with pytest.raises(errors.ConfigError, match="model.family bert"):
    run_dir.build_model(config, data.load(config))
  config = tiny_config(**{"model.family": "seed_cnn"})
  with pytest.raises(errors.ConfigError, match="reads images"):
    run_dir.build_model(config, data.load(config))
