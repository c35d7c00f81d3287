"""Evaluations beyond retrieval and zero-shot (linear probe, k-NN, clustering, text similarity, ELEVATER) and
their schedule; used by engine.evaluation's EvalSuite and clip.py (README "Evaluations")."""
