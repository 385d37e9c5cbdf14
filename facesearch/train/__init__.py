"""Training: identity-folder data, augmentation, the training loop and checkpoints."""
