"""The real-service fixtures themselves work (these are what every integration test stands on)."""

import redis
import sqlalchemy as sa


def test_redis_is_a_real_server(redis_service):
    client = redis.Redis.from_url(redis_service.url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    assert client.info("server")["redis_version"]


def test_postgres_is_a_real_cluster(postgres_url):
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW server_version")).scalar()
    engine.dispose()
