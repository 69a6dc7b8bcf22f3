"""The model: bar encoder/decoder blocks, the Transformer VAE, the copy path, checkpoints.

Nothing here knows about training: the model returns log-probabilities and per-bar KL."""
