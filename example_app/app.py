"""The Litestar app: routes, plugin, OpenAPI at /api/v1/docs, health at /api/v1/common/health."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from advanced_alchemy.base import BigIntBase
from advanced_alchemy.extensions.litestar import AlembicAsyncConfig
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from litestar import Controller, Litestar, Request, Response, Router, get, post
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, JSONBody

from example_app.models import Customer, Order, Product
from example_app.schemas import CustomerIn, CustomerOut, OrderIn, OrderOut, ProductIn, ProductOut
from example_app.use_cases import CreateOrderUseCase, OrderRejected, order_out
from litestar_bento_db import (
    DatabaseConfig,
    DatabasePlugin,
    DbSession,
    DbSessionFactory,
    HealthConfig,
)

DEFAULT_URL = "sqlite+aiosqlite:///example_app.db"
#: the Alembic history (``litestar --app example_app.app:app database ...``)
MIGRATIONS = Path(__file__).parent / "migrations"


class CustomerRepository(SQLAlchemyAsyncRepository[Customer]):
    model_type = Customer


class ProductRepository(SQLAlchemyAsyncRepository[Product]):
    model_type = Product


def customer_out(customer: Customer) -> CustomerOut:
    return CustomerOut(customer.id, customer.name, customer.email)


def product_out(product: Product) -> ProductOut:
    return ProductOut(product.id, product.sku, product.name, product.price_cents, product.stock)


class CustomerController(Controller):
    path = "/customers"
    tags = ("customers",)

    @post("/")
    async def create(self, db_session: DbSession, data: JSONBody[CustomerIn]) -> CustomerOut:
        repository = CustomerRepository(session=db_session)
        return customer_out(await repository.add(Customer(name=data.name, email=data.email)))

    @get("/")
    async def list_all(self, db_session: DbSession) -> list[CustomerOut]:
        customers = await CustomerRepository(session=db_session).get_many(
            order_by=Customer.id.asc()
        )
        return [customer_out(c) for c in customers]

    @get("/{customer_id:int}")
    async def get_one(self, db_session: DbSession, customer_id: FromPath[int]) -> CustomerOut:
        return customer_out(await CustomerRepository(session=db_session).get(customer_id))


class ProductController(Controller):
    path = "/products"
    tags = ("products",)

    @post("/")
    async def create(self, db_session: DbSession, data: JSONBody[ProductIn]) -> ProductOut:
        product = Product(
            sku=data.sku, name=data.name, price_cents=data.price_cents, stock=data.stock
        )
        return product_out(await ProductRepository(session=db_session).add(product))

    @get("/")
    async def list_all(self, db_session: DbSession) -> list[ProductOut]:
        products = await ProductRepository(session=db_session).get_many(order_by=Product.id.asc())
        return [product_out(p) for p in products]

    @get("/{product_id:int}")
    async def get_one(self, db_session: DbSession, product_id: FromPath[int]) -> ProductOut:
        return product_out(await ProductRepository(session=db_session).get(product_id))


class OrderController(Controller):
    path = "/orders"
    tags = ("orders",)

    @post("/")
    async def create(
        self, db_session_factory: DbSessionFactory, data: JSONBody[OrderIn]
    ) -> OrderOut:
        """Place an order: one transaction, retried whole on deadlocks and the like."""
        return await CreateOrderUseCase(db_session_factory).execute(data)

    @get("/{order_id:int}")
    async def get_one(self, db_session: DbSession, order_id: FromPath[int]) -> OrderOut:
        order = await db_session.get(Order, order_id)
        if order is None:
            raise NotFoundException(f"order {order_id} does not exist")
        return order_out(order)


def rejected(_: Request[Any, Any, Any], exc: OrderRejected) -> Response[dict[str, object]]:
    return Response(
        {"status_code": exc.status_code, "detail": exc.detail}, status_code=exc.status_code
    )


def create_app(config: DatabaseConfig | None = None, *, migrate: bool = False) -> Litestar:
    """Build the app; the database comes from ``DB_URL`` (SQLite file by default).

    ``migrate``: the tables come from the Alembic history in ``migrations/``, upgraded at
    startup under the database lock, in place of creating them from the models.
    """
    if config is None:
        config = DatabaseConfig(
            url=os.environ.get("DB_URL") or os.environ.get("DATABASE_URL") or DEFAULT_URL
        )
    plugin = DatabasePlugin(
        config,
        health=HealthConfig(path="/api/v1/common/health"),
        metrics_path="/metrics",  # Prometheus text (OpenTelemetry too, when installed)
        metadata=None if migrate else BigIntBase.metadata,
        migrate_on_startup=migrate,
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS), version_table_name="shop_alembic_version"
        ),
    )
    api = Router(
        path="/api/v1", route_handlers=[CustomerController, ProductController, OrderController]
    )
    return Litestar(
        route_handlers=[api],
        plugins=[plugin],
        # database errors (a duplicate email: 409 naming the constraint) are the plugin's
        exception_handlers={OrderRejected: rejected},
        openapi_config=OpenAPIConfig(title="Bento orders", version="1.0.0", path="/api/v1/docs"),
    )


app = create_app(migrate=os.environ.get("EXAMPLE_APP_MIGRATE") == "1")
