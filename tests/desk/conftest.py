"""Desk fixtures: the whole product behind the WeChat sandbox (tests/wechat/conftest.py), and a
product of its own for tests that change what it serves (retraining switches its model)."""
from typing import Iterator

import pytest

from tests.wechat.conftest import wechat_product  # noqa: F401


@pytest.fixture(scope="module")
def own_product(trained_model, tmp_path_factory) -> Iterator:
    from tests.conftest import Product, product_env, seed

    var_dir = tmp_path_factory.mktemp("desk_product")
    url = f"sqlite:///{var_dir / 'shop.db'}"
    seed(url)
    product = Product(product_env(url, var_dir), var_dir / "product.log")
    product.start()
    try:
        yield product
    finally:
        product.stop()


@pytest.fixture(scope="module")
def pg_product(trained_model, tmp_path_factory) -> Iterator:
    """The whole product on a seeded PostgreSQL database of its own."""
    from tests.conftest import PG_ADMIN_URL, Product, port_open, product_env, seed, unavailable
    from tests.support import throwaway_pg_database

    if not port_open("127.0.0.1", 5432):
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    var_dir = tmp_path_factory.mktemp("desk_pg_product")
    with throwaway_pg_database(PG_ADMIN_URL, "siyu_desk") as url:
        seed(url)
        product = Product(product_env(url, var_dir), var_dir / "product.log")
        product.start()
        try:
            yield product
        finally:
            product.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def any_product(request):
    """The whole product on each real database (console, Rasa's tracker store and the shop's data)."""
    return request.getfixturevalue("product_server" if request.param == "sqlite" else "pg_product")
