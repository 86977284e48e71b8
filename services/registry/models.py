"""Registry metadata tables (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class AdapterRow(Base):
    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("tenant", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    versions: Mapped[list[VersionRow]] = relationship(
        back_populates="adapter", cascade="all, delete-orphan", order_by="VersionRow.version"
    )
    aliases: Mapped[list[AliasRow]] = relationship(
        back_populates="adapter", cascade="all, delete-orphan"
    )


class VersionRow(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("adapter_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    peft_type: Mapped[str] = mapped_column(String(32))
    base_model: Mapped[str] = mapped_column(String(512), index=True)
    peft_config: Mapped[dict] = mapped_column(JSON)
    lineage: Mapped[dict] = mapped_column(JSON)
    metrics: Mapped[dict] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    adapter: Mapped[AdapterRow] = relationship(back_populates="versions")
    files: Mapped[list[FileRow]] = relationship(
        back_populates="version", cascade="all, delete-orphan", order_by="FileRow.path"
    )


class FileRow(Base):
    __tablename__ = "files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[VersionRow] = relationship(back_populates="files")


class AliasRow(Base):
    """An alias resolves to `version`, or to `staged_version` once `effective_at` has passed."""

    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("adapter_id", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(63))
    version: Mapped[int] = mapped_column(Integer)
    staged_version: Mapped[int] = mapped_column(Integer, default=0)
    effective_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    adapter: Mapped[AdapterRow] = relationship(back_populates="aliases")


class EventRow(Base):
    """Append-only log behind WatchAdapters; shared by replicas through the database."""

    __tablename__ = "events"

    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    alias: Mapped[str] = mapped_column(String(63), default="")
    previous_version: Mapped[int] = mapped_column(Integer, default=0)
    effective_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
