"""Tables of the order service (advanced-alchemy's BigIntBase: an integer ``id``)."""

from __future__ import annotations

from advanced_alchemy.base import BigIntBase
from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship


class Customer(BigIntBase):
    __tablename__ = "shop_customer"
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200), unique=True)


class Product(BigIntBase):
    __tablename__ = "shop_product"
    __table_args__ = (CheckConstraint("stock >= 0", name="ck_shop_product_stock"),)
    sku: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    price_cents: Mapped[int]
    stock: Mapped[int]


class Order(BigIntBase):
    __tablename__ = "shop_order"
    customer_id: Mapped[int] = mapped_column(ForeignKey("shop_customer.id"))
    total_cents: Mapped[int]
    items: Mapped[list[OrderItem]] = relationship(lazy="selectin", cascade="all, delete-orphan")


class OrderItem(BigIntBase):
    __tablename__ = "shop_order_item"
    order_id: Mapped[int] = mapped_column(ForeignKey("shop_order.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("shop_product.id"))
    quantity: Mapped[int]
    price_cents: Mapped[int]
