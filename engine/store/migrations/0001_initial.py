"""The first released schema: created from the models by engine.store.schema on a fresh database."""


def up(migrator, db):
    # Fresh databases are built from the models and this migration is only recorded.
    pass
