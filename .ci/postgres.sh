#!/usr/bin/env bash
# Make a PostgreSQL 15 cluster available for opstream's tests, idempotently, and print the
# URL to export as OPSTREAM_TEST_POSTGRES_URL (the only thing written to stdout):
#
#     export OPSTREAM_TEST_POSTGRES_URL="$(.ci/postgres.sh)"
#
# Installs PostgreSQL with apt-get when pg_ctlcluster is missing, creates and starts the
# cluster when needed, and creates a login role and a database it owns (the tests make a
# schema of their own in it per test). Safe to run again and again. Needs root, or
# passwordless sudo. Progress goes to stderr.
#
# Environment (all optional):
#   OPSTREAM_PG_VERSION   major version to use             (default 15)
#   OPSTREAM_PG_CLUSTER   cluster name                     (default main)
#   OPSTREAM_PG_USER      role the tests connect as        (default opstream_test)
#   OPSTREAM_PG_PASSWORD  its password                     (default opstream_test)
#   OPSTREAM_PG_DATABASE  database the tests start from    (default opstream_test)
set -euo pipefail

version="${OPSTREAM_PG_VERSION:-15}"
cluster="${OPSTREAM_PG_CLUSTER:-main}"
user="${OPSTREAM_PG_USER:-opstream_test}"
password="${OPSTREAM_PG_PASSWORD:-opstream_test}"
database="${OPSTREAM_PG_DATABASE:-opstream_test}"

say() { echo "postgres.sh: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        say "need root (or passwordless sudo) to run: $*"
        exit 1
    fi
}

as_postgres() {
    if [ "$(id -un)" = postgres ]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        as_root su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    say "installing PostgreSQL (apt-get install postgresql)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi

if [ ! -d "/usr/lib/postgresql/$version" ]; then
    installed="$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)"
    if [ -z "$installed" ]; then
        say "no PostgreSQL server found under /usr/lib/postgresql"
        exit 1
    fi
    say "PostgreSQL $version is not installed; using $installed"
    version="$installed"
fi

if ! pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c {found = 1} END {exit !found}'; then
    say "creating cluster $version/$cluster"
    as_root pg_createcluster "$version" "$cluster" >&2
fi

port="$(pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c {print $3}')"
status="$(pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c {print $4}')"
if [ "$status" != online ]; then
    say "starting cluster $version/$cluster on port $port"
    as_root pg_ctlcluster "$version" "$cluster" start >&2
fi

for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p "$port"; then
        break
    fi
    sleep 0.5
done
if ! pg_isready -q -h 127.0.0.1 -p "$port"; then
    say "PostgreSQL did not accept connections on 127.0.0.1:$port"
    exit 1
fi

psql_admin() {
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$port" -d postgres "$@"
}

role_exists="$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$user'")"
if [ "$role_exists" != 1 ]; then
    say "creating role $user"
    psql_admin -c "CREATE ROLE \"$user\" LOGIN CREATEDB PASSWORD '$password'" >&2
else
    psql_admin -c "ALTER ROLE \"$user\" LOGIN CREATEDB PASSWORD '$password'" >&2
fi

db_exists="$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")"
if [ "$db_exists" != 1 ]; then
    say "creating database $database"
    psql_admin -c "CREATE DATABASE \"$database\" OWNER \"$user\"" >&2
fi

url="postgresql://$user:$password@127.0.0.1:$port/$database"
say "ready: $url"
echo "$url"
