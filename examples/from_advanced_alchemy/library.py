"""A small library API written the way advanced-alchemy's own Litestar examples are:
models on its audit bases, a service behind ``providers.create_service_dependencies``
(filters, search, limit/offset pagination, ``to_schema``), a repository-only route with
an ``SQLAlchemyDTO``, and the app's config object at module level.

``create_app(url, plugin="bento")`` runs it on ``DatabasePlugin(alchemy_config)``;
``plugin="advanced-alchemy"`` on ``SQLAlchemyPlugin(config=alchemy_config)``. That one
line is the whole port. ``python -m uvicorn --factory
examples.from_advanced_alchemy.library:app_from_env`` serves it (``DB_URL``).
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Literal, TypeAlias
from uuid import UUID

import msgspec
from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemyDTO,
    SQLAlchemyDTOConfig,
    SQLAlchemyPlugin,
    base,
    providers,
    repository,
    service,
)
from litestar import Controller, Litestar, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from sqlalchemy import ForeignKey, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column, relationship

from litestar_bento_db import DatabasePlugin


class Writer(base.UUIDBase):
    __tablename__ = "bento_aa_writer"
    name: Mapped[str] = mapped_column(String(100))
    born: Mapped[datetime.date | None]
    books: Mapped[list[Volume]] = relationship(back_populates="writer", lazy="selectin")


class Volume(base.UUIDAuditBase):
    __tablename__ = "bento_aa_volume"
    title: Mapped[str] = mapped_column(String(200))
    writer_id: Mapped[UUID] = mapped_column(ForeignKey("bento_aa_writer.id"))
    writer: Mapped[Writer] = relationship(back_populates="books", lazy="joined")


class WriterOut(msgspec.Struct):
    id: UUID
    name: str
    born: datetime.date | None = None


class WriterIn(msgspec.Struct):
    name: str
    born: datetime.date | None = None


class WriterChange(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    born: datetime.date | None = None


class WriterService(service.SQLAlchemyAsyncRepositoryService[Writer]):
    """Writers, through advanced-alchemy's service layer."""

    class Repo(repository.SQLAlchemyAsyncRepository[Writer]):
        model_type = Writer

    repository_type = Repo


Writers: TypeAlias = NamedDependency[WriterService]


class WriterController(Controller):
    """Writer CRUD on the service."""

    path = "/writers"
    dependencies = providers.create_service_dependencies(
        WriterService,
        "writers",
        load=[Writer.books],
        filters={
            "pagination_type": "limit_offset",
            "id_filter": UUID,
            "search": "name",
            "search_ignore_case": True,
            "sort_field": "name",
            "sort_order": "asc",
        },
    )

    @get()
    async def list_writers(
        self,
        writers: Writers,
        filters: NamedDependency[list[Any]],  # advanced-alchemy filter objects
    ) -> service.OffsetPagination[WriterOut]:
        found, total = await writers.get_many_and_count(*filters)
        return writers.to_schema(found, total, filters=filters, schema_type=WriterOut)

    @post()
    async def add_writer(self, writers: Writers, data: JSONBody[WriterIn]) -> WriterOut:
        return writers.to_schema(await writers.create(data), schema_type=WriterOut)

    @get("/{writer_id:uuid}")
    async def get_writer(self, writers: Writers, writer_id: FromPath[UUID]) -> WriterOut:
        return writers.to_schema(await writers.get(writer_id), schema_type=WriterOut)

    @patch("/{writer_id:uuid}")
    async def change_writer(
        self, writers: Writers, data: JSONBody[WriterChange], writer_id: FromPath[UUID]
    ) -> WriterOut:
        changed = await writers.update(msgspec.to_builtins(data), item_id=writer_id)
        return writers.to_schema(changed, schema_type=WriterOut)

    @delete("/{writer_id:uuid}")
    async def remove_writer(self, writers: Writers, writer_id: FromPath[UUID]) -> None:
        await writers.delete(writer_id)


class VolumeRepository(repository.SQLAlchemyAsyncRepository[Volume]):
    model_type = Volume


Volumes: TypeAlias = NamedDependency[VolumeRepository]


async def provide_volumes(db_session: NamedDependency[AsyncSession]) -> VolumeRepository:
    return VolumeRepository(session=db_session)


class VolumeIn(SQLAlchemyDTO[Volume]):
    config = SQLAlchemyDTOConfig(include={"title", "writer_id"})


class VolumeOut(SQLAlchemyDTO[Volume]):
    config = SQLAlchemyDTOConfig(exclude={"writer", "created_at", "updated_at"})


class VolumeController(Controller):
    """Volumes on a repository alone, in and out through DTOs."""

    path = "/volumes"
    dependencies = {"volumes": Provide(provide_volumes)}  # noqa: RUF012

    @post(dto=VolumeIn, return_dto=VolumeOut)
    async def add_volume(self, volumes: Volumes, data: JSONBody[Volume]) -> Volume:
        return await volumes.add(data)

    @get(return_dto=VolumeOut)
    async def list_volumes(self, volumes: Volumes) -> list[Volume]:
        return list(await volumes.get_many(order_by=(Volume.title, False)))


def alchemy_config_for(url: str) -> SQLAlchemyAsyncConfig:
    """The app's config, as advanced-alchemy's examples write it."""
    return SQLAlchemyAsyncConfig(
        connection_string=url,
        before_send_handler="autocommit",
        session_config=AsyncSessionConfig(expire_on_commit=False),
        create_all=True,
    )


def create_app(url: str, plugin: Literal["bento", "advanced-alchemy"] = "bento") -> Litestar:
    """The app on our plugin, or on advanced-alchemy's: the one line that differs."""
    alchemy_config = alchemy_config_for(url)
    if plugin == "bento":
        chosen: object = DatabasePlugin(alchemy_config)
    else:
        chosen = SQLAlchemyPlugin(config=alchemy_config)
    return Litestar([WriterController, VolumeController], plugins=[chosen])  # type: ignore[list-item]


def app_from_env() -> Litestar:
    """The app on our plugin, its database from ``DB_URL``."""
    return create_app(os.environ["DB_URL"])
