"""Storage: the database binding (SQLite or PostgreSQL), the peewee models, schema and migrations,
compiled hot-path queries (`fastq`), and change notices (`changes`, with `pgnotify` carrying them
between boxes on PostgreSQL).

Owns every table; knows nothing of the domains above it. May use: peewee, psycopg, `engine.errors`.
Every other room builds on this one, so it imports none of them.
"""
