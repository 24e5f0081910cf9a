"""The ``supportflow`` command: schema migration and the worker process.

::

    supportflow migrate postgresql+psycopg://user@host/db   # create or upgrade the schema
    supportflow migrate desk.db                              # SQLite migrates on open too
    supportflow worker --store desk.db [--desk myapp.support:make_desk]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import cast

from supportflow.desk import Desk
from supportflow.errors import SupportflowError, ValidationError
from supportflow.storage import Storage, open_store
from supportflow.worker import Worker

__all__ = ["main"]


def _desk_factory(spec: str | None) -> Callable[[Storage], Desk]:
    if spec is None:
        return lambda store: Desk(store=store)
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValidationError("--desk", spec, "'module:callable' taking a store")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name != missing and not module_name.startswith(missing + "."):
            raise  # the module exists; something it imports does not
        raise ValidationError(
            "--desk", spec, f"an importable module (no module {missing!r}; is it on PYTHONPATH?)"
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValidationError("--desk", spec, f"a callable named {attribute!r} in {module_name}")
    return cast(Callable[[Storage], Desk], factory)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``supportflow`` command."""
    parser = argparse.ArgumentParser(prog="supportflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="create or upgrade a store's schema")
    migrate.add_argument("store", help="a SQLAlchemy URL, or a SQLite file path")
    worker = commands.add_parser("worker", help="fire due timers and deliver notifications")
    worker.add_argument("--store", required=True, help="a SQLAlchemy URL or a SQLite path")
    worker.add_argument("--desk", help="module:callable building the Desk from a store")
    worker.add_argument("--batch-size", type=int, default=100)
    worker.add_argument("--max-sleep", type=float, default=5.0, help="seconds")
    worker.add_argument("--max-passes", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.command == "migrate":
            if "://" in args.store:
                from supportflow.storage.sql import migrate as migrate_sql

                version = migrate_sql(args.store)
            else:
                from supportflow.storage.sqlite import SqliteStore

                sqlite_store = SqliteStore(args.store)  # migrates on open
                version = sqlite_store.schema_version()
                sqlite_store.close()
            print(f"schema at version {version}")
            return 0
        if not math.isfinite(args.max_sleep) or not 0 < args.max_sleep <= 31_536_000:
            raise ValidationError(
                "--max-sleep", args.max_sleep, "seconds, more than 0, at most a year"
            )
        if args.max_passes is not None and args.max_passes < 1:
            raise ValidationError("--max-passes", args.max_passes, "a whole number, at least 1")
        factory = _desk_factory(args.desk)
        store = open_store(args.store)
        try:
            worker_ = Worker(
                factory(store),
                batch_size=args.batch_size,
                max_sleep=timedelta(seconds=args.max_sleep),
            )
            passes = worker_.run(max_passes=args.max_passes)
        finally:
            store.close()  # connections go back before the process ends
        print(f"worker stopped after {passes} pass(es)")
        return 0
    except SupportflowError as error:
        print(f"supportflow: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
