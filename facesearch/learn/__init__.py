"""Stage 8, learning: losses, miners, distances, training data, the training loop and checkpoints."""
