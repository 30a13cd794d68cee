"""Training: the contrastive loss, optimiser and schedule, the trainer loop, distributed
helpers, method checkpoints and resume. Nothing is imported eagerly."""
