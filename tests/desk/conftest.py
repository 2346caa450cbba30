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
