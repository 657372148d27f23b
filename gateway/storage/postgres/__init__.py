"""The PostgreSQL store (psycopg 3) and a disposable local server for tests and demos.

`open_postgres_store(url)` gives a `gateway.storage.Store` on one database; `check_store_url`
says whether a `--store` URL is one this store takes. PostgreSQL's specifics stay in this
package (the schema's reasons: schema.py; COPY, partitions, reconnection: ops.py); the SQL
both stores share is gateway/storage/sql/, spoken here through dialect.py.
"""

from .ops import StoreUnavailable
from .store import PostgresStore, open_postgres_store
from .url import BadStoreURL, check_store_url, redact

__all__ = ["BadStoreURL", "PostgresStore", "StoreUnavailable", "check_store_url",
           "open_postgres_store", "redact"]
