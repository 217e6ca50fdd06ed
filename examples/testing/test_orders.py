"""A user's own tests with the three fixtures: nothing they commit outlives the test."""

from __future__ import annotations

from httpx import AsyncClient as Client
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from example_app.models import Customer, Product
from litestar_bento_db.testing import DatabaseFaults


async def count(session: AsyncSession, model: type[Customer] | type[Product]) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_request_commits_inside_the_test_transaction(
    db_client: Client, db_session: AsyncSession
) -> None:
    response = await db_client.post(
        "/api/v1/customers/", json={"name": "Ada", "email": "ada@example.com"}
    )
    assert response.status_code == 201, response.text
    # committed by the request, seen by the test on the same transaction
    customer = await db_session.scalar(select(Customer).where(Customer.email == "ada@example.com"))
    assert customer is not None
    assert customer.name == "Ada"


async def test_a_conflict_is_409_and_the_test_goes_on(
    db_client: Client, db_session: AsyncSession
) -> None:
    db_session.add(Customer(name="Ada", email="ada@example.com"))
    await db_session.commit()  # a savepoint: rolled back after the test all the same
    taken = await db_client.post(
        "/api/v1/customers/", json={"name": "Eve", "email": "ada@example.com"}
    )
    assert taken.status_code == 409, taken.text
    other = await db_client.post(
        "/api/v1/customers/", json={"name": "Eve", "email": "eve@example.com"}
    )
    assert other.status_code == 201, other.text
    assert await count(db_session, Customer) == 2


async def test_a_unit_of_work_sees_the_test_data(
    db_client: Client, db_session: AsyncSession
) -> None:
    # the order use case opens its own session (db_session_factory): same transaction
    customer = Customer(name="Ada", email="ada@example.com")
    product = Product(sku="TEA-1", name="Tea", price_cents=450, stock=3)
    db_session.add_all([customer, product])
    await db_session.commit()
    order = {"customer_id": customer.id, "items": [{"product_id": product.id, "quantity": 2}]}
    placed = await db_client.post("/api/v1/orders/", json=order)
    assert placed.status_code == 201, placed.text
    assert placed.json()["total_cents"] == 900
    await db_session.refresh(product)
    assert product.stock == 1
    refused = await db_client.post("/api/v1/orders/", json=order)  # 2 wanted, 1 left
    assert refused.status_code == 409, refused.text


async def test_earlier_tests_left_nothing(db_session: AsyncSession) -> None:
    assert await count(db_session, Customer) == 0
    assert await count(db_session, Product) == 0


async def test_a_statement_time_out_is_503(
    db_client: Client, db_session: AsyncSession, db_faults: DatabaseFaults
) -> None:
    db_faults.time_out_next_statement()
    response = await db_client.get("/api/v1/customers/")
    assert response.status_code == 503, response.text
    assert "retry-after" in response.headers
    # the request's savepoint was rolled back: the test's transaction goes on
    again = await db_client.post(
        "/api/v1/customers/", json={"name": "Ada", "email": "ada@example.com"}
    )
    assert again.status_code == 201, again.text
    assert await count(db_session, Customer) == 1


async def test_a_lost_connection_is_503(db_client: Client, db_faults: DatabaseFaults) -> None:
    await db_faults.kill_connection()
    response = await db_client.get("/api/v1/customers/")
    assert response.status_code == 503, response.text
    assert "retry-after" in response.headers
