"""Request and response bodies (msgspec: malformed input is a 400 before any handler runs)."""

from __future__ import annotations

from typing import Annotated

import msgspec

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class CustomerIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=200, pattern=r"^[^@\s]+@[^@\s]+$")]


class CustomerOut(msgspec.Struct):
    id: int
    name: str
    email: str


class ProductIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    price_cents: Annotated[int, msgspec.Meta(ge=0)]
    stock: Annotated[int, msgspec.Meta(ge=0)]


class ProductOut(msgspec.Struct):
    id: int
    sku: str
    name: str
    price_cents: int
    stock: int


class OrderItemIn(msgspec.Struct, forbid_unknown_fields=True):
    product_id: PositiveInt
    quantity: PositiveInt


class OrderIn(msgspec.Struct, forbid_unknown_fields=True):
    customer_id: PositiveInt
    items: Annotated[list[OrderItemIn], msgspec.Meta(min_length=1, max_length=100)]


class OrderItemOut(msgspec.Struct):
    product_id: int
    quantity: int
    price_cents: int


class OrderOut(msgspec.Struct):
    id: int
    customer_id: int
    total_cents: int
    items: list[OrderItemOut]
