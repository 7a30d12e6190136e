"""Composition root: CLI, embedded stack, settings, model lifecycle. Nothing imports it."""

import os

# Idle OpenMP threads that spin (torch, FAISS) slow everything several-fold on a small shared
# machine; this must be set before either library is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
