"""The PostgreSQL store (psycopg 3) and a disposable local server for tests and demos."""
