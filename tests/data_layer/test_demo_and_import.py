"""The demo shop, the CSV/JSON importer and the migrations, on SQLite and PostgreSQL."""
from __future__ import annotations

import json

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from actions.db.demo_data import is_empty
from actions.db.engine import create_sync_engine
from actions.db.importer import run_import
from actions.db.models import Customer, CustomerIdentity, Order, OrderStatus, Product, ProductVariant


def count(model, **where):
    with Session(create_sync_engine()) as s:
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return s.execute(stmt).scalar_one()


def test_demo_shop_is_believable(shop_db):
    assert count(Product) >= 60
    assert count(Order) >= 300
    for status in OrderStatus:
        assert count(Order, status=status.value) > 0, status
    with Session(create_sync_engine()) as s:
        assert not is_empty(s)
        categories = s.execute(select(Product.category).distinct()).scalars().all()
    assert len(categories) >= 7


PRODUCTS_CSV = """spu,name,category,brand,aliases,description,specs,sku,color,size,price,stock,on_sale
T100,测试卫衣,男装,测试牌,卫衣|帽衫,加绒,面料:棉|版型:宽松,T100-1,黑色,L,199,10,true
T100,测试卫衣,男装,测试牌,卫衣|帽衫,加绒,面料:棉|版型:宽松,T100-2,黑色,XL,199,0,true
T101,,男装,,,,,T101-1,白色,M,99,5,true
T102,坏价格,男装,,,,,T102-1,白色,M,九十九,5,true
T103,好商品,家居日用,,,,,T103-1,,,59.9,3,true
"""


def test_import_reports_bad_rows_with_line_numbers_and_keeps_the_rest(shop_db, tmp_path):
    path = tmp_path / "products.csv"
    path.write_text(PRODUCTS_CSV, encoding="utf-8")
    report = run_import("products", str(path))
    assert report.created == 2 and report.updated == 0
    assert [e.line for e in report.errors] == [4, 5]
    assert "name" in report.errors[0].message and "price" in report.errors[1].message
    with Session(create_sync_engine()) as s:
        variants = s.execute(select(ProductVariant).where(ProductVariant.sku.like("T100-%"))).scalars().all()
        assert sorted((v.size, v.stock) for v in variants) == [("L", 10), ("XL", 0)]
        assert s.execute(select(ProductVariant.price_fen).where(ProductVariant.sku == "T103-1")).scalar_one() == 5990
    # re-import: nothing new, nothing duplicated
    again = run_import("products", str(path))
    assert again.created == 0 and again.updated == 2
    assert count(Product, spu="T100") == 1


def test_import_customers_and_orders_from_json_is_idempotent(shop_db, tmp_path):
    customers = [{"external_id": "X9001", "name": "导入顾客", "phone": "13700000000", "identities": "im:x9001",
                  "tags": "宝妈|老客"},
                 {"external_id": "X9002", "name": "", "phone": "abc"}]
    (tmp_path / "c.json").write_text(json.dumps(customers, ensure_ascii=False), encoding="utf-8")
    report = run_import("customers", str(tmp_path / "c.json"))
    assert report.created == 1 and [e.line for e in report.errors] == [2]
    orders = [{"order_no": "SY20990101000001", "customer": "X9001", "status": "shipped",
               "created_at": "2099-01-01 10:00:00", "paid_at": "2099-01-01 10:05", "shipped_at": "2099-01-02",
               "receiver_name": "导入顾客", "receiver_phone": "13700000000", "address": "上海市浦东新区测试路 1 号",
               "carrier": "顺丰速运", "tracking_no": "SF0000000000001", "items": "T103-1*2",
               "logistics": [{"time": "2099-01-02 09:00", "location": "上海", "description": "快件已揽收"}]},
              {"order_no": "SY20990101000002", "customer": "NOBODY", "status": "paid",
               "created_at": "2099-01-01", "receiver_name": "x", "receiver_phone": "1370000", "address": "某地某路",
               "items": "T103-1*1"},
              {"order_no": "SY20990101000003", "customer": "X9001", "status": "teleported",
               "created_at": "2099-01-01", "receiver_name": "x", "receiver_phone": "1370000", "address": "某地某路",
               "items": "T103-1*1"}]
    (tmp_path / "o.json").write_text(json.dumps(orders, ensure_ascii=False), encoding="utf-8")
    report = run_import("orders", str(tmp_path / "o.json"))
    assert report.created == 1 and sorted(e.line for e in report.errors) == [2, 3]
    again = run_import("orders", str(tmp_path / "o.json"))
    assert again.created == 0 and again.updated == 1
    with Session(create_sync_engine()) as s:
        order = s.execute(select(Order).where(Order.order_no == "SY20990101000001")).scalars().one()
        assert order.total_fen == 2 * 5990 and len(order.items) == 1 and len(order.logistics) == 1
        identity = s.execute(select(CustomerIdentity).where(CustomerIdentity.external_id == "x9001")).scalars().one()
        assert identity.customer_id == order.customer_id
        assert s.get(Customer, order.customer_id).tags == ["宝妈", "老客"]   # what nudge rules' tags match


def test_unreadable_file_is_reported_not_raised(shop_db, tmp_path):
    report = run_import("orders", str(tmp_path / "missing.csv"))
    assert report.created == 0 and report.errors and report.errors[0].line == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert run_import("orders", str(bad)).errors


def test_product_import_teaches_jieba_the_catalog_words(shop_db, tmp_path):
    import jieba

    path = tmp_path / "products.csv"
    path.write_text(PRODUCTS_CSV, encoding="utf-8")
    dictionary = tmp_path / "catalog_dict.txt"
    report = run_import("products", str(path), dictionary=dictionary)
    assert report.dictionary_updated
    words = {line.split(" ")[0] for line in dictionary.read_text(encoding="utf-8").splitlines()}
    assert {"测试牌", "测试卫衣", "卫衣", "帽衫", "男装", "家居日用"} <= words
    assert all(" " not in w and len(w) >= 2 for w in words)
    tokenizer = jieba.Tokenizer()
    tokenizer.load_userdict(str(dictionary))
    assert "测试牌" in tokenizer.lcut("测试牌卫衣还有货吗"), "a new brand is one word, not three characters"
    # the same catalog again: the file (and so the trained model) stays as it is
    assert not run_import("products", str(path), dictionary=dictionary).dictionary_updated
    # other imports never touch it
    (tmp_path / "c.json").write_text('[{"external_id": "X9002", "name": "顾客", "phone": "13700000001"}]',
                                     encoding="utf-8")
    assert not run_import("customers", str(tmp_path / "c.json"), dictionary=dictionary).dictionary_updated
