"""An order service on litestar-bento-db: customers, products with stock, orders."""
