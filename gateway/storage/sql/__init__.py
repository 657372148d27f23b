"""The SQL both stores share, written once against a small `Dialect` seam (dialect.py).

- data_ops.py, session_ops.py, audit_ops.py: the writer's operations (frozen values with
  `apply(side)`), run on an engine's `WriteSide` (write_side.py: connection, caches, hooks);
- queries.py: the read side, plain functions of a reader's `Dialect`;
- store_base.py: the `Store` methods on top of them, and the writer's construction;
- convert.py: times, state kinds and the network tree.

gateway/storage/sqlite/ and gateway/storage/postgres/ keep what is truly one engine's: the
schema and its migrations, how a batch's readings are written, transactions and failure
handling (SQLite's write lock, WAL and checkpoints; PostgreSQL's COPY, week partitions,
row locks and reconnection), and their dialect.
"""
