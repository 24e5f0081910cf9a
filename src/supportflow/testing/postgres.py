"""A private PostgreSQL schema for a test or a benchmark (needs the ``sql`` extra).

>>> with private_schema("postgresql+psycopg://postgres@127.0.0.1/supportflow") as url:
...     store = SqlStore(url)                                   # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["private_schema"]


@contextmanager
def private_schema(base_url: str, prefix: str = "sf") -> Iterator[str]:
    """A URL to ``base_url``'s database whose connections use a fresh schema, migrated to the
    current version; the schema is dropped afterwards. Runs side by side never see each
    other's rows."""
    import sqlalchemy as sa

    from supportflow.storage.sql import make_engine, migrate

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base_url)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    try:
        migrate(rendered)
        yield rendered
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
