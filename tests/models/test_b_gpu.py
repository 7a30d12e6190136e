"""The CUDA path: training on the GPU with mixed precision gives usable embeddings.

Skipped (with the reason) where CUDA is absent; run with ``pytest -m gpu`` on a GPU machine.
Set ``STREAMREC_GPU_TIMINGS=path.json`` to record the timings of the run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.loaders import load_events
from models import item2vec, mf
from models.settings import TrainSettings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine"),
]

ML_INTER = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ml-100k" / "ml-100k.inter"


@pytest.fixture(scope="module")
def events():
    if not ML_INTER.is_file():
        pytest.skip(f"ML-100k is absent: {ML_INTER} not found")
    return load_events(ML_INTER, "movielens")


@pytest.mark.parametrize("module", [item2vec, mf], ids=["item2vec", "mf"])
def test_trains_on_cuda_with_mixed_precision(events, module) -> None:
    settings = TrainSettings(device="auto", epochs=8, patience=3)  # auto must pick CUDA here
    started = time.perf_counter()
    gpu = module.fit(events, settings)
    gpu_s = time.perf_counter() - started
    assert gpu.metadata["device"].startswith("cuda")
    assert gpu.vectors.dtype == np.float32 and np.all(np.isfinite(gpu.vectors))
    started = time.perf_counter()
    cpu = module.fit(events, settings.model_copy(update={"device": "cpu"}))
    cpu_s = time.perf_counter() - started
    # bf16/fp16 autocast must not cost quality: validation HR@20 within a few points of CPU fp32.
    gpu_hr, cpu_hr = gpu.metadata["metrics"]["hr@20"], cpu.metadata["metrics"]["hr@20"]
    assert gpu_hr >= cpu_hr - 0.05, f"GPU HR@20 {gpu_hr:.3f} vs CPU {cpu_hr:.3f}"
    record = os.environ.get("STREAMREC_GPU_TIMINGS")
    if record:
        path = Path(record)
        rows = json.loads(path.read_text()) if path.exists() else []
        rows.append(
            {
                "model": gpu.model,
                "device": torch.cuda.get_device_name(0),
                "gpu_s": round(gpu_s, 2),
                "cpu_s": round(cpu_s, 2),
                "gpu_hr@20": gpu_hr,
                "cpu_hr@20": cpu_hr,
                "gpu_epochs": gpu.metadata["metrics"]["epochs_run"],
                "cpu_epochs": cpu.metadata["metrics"]["epochs_run"],
            }
        )
        path.write_text(json.dumps(rows, indent=2))
