"""The usage guide's "5-minute example", on every backend."""

from __future__ import annotations

from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from litestar_bento_db import (
    DatabaseConfig,
    cleanup_database,
    create_async_engine_from_config,
    create_async_session_factory,
    create_engine_and_session_factory,
    drop_all_tables,
    init_database,
)


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "bento_qs_customer"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


async def test_five_minute_example(db_url: str) -> None:
    config = DatabaseConfig(url=db_url, pool_size=10, echo=False)
    engine = create_async_engine_from_config(config)
    session_factory = create_async_session_factory(engine)
    await drop_all_tables(engine, Base)
    await init_database(engine, Base)

    async with session_factory() as session, session.begin():
        session.add_all([Customer(name="Alice"), Customer(name="Bob")])

    async with session_factory() as session, session.begin():
        result = await session.execute(select(Customer).order_by(Customer.name))
        names = [customer.name for customer in result.scalars().all()]
    assert names == ["Alice", "Bob"]

    # expire_on_commit=False: objects stay readable after the commit
    async with session_factory() as session:
        customer = Customer(name="Carol")
        session.add(customer)
        await session.commit()
        assert customer.name == "Carol"
        assert customer.id is not None

    await drop_all_tables(engine, Base)
    await cleanup_database(engine)


async def test_engine_and_session_factory_in_one_call(db_url: str) -> None:
    engine, session_factory = create_engine_and_session_factory(DatabaseConfig(url=db_url))
    assert session_factory.kw["bind"] is engine
    assert session_factory.kw["expire_on_commit"] is False
    assert session_factory.kw["autoflush"] is True
    await engine.dispose()
