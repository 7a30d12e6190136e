"""Security settings: SASL/TLS and Redis AUTH/TLS pass through; secrets never show; no pickle loads."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from consumers.worker import Worker
from deploy.settings import load_settings
from deploy.stack import _binaries
from engine.errors import BrokerError, IndexLoadError, StateStoreError
from engine.state.memory import MemoryStore
from engine.state.redis_store import RedisSettings, RedisStore, connect
from index.exact import VECTORS_FILE, ExactIndex
from index.factory import load_index
from producers.kafka import KafkaSettings, client_config
from producers.recs import make_producer

KAFKA_SECRET = "kafka-Pa55-w0rd!"
KEY_SECRET = "key-Pa55-w0rd!"
REDIS_SECRET = "redis-Pa55-w0rd!"
URL_SECRET = "url-Pa55-w0rd!"
SECRETS = (KAFKA_SECRET, KEY_SECRET, REDIS_SECRET, URL_SECRET)
ROOT = Path(__file__).resolve().parents[2]

SECURE_ENV = {
    "STREAMREC_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "STREAMREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "STREAMREC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "STREAMREC_KAFKA_SASL_USERNAME": "svc-streamrec",
    "STREAMREC_KAFKA_SASL_PASSWORD": KAFKA_SECRET,
    "STREAMREC_KAFKA_SSL_CA_LOCATION": "/etc/ssl/ca.pem",
    "STREAMREC_KAFKA_SSL_CERTIFICATE_LOCATION": "/etc/ssl/client.pem",
    "STREAMREC_KAFKA_SSL_KEY_LOCATION": "/etc/ssl/client.key",
    "STREAMREC_KAFKA_SSL_KEY_PASSWORD": KEY_SECRET,
    "STREAMREC_REDIS_URL": "rediss://127.0.0.1:1/0",
    "STREAMREC_REDIS_USERNAME": "streamrec",
    "STREAMREC_REDIS_PASSWORD": REDIS_SECRET,
    "STREAMREC_REDIS_SSL_CA_CERTS": "/etc/ssl/redis-ca.pem",
}


@pytest.fixture
def secure_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith("STREAMREC_"):
            monkeypatch.delenv(key)
    for key, value in SECURE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no .streamrec/stack.env here
    return SECURE_ENV


def _no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_kafka_sasl_and_tls_pass_through(secure_env: dict[str, str]) -> None:
    config = client_config(load_settings().kafka)
    assert config == {
        "bootstrap.servers": "127.0.0.1:1",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc-streamrec",
        "sasl.password": KAFKA_SECRET,
        "ssl.ca.location": "/etc/ssl/ca.pem",
        "ssl.certificate.location": "/etc/ssl/client.pem",
        "ssl.key.location": "/etc/ssl/client.key",
        "ssl.key.password": KEY_SECRET,
    }


def test_plaintext_by_default_with_no_security_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("STREAMREC_KAFKA_"):
            monkeypatch.delenv(key)
    config = client_config(KafkaSettings())
    assert config["security.protocol"] == "PLAINTEXT"
    assert not any(k.startswith(("sasl.", "ssl.")) for k in config)


def test_librdkafka_accepts_the_security_config(secure_env: dict[str, str]) -> None:
    # The keys are real librdkafka properties: a typo would fail here, not in production.
    settings = load_settings().kafka.model_copy(update={"security_protocol": "SASL_PLAINTEXT"})
    make_producer(settings).flush(0)


def test_redis_auth_and_tls_pass_through(secure_env: dict[str, str]) -> None:
    client = connect(load_settings().redis)
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert kwargs["username"] == "streamrec"
    assert kwargs["password"] == REDIS_SECRET
    assert kwargs["ssl_ca_certs"] == "/etc/ssl/redis-ca.pem"
    in_url = connect(RedisSettings(url=f"rediss://svc:{URL_SECRET}@127.0.0.1:1/0"))
    assert in_url.connection_pool.connection_kwargs["password"] == URL_SECRET


def test_secrets_are_masked_in_reprs_and_describe(secure_env: dict[str, str]) -> None:
    settings = load_settings()
    texts = [
        repr(settings),
        str(settings.kafka),
        repr(settings.redis),
        settings.kafka.model_dump_json(),
        settings.redis.model_dump_json(),
        str(settings.describe()),
        repr(RedisStore(settings.redis, 1, client=redis.Redis())),
    ]
    for text in texts:
        _no_secret(text)
    assert settings.describe()["kafka"]["sasl_password"] == "**********"
    assert settings.describe()["redis"]["url"] == "**********"
    with_url = RedisSettings(url=f"rediss://svc:{URL_SECRET}@127.0.0.1:1/0")
    _no_secret(repr(with_url) + str(with_url.model_dump()) + with_url.model_dump_json())


def test_secrets_stay_out_of_the_worker_logs(
    secure_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings()
    caplog.set_level(logging.DEBUG)
    plain = settings.kafka.model_copy(update={"security_protocol": "SASL_PLAINTEXT"})
    worker = Worker(plain, MemoryStore(1), settings.engine, settings.worker)
    logging.getLogger("streamrec.test").info("settings %s %r", settings.kafka, settings.redis)
    worker._make_consumer().close()
    _no_secret(caplog.text)
    # The TLS files do not exist: the error names the problem, not the credentials.
    with pytest.raises(BrokerError, match="ssl.ca.location") as failed:
        Worker(settings.kafka, MemoryStore(1), settings.engine, settings.worker)._make_consumer()
    _no_secret(str(failed.value))


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")} | env
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", "-v", *args],
        env=env | {"PYTHONPATH": str(ROOT)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_output_and_errors_never_show_secrets(tmp_path: Path) -> None:
    shown = _cli(["config"], SECURE_ENV, tmp_path)
    assert shown.returncode == 0 and "SCRAM-SHA-512" in shown.stdout
    _no_secret(shown.stdout + shown.stderr)
    # A failing connection (debug logging on) says what failed, without the credentials.
    env = SECURE_ENV | {"STREAMREC_REDIS_URL": f"redis://streamrec:{URL_SECRET}@127.0.0.1:1/0"}
    env |= {"STREAMREC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "STREAMREC_REDIS_SSL_CA_CERTS": ""}
    failed = _cli(["recommend", "u1"], env, tmp_path)
    assert failed.returncode == 2 and "error:" in failed.stderr
    _no_secret(failed.stdout + failed.stderr)


# -- Redis AUTH against a real server ------------------------------------------------------------


@pytest.fixture
def auth_redis(tmp_path: Path):
    """A Redis (or Valkey) of this test's own that requires a password; stopped by its PID."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    binary, _ = _binaries()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--requirepass", REDIS_SECRET, "--dir", str(tmp_path)]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "redis did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.stack
