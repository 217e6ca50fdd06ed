"""Customers and products.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "shop_customer",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_customer")),
        sa.UniqueConstraint("email", name=op.f("uq_shop_customer_email")),
    )
    op.create_table(
        "shop_product",
        sa.Column("id", ID, nullable=False),
        sa.Column("sku", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("stock", sa.Integer(), nullable=False),
        sa.CheckConstraint("stock >= 0", name=op.f("ck_shop_product_ck_shop_product_stock")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_product")),
        sa.UniqueConstraint("sku", name=op.f("uq_shop_product_sku")),
    )


def downgrade() -> None:
    op.drop_table("shop_product")
    op.drop_table("shop_customer")
