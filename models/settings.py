"""Training settings: one typed class, every field overridable as ``STREAMREC_TRAIN_<NAME>``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ModelName = Literal["item2vec", "mf"]


class TrainSettings(BaseSettings):
    """Hyper-parameters and run options shared by the item2vec and BPR-MF trainers.

    The defaults train ML-100k or YOOCHOOSE-100k on two CPU cores in well under a minute.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMREC_TRAIN_", extra="ignore")

    model: ModelName = Field("item2vec", description="item2vec (skip-gram over sequences) or mf (BPR)")
    dim: int = Field(64, ge=2, le=1024, description="embedding dimension")
    epochs: int = Field(20, ge=1, le=1000, description="maximum epochs (early stopping may end sooner)")
    lr: float | None = Field(None, gt=0, description="learning rate; None = the model's default")
    batch_size: int = Field(4096, ge=1, description="training examples per step")
    window: int = Field(5, ge=1, le=100, description="item2vec: max distance between co-occurring items")
    negatives: int = Field(5, ge=1, le=100, description="negative samples per positive")
    subsample: float = Field(
        0.0, ge=0.0, description="item2vec: word2vec frequent-item subsampling t (0 = off)"
    )
    reg: float = Field(1e-4, ge=0.0, description="mf: L2 regularisation of the factors in the batch")
    min_count: int = Field(1, ge=1, description="items seen fewer times get no trained vector")
    seed: int = Field(42, description="seed for initialisation, sampling and the validation split")
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda or cuda:N")
    cpu_threads: int = Field(
        1, ge=0, description="torch threads while training on CPU (0 = leave torch's setting)"
    )
    mixed_precision: bool = Field(True, description="autocast on CUDA (never used on CPU)")
    patience: int = Field(
        3, ge=0, description="epochs without validation gain before stopping (0 = never stop)"
    )
    validation_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="share of sequences whose last item is held out"
    )
    max_validation: int = Field(5000, ge=0, description="cap on held-out pairs (bounds evaluation time)")
    eval_k: int = Field(20, ge=1, description="validation metric is HR@eval_k")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
