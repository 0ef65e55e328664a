"""SQLAlchemy ORM tables. Change them only together with a new Alembic migration.

``tests/unit/test_store.py`` compares this metadata with the migrated schema, so a forgotten
migration fails the tests.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vmferry.model import Host

# Deterministic constraint names, so migrations can refer to (and drop) them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class HostRow(Base):
    """A libvirt host registered with vmferry (see :class:`vmferry.model.Host`)."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    migration_uri: Mapped[str | None] = mapped_column(Text)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @classmethod
    def from_model(cls, host: Host) -> HostRow:
        return cls(name=host.name, uri=host.uri, migration_uri=host.migration_uri)

    def to_model(self) -> Host:
        return Host(name=self.name, uri=self.uri, migration_uri=self.migration_uri)
