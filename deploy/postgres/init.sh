#!/bin/sh
# PostgreSQL in docker-compose, first start of the volume only (docker-entrypoint-initdb.d):
# the work orders' roles, neither a superuser —
#   lifeline_orders  owns the database `lifeline` (the orders service makes its tables);
#   lifeline_reader  Grafana's data source: SELECT on the orders, their history and the
#                    refused events only (the orders service grants it at every start;
#                    not the uploads, not the messages, whose links are capabilities).
# Passwords come from the environment, as psql variables (never in a command line).
set -eu
. /etc/lifeline/check-secret.sh
who=postgres
check_secret POSTGRES_ORDERS_PASSWORD "${POSTGRES_ORDERS_PASSWORD:-}"
check_secret POSTGRES_READER_PASSWORD "${POSTGRES_READER_PASSWORD:-}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v orders_pw="$POSTGRES_ORDERS_PASSWORD" -v reader_pw="$POSTGRES_READER_PASSWORD" <<'SQL'
CREATE ROLE lifeline_orders LOGIN PASSWORD :'orders_pw';
CREATE ROLE lifeline_reader LOGIN PASSWORD :'reader_pw';
CREATE DATABASE lifeline OWNER lifeline_orders;
REVOKE ALL ON DATABASE lifeline FROM PUBLIC;
GRANT CONNECT ON DATABASE lifeline TO lifeline_reader;
SQL
