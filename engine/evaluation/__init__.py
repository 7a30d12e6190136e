"""Offline evaluation: metrics, the next-item and prequential protocols, and baselines."""
