from storehelpers import network, store  # noqa: F401  (fixtures)
