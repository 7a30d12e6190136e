"""All settings in one place: one typed class per subsystem, composed here.

Values come from, highest priority first: ``STREAMREC_*`` environment variables, the embedded
stack's ``.streamrec/stack.env`` in the working directory (written by ``streamrec up``), defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from consumers.metrics import ObservabilitySettings
from consumers.worker import WorkerSettings
from deploy.gateway.settings import GatewaySettings
from deploy.models import ModelSettings
from engine.config import EngineSettings
from engine.state.redis_store import RedisSettings
from index.factory import IndexSettings
from models.settings import TrainSettings
from producers.kafka import KafkaSettings

SUBSYSTEMS = ("kafka", "redis", "engine", "worker", "observability", "model", "train", "index", "gateway")

STACK_DIR = ".streamrec"
STACK_ENV = "stack.env"


@dataclass
class Settings:
    kafka: KafkaSettings
    redis: RedisSettings
    engine: EngineSettings
    worker: WorkerSettings
    model: ModelSettings
    train: TrainSettings
    index: IndexSettings
    # Defaulted (and last) so that code building Settings by hand need not name it.
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)

    def describe(self) -> dict[str, dict[str, object]]:
        """Every setting by subsystem, secrets masked (pydantic prints SecretStr as '**********')."""
        return {
            name: {k: str(v) if v is not None else None for k, v in getattr(self, name).model_dump().items()}
            for name in SUBSYSTEMS
        }


def stack_env_path(workdir: Path | None = None) -> Path:
    return (workdir or Path.cwd()) / STACK_DIR / STACK_ENV


def load_settings(workdir: Path | None = None) -> Settings:
    env_file = stack_env_path(workdir)
    source = str(env_file) if env_file.is_file() else None
    return Settings(
        kafka=KafkaSettings(_env_file=source),  # type: ignore[call-arg]
        redis=RedisSettings(_env_file=source),  # type: ignore[call-arg]
        engine=EngineSettings(_env_file=source),  # type: ignore[call-arg]
        worker=WorkerSettings(_env_file=source),  # type: ignore[call-arg]
        observability=ObservabilitySettings(_env_file=source),  # type: ignore[call-arg]
        model=ModelSettings(_env_file=source),  # type: ignore[call-arg]
        train=TrainSettings(_env_file=source),  # type: ignore[call-arg]
        index=IndexSettings(_env_file=source),  # type: ignore[call-arg]
        gateway=GatewaySettings(_env_file=source),  # type: ignore[call-arg]
    )
