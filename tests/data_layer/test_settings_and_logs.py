from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from bot.log_format import JsonFormatter, MaskPersonalData, mask_text
from bot.settings import DEFAULT_SHOP_FILE, Settings, ShopConfig, load_shop_config, masked_url


def test_shop_file_is_loaded_and_validated(tmp_path):
    shop = load_shop_config(DEFAULT_SHOP_FILE)
    assert shop.name == "小满生活馆" and shop.return_window_days == 7
    assert shop.persona in ("专业顾问", "热情闺蜜", "幽默风趣")
    assert "顺丰" in shop.policies["shipping"].answer_for("能发顺丰吗")
    with pytest.raises(ValidationError):
        ShopConfig.model_validate({"persona": "毒舌", "policies": {}})


def test_database_urls_are_derived_for_both_drivers():
    s = Settings(DATABASE_URL="postgresql://u:secret@db:5432/shop")
    assert s.async_database_url == "postgresql+asyncpg://u:secret@db:5432/shop"
    assert s.sync_database_url == "postgresql://u:secret@db:5432/shop"
    s = Settings(DATABASE_URL="sqlite:////tmp/x.db")
    assert s.async_database_url == "sqlite+aiosqlite:////tmp/x.db" and s.is_sqlite
    assert masked_url("postgresql://u:secret@db/shop") == "postgresql://u:***@db/shop"
    settings = Settings(im_identity_secret="s3cr3t-value")
    assert settings.im_identity_secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings) and "s3cr3t-value" not in str(settings.model_dump())


def test_logs_are_json_with_personal_data_masked(capsys):
    logger = logging.getLogger("test.masking")
    handler = logging.StreamHandler()
    handler.addFilter(MaskPersonalData())
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("customer %s wrote from 13812345678", "张三",
                       extra={"receiver_name": "王小满", "address": "浙江省杭州市余杭区文一西路1888号3幢1201室"})
    finally:
        logger.removeHandler(handler)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert "13812345678" not in json.dumps(line, ensure_ascii=False)
    assert "138****5678" in line["msg"]
    assert line["receiver_name"] == "王**"
    assert line["address"] == "浙江省杭州市余杭区***"


def test_mask_text_handles_id_cards_and_mail():
    assert mask_text("身份证330106199001011234") == "身份证330106********1234"
    assert mask_text("mail me: someone@example.com") == "mail me: s***@example.com"