def test_redis_auth_on_a_real_server(auth_redis: int) -> None:
    url = f"redis://127.0.0.1:{auth_redis}/0"
    store = RedisStore(RedisSettings(url=url, password=REDIS_SECRET), 2)
    assert store.ping() and store.watermarks() == {0: -1, 1: -1}
    store.close()
    with pytest.raises(StateStoreError) as denied:
        RedisStore(RedisSettings(url=url, password="wrong-password", retry_attempts=0), 2).watermarks()
    assert "wrong-password" not in str(denied.value)
    in_url = RedisStore(RedisSettings(url=f"redis://:{REDIS_SECRET}@127.0.0.1:{auth_redis}/0"), 2)
    assert in_url.ping()
    in_url.close()


# -- artefacts never unpickle --------------------------------------------------------------------


def test_index_files_load_without_pickle(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    index = ExactIndex(4)
    index.build(rng.normal(size=(6, 4)).astype(np.float32), [f"i{n}" for n in range(6)])
    saved = index.save(tmp_path / "idx")
    assert load_index(saved).search(rng.normal(size=(1, 4)).astype(np.float32), 2)[0][0]
    # An object array needs pickle to read; a loader that allowed it would run code from the file.
    np.save(saved / VECTORS_FILE, np.array([{"evil": 1}] * 6, dtype=object), allow_pickle=True)
    with pytest.raises(IndexLoadError, match="pickle"):
        load_index(saved)
    # Right shape, wrong content type: validated, not trusted.
    np.save(saved / VECTORS_FILE, np.zeros((6, 4), dtype=np.float64), allow_pickle=False)
    with pytest.raises(IndexLoadError, match="float32"):
        load_index(saved)
