"""The example order service: API flows on every backend, and a race for the last items."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from advanced_alchemy.base import BigIntBase
from litestar import Litestar
from litestar.testing import AsyncTestClient

from example_app.app import create_app
from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from tests.conftest import backend_url


async def _fresh_tables(url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=url))
    async with engine.begin() as connection:
        await connection.run_sync(BigIntBase.metadata.drop_all)
    await engine.dispose()


@pytest.fixture
async def client(backend: str, tmp_path: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    url = backend_url(backend, tmp_path)
    if backend in ("postgresql", "mysql"):
        await _fresh_tables(url)
    app = create_app(DatabaseConfig(url=url, pool_size=10, max_overflow=20))
    async with AsyncTestClient(app) as test_client:
        yield test_client


async def test_order_flow(client: AsyncTestClient[Litestar]) -> None:
    alice = await client.post("/api/v1/customers", json={"name": "Alice", "email": "a@example.com"})
    assert alice.status_code == 201
    customer_id = alice.json()["id"]
    tea = await client.post(
        "/api/v1/products", json={"sku": "TEA-1", "name": "Tea", "price_cents": 450, "stock": 5}
    )
    cup = await client.post(
        "/api/v1/products", json={"sku": "CUP-1", "name": "Cup", "price_cents": 900, "stock": 2}
    )
    assert tea.status_code == cup.status_code == 201
    tea_id, cup_id = tea.json()["id"], cup.json()["id"]

    order = await client.post(
        "/api/v1/orders",
        json={
            "customer_id": customer_id,
            "items": [
                {"product_id": tea_id, "quantity": 2},
                {"product_id": cup_id, "quantity": 1},
                {"product_id": tea_id, "quantity": 1},
            ],
        },
    )
    assert order.status_code == 201, order.text
    body = order.json()
    assert body["total_cents"] == 3 * 450 + 900
    assert sorted((i["product_id"], i["quantity"]) for i in body["items"]) == sorted(
        [(tea_id, 3), (cup_id, 1)]
    )
    fetched = await client.get(f"/api/v1/orders/{body['id']}")
    assert fetched.json() == body
    assert (await client.get(f"/api/v1/products/{tea_id}")).json()["stock"] == 2
    assert [c["name"] for c in (await client.get("/api/v1/customers")).json()] == ["Alice"]
    assert len((await client.get("/api/v1/products")).json()) == 2
    docs = await client.get("/api/v1/docs/openapi.json")
    assert docs.status_code == 200
    assert "/api/v1/orders" in docs.json()["paths"]
    health = await client.get("/api/v1/common/health/readiness")
    assert health.json() == {"status": "pass"}


async def test_bad_input_is_a_clear_4xx(client: AsyncTestClient[Litestar]) -> None:
    customer = await client.post(
        "/api/v1/customers", json={"name": "Bob", "email": "b@example.com"}
    )
    customer_id = customer.json()["id"]
    product = await client.post(
        "/api/v1/products", json={"sku": "PEN", "name": "Pen", "price_cents": 100, "stock": 1}
    )
    product_id = product.json()["id"]
    cases = [
        ("post", "/api/v1/customers", {"name": "Bob 2", "email": "b@example.com"}, 409),
        ("post", "/api/v1/products", {"sku": "PEN", "name": "x", "price_cents": 1,
                                      "stock": 1}, 409),
        ("post", "/api/v1/customers", {"name": "", "email": "nobody"}, 400),
        ("post", "/api/v1/products", {"sku": "X", "name": "x", "price_cents": -1, "stock": 1}, 400),
        ("post", "/api/v1/orders", {"customer_id": 999999, "items": [
            {"product_id": product_id, "quantity": 1}]}, 422),
        ("post", "/api/v1/orders", {"customer_id": customer_id, "items": [
            {"product_id": 999999, "quantity": 1}]}, 422),
        ("post", "/api/v1/orders", {"customer_id": customer_id, "items": [
            {"product_id": product_id, "quantity": 2}]}, 409),
        ("post", "/api/v1/orders", {"customer_id": customer_id, "items": []}, 400),
        ("post", "/api/v1/orders", {"customer_id": "one", "items": "many"}, 400),
        ("get", "/api/v1/orders/999999", None, 404),
        ("get", "/api/v1/customers/999999", None, 404),
    ]  # fmt: skip
    for method, path, payload, expected in cases:
        response = await client.request(method.upper(), path, json=payload)
        assert response.status_code == expected, (path, payload, response.text)
    raw = await client.post(
        "/api/v1/orders", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 400
    # nothing was taken by the rejected orders
    assert (await client.get(f"/api/v1/products/{product_id}")).json()["stock"] == 1


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
async def test_twenty_orders_race_for_the_last_ten_items(client: AsyncTestClient[Litestar]) -> None:
    customer = await client.post("/api/v1/customers", json={"name": "Cy", "email": "c@example.com"})
    product = await client.post(
        "/api/v1/products", json={"sku": "LAST", "name": "Last ten", "price_cents": 1, "stock": 10}
    )
    order = {
        "customer_id": customer.json()["id"],
        "items": [{"product_id": product.json()["id"], "quantity": 1}],
    }
    responses = await asyncio.gather(
        *(client.post("/api/v1/orders", json=order) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 10 + [409] * 10
    stock = (await client.get(f"/api/v1/products/{product.json()['id']}")).json()["stock"]
    assert stock == 0
    created = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created) == 10
