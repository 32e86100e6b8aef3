-- envrun's own role and database on the shared PostgreSQL, made unless they exist (psql runs this file:
-- the PostgreSQL image at its first start, test/cluster/harness.ts at every start of the test cluster). The
-- password also stands in docker-compose.yml's DATABASE_URL: change both for anything but a trial.
SELECT 'CREATE ROLE envrun LOGIN PASSWORD ''change-me-too'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'envrun')\gexec
SELECT 'CREATE DATABASE envrun OWNER envrun'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'envrun')\gexec
