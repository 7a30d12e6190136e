"""A worker's settings and its test-only fault injection (crash points between the commit steps)."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.errors import ConfigurationError

log = logging.getLogger("streamrec.worker")

#: The points between the commit steps where a test may crash a worker, in the order they are reached.
FAULT_STEPS = (
    "dlq_flushed",  # dead letters flushed, state not written
    "state_written",  # the poll's deltas + watermarks written (or skipped), its recs not computed
    "recs_produced",  # recs queued, producer not flushed
    "recs_flushed",  # recs delivered, their digests not stored
    "digests_written",  # digests stored, offsets not committed
    "committed",  # offsets committed (sent asynchronously: a crash here may still re-deliver)
    "assigned",  # rebalance: watermarks read, partitions not yet assigned
    "revoked",  # rebalance: partitions being taken away
)

Fault = Callable[[str], None]


def fault_from_spec(spec: str) -> Fault:
    """``"step:nth"``: a fault that SIGKILLs this process the nth time it reaches ``step``.

    For tests of worker processes only: a real crash, with no ``finally`` and no flush.
    """
    step, _, nth = spec.partition(":")
    if step not in FAULT_STEPS or not nth.isdigit() or int(nth) < 1:
        raise ConfigurationError(
            f"STREAMREC_WORKER_FAULT_AT must be 'step:n' with step in {', '.join(FAULT_STEPS)}, got {spec!r}"
        )
    remaining = {step: int(nth)}

    def fault(at: str) -> None:
        if at in remaining:
            remaining[at] -= 1
            if remaining[at] == 0:
                log.warning("fault injection: killing this worker at %s", at)
                os.kill(os.getpid(), signal.SIGKILL)

    return fault


class WorkerSettings(BaseSettings):
    """Environment: ``STREAMREC_WORKER_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_WORKER_", extra="ignore")

    batch_size: int = Field(2000, ge=1, description="records per consume() call")
    poll_timeout_s: float = Field(
        0.05, gt=0, description="longest a poll waits for a first record (then it returns what is fetched)"
    )
    batch_linger_s: float = Field(
        0.0,
        ge=0,
        description="after the first record, wait up to this long for more (bigger batches, more latency)",
    )
    fetch_wait_max_ms: int = Field(
        30,
        ge=0,
        le=10_000,
        description="longest the broker holds a fetch for data: Apache Kafka answers as soon as records "
        "arrive, the embedded broker (Tansu) always waits this long, so there it trades latency for "
        "broker work (docs/performance.md)",
    )
    prefetch_kbytes: int = Field(
        8192,
        ge=1024,
        description="records fetched ahead per partition, in KiB (librdkafka queued.max.messages.kbytes; "
        "its default, 64 MiB a partition, lets a lagging worker hold that much)",
    )
    idle_checks: int = Field(2, ge=1, description="empty polls with zero lag before --until-idle exits")
    publish_recs: bool = Field(True, description="produce recommendations to the recs topic")
    session_replica: bool = Field(
        True,
        description="while this worker owns every partition, keep the session model in memory "
        "too (loaded from Redis on assignment, fed by its own writes) and score from it instead "
        "of reading it back per batch",
    )
    scorer: Literal["auto", "process", "inline"] = Field(
        "auto",
        description="where recommendations are computed: 'process' = a second process that scores a "
        "poll while the worker decodes and writes the next (uses a second core); 'inline' = in the "
        "worker, one poll at a time; 'auto' = 'process' when the worker was started by the runner "
        "(which can open the store again in the second process) and the host has more CPUs than "
        "`streamrec run --workers`",
    )
    gc_freeze: bool = Field(
        True,
        description="after each full garbage collection, freeze its survivors (the long-lived state) "
        "so that the next one walks only newer objects: short GC pauses (consumers/heap.py)",
    )
    model_version: str = "cooccurrence-v1"
    fault_at: str | None = Field(None, description="testing only: 'step:n' kills the worker at step n")
