"""pretrain: likelihood pretraining and fine-tuning in JAX (Flax linen, Optax, Orbax, TFDS)."""
