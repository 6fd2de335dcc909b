"""Per-user allowed IP ranges (CIDR) for API keys."""
from peewee import TextField


def up(migrator, db):
    if "api_ip_ranges" not in {c.name for c in db.get_columns("user")}:
        migrator.migrate(migrator.add_column("user", "api_ip_ranges", TextField(default="[]")))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("user", "api_ip_ranges"))
