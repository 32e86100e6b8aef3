-- envrun's own database and role on the shared PostgreSQL. The password also stands in docker-compose.yml's
-- DATABASE_URL: change both for anything but a trial.
CREATE ROLE envrun LOGIN PASSWORD 'change-me-too';
CREATE DATABASE envrun OWNER envrun;
