"""A cluster of gateway nodes on one PostgreSQL: membership and heartbeats (`nodes`), the
processes of `fleet-gateway serve --workers N` (`workers`)."""
