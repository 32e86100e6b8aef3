#!/bin/sh
# Temporal's two databases on PostgreSQL (persistence and visibility), their schema brought up to date.
# Run by docker-compose.yml's temporal-schema job (admin-tools image) and by test/cluster/harness.ts, which the
# cluster test suite runs: the same commands in both places.
#
# Every command is idempotent (create-database accepts an existing database, setup-schema -v 0.0 leaves a
# newer version alone, update-schema applies only the missing versions), so a rerun succeeds and any
# failure is real: it stops the script with the tool's exit code. The versioned schema is the one built
# into temporal-sql-tool (--schema-name), so the tool and its schema are always the same release.
#
# Environment: SQL_HOST, SQL_PORT, SQL_USER, SQL_PASSWORD (read by temporal-sql-tool itself), SQL_PLUGIN
# (default postgres12).
set -eu

: "${SQL_HOST:?SQL_HOST is required}"
: "${SQL_PORT:?SQL_PORT is required}"
: "${SQL_USER:?SQL_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required}"
SQL_PLUGIN="${SQL_PLUGIN:-postgres12}"
export SQL_HOST SQL_PORT SQL_USER SQL_PASSWORD SQL_PLUGIN

for pair in temporal:temporal temporal_visibility:visibility; do
  db="${pair%%:*}"
  schema="postgresql/v12/${pair#*:}"
  echo "temporal-sql-tool: database $db on $SQL_HOST:$SQL_PORT, schema $schema"
  temporal-sql-tool --db "$db" create-database
  temporal-sql-tool --db "$db" setup-schema -v 0.0
  temporal-sql-tool --db "$db" update-schema --schema-name "$schema"
done
echo "temporal-sql-tool: schema up to date"
