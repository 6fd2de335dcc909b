"""Schema migrations, applied in order by `switchdesk init` (playhouse.migrations runner).

Rule: a migration alters tables that existed before it (add/drop/rename a
column, add an index); brand-new tables are created from the models by
`engine.store.schema.init_schema` after the migrations ran. A fresh database gets
every table from the models and all migrations recorded as applied.
"""
