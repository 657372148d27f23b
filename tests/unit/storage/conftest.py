from storehelpers import backend, network, open_store, store  # noqa: F401  (fixtures)
