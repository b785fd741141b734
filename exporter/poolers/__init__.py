"""Connection poolers in front of the targets: PgBouncer's admin console (`poolers:`)."""
