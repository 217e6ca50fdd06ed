"""Orders and their items.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "shop_order",
        sa.Column("id", ID, nullable=False),
        sa.Column("customer_id", ID, nullable=False),
        sa.Column("total_cents", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["shop_customer.id"],
            name=op.f("fk_shop_order_customer_id_shop_customer"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_order")),
    )
    op.create_table(
        "shop_order_item",
        sa.Column("id", ID, nullable=False),
        sa.Column("order_id", ID, nullable=False),
        sa.Column("product_id", ID, nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["shop_order.id"], name=op.f("fk_shop_order_item_order_id_shop_order")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["shop_product.id"],
            name=op.f("fk_shop_order_item_product_id_shop_product"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_order_item")),
    )


def downgrade() -> None:
    op.drop_table("shop_order_item")
    op.drop_table("shop_order")
