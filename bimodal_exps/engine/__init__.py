"""Training/evaluation engine: loops, checkpoints, optimisation, distributed set-up, logging."""
