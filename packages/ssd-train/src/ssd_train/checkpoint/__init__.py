"""Checkpoints and weights: DCP ``step-N`` folders with exact resume (``manager``), their on-disk
layout (``files``), per-rank RNG state (``rank_state``) and exported ``best.pt``/``last.pt``
weights (``weights``)."""
