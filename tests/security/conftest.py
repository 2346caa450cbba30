"""The WeChat fixtures (databases, Redis, the gateway harness) for the security tests of the WeChat
gateway."""
from tests.wechat.conftest import harness, no_redis, postgres_db, redis_client, sqlite_db, wechat_db  # noqa: F401
