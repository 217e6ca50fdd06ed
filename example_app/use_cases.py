"""``CreateOrderUseCase``: one transaction, retried whole on transient database errors."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from example_app.models import Customer, Order, OrderItem, Product
from example_app.schemas import OrderIn, OrderItemOut, OrderOut
from litestar_bento_db.resilience import RetryConfig, retry_on_db_error


class OrderRejected(Exception):
    """The order cannot be placed; ``status_code`` says why (422 unknown, 409 stock)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def order_out(order: Order) -> OrderOut:
    items = [OrderItemOut(i.product_id, i.quantity, i.price_cents) for i in order.items]
    return OrderOut(order.id, order.customer_id, order.total_cents, items)


class CreateOrderUseCase:
    """Validate the customer, take the stock, write the order: all or nothing.

    The unit of work opens its own session and transaction, so a deadlock or a
    serialization failure re-runs all of it; ``OrderRejected`` is never retried.
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        retry_config: RetryConfig | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.retry_config = retry_config or RetryConfig(
            max_attempts=5, base_delay=0.05, max_delay=1.0
        )

    async def execute(self, command: OrderIn) -> OrderOut:
        """Place the order; raises ``OrderRejected`` for bad input or missing stock."""
        return await retry_on_db_error(self._create, command, config=self.retry_config)

    async def _create(self, command: OrderIn) -> OrderOut:
        wanted = Counter[int]()
        for item in command.items:
            wanted[item.product_id] += item.quantity
        async with self.session_factory() as session, session.begin():
            if await session.get(Customer, command.customer_id) is None:
                raise OrderRejected(422, f"customer {command.customer_id} does not exist")
            prices: dict[int, int] = {}
            for product_id in sorted(wanted):  # one lock order for every order: no deadlock
                quantity = wanted[product_id]
                taken = await session.execute(
                    update(Product)
                    .where(Product.id == product_id, Product.stock >= quantity)
                    .values(stock=Product.stock - quantity)
                )
                price = await session.scalar(
                    select(Product.price_cents).where(Product.id == product_id)
                )
                if price is None:
                    raise OrderRejected(422, f"product {product_id} does not exist")
                if taken.rowcount != 1:  # type: ignore[attr-defined]
                    raise OrderRejected(409, f"insufficient stock for product {product_id}")
                prices[product_id] = price
            order = Order(
                customer_id=command.customer_id,
                total_cents=sum(prices[p] * q for p, q in wanted.items()),
                items=[
                    OrderItem(product_id=p, quantity=q, price_cents=prices[p])
                    for p, q in sorted(wanted.items())
                ],
            )
            session.add(order)
            await session.flush()
            return order_out(order)
