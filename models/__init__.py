"""Item embeddings: training (item2vec, BPR-MF), content vectors for cold items, alignment, artefacts."""

import os

# FAISS and torch parallelise with OpenMP, whose default lets idle worker threads spin-wait. On a
# machine whose cores are shared (Kafka clients, Redis, other workers, CI) spinning threads fight
# for CPU with the ones doing the work: measured here, a FAISS PQ build went from 0.05 s to 8 s and
# an embedding training epoch from 1 s to 4-15 s on 2 busy cores. Passive waiting costs at most a
# thread wake-up per parallel region. It must be set before the OpenMP runtime loads (the first
# import of faiss or torch); an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
