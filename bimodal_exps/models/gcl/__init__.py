"""Global contrastive losses: one shared GCL core (estimator, state, collectives) and thin loss classes."""
