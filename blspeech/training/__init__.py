"""Training: config, preparation, the trainer loop, checkpoints, optimizers, distributed set-up."""
