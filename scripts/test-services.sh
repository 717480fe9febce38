#!/usr/bin/env bash
# What the test suite needs beyond Python packages: Chromium for the dashboard tests, Node.js
# for the JavaScript unit tests, curl and ss (iproute2) for two end-to-end tests, nginx for
# the tests of deploy/'s proxy configuration, and a
# running PostgreSQL 15 for the PostgreSQL store. Installs them where it can (root, Debian)
# and writes ./.test-env with the variables the tests read (OPSTREAM_TEST_POSTGRES_URL).
#
# A failure while installing stops it, with the failing command's output. What it cannot
# provide (no root, no apt-get) it names: outside CI the tests that need it are skipped; under
# CI (CI set to any value) it exits non-zero, as those tests would fail anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
: > .test-env

say() { echo "test-services: $*"; }
fail() {
  echo "test-services: $*" >&2
  exit 1
}

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

# Runs "$@" with its output kept back; shows it only if the command fails.
quietly() {
  local log status=0
  log="$(mktemp)"
  "$@" >"$log" 2>&1 || status=$?
  if [ "$status" != 0 ]; then
    echo "test-services: failed with status $status: $*" >&2
    cat "$log" >&2
  fi
  rm -f "$log"
  return "$status"
}

apt_install() {
  # Stale package lists are the usual reason a first try fails: refresh them and try again.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 && return 0
  quietly apt-get update -q || return
  quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

chromium="${OPSTREAM_CHROMIUM:-/usr/bin/chromium}"  # what tests/browser/conftest.py drives
has() {
  case "$1" in
    chromium) [ -x "$chromium" ] || command -v "$chromium" >/dev/null ;;
    *) command -v "$1" >/dev/null ;;
  esac
}

# program  Debian package  what needs it
needs=(
  "chromium chromium the dashboard tests (tests/browser)"
  "node nodejs the JavaScript unit tests (tests/js) and the Node worker example (examples/)"
  "curl curl the README walkthrough test (tests/e2e/test_readme.py)"
  "ss iproute2 the stalled-connection test (tests/e2e/test_slow_client.py)"
  "nginx nginx the reverse-proxy tests of deploy/ (tests/deploy)"
  "npm npm the official Durable Streams clients and conformance suite (tests/durable)"
)

packages=()
for need in "${needs[@]}"; do
  read -r program package _ <<<"$need"
  has "$program" || packages+=("$package")
done
if [ "${#packages[@]}" -gt 0 ] && can_install; then
  say "installing ${packages[*]} (apt-get)"
  apt_install "${packages[@]}" || fail "could not install ${packages[*]} (output above)"
fi

missing=()
for need in "${needs[@]}"; do
  read -r program package purpose <<<"$need"
  if ! has "$program"; then
    if [ "$program" = chromium ]; then
      missing+=("Chromium at $chromium, for $purpose: apt-get install -y $package, or set OPSTREAM_CHROMIUM")
    else
      missing+=("$program, for $purpose: apt-get install -y $package")
    fi
  fi
done

# The Durable Streams client and conformance suite, exactly as tests/durable's lock file says.
if has npm && ! quietly npm ci --prefix tests/durable --no-audit --no-fund; then
  missing+=("the npm packages of tests/durable (npm ci failed, output above)")
fi

# PostgreSQL: .ci/postgres.sh installs, creates and starts what is needed, and prints the URL
# (the only thing on its standard output; its progress and errors go to standard error).
# A URL already in the environment is the developer's choice; the tests use it as it is.
pg_log="$(mktemp)"
trap 'rm -f "$pg_log"' EXIT
if [ -n "${OPSTREAM_TEST_POSTGRES_URL:-}" ]; then
  say "PostgreSQL: OPSTREAM_TEST_POSTGRES_URL is set; using it"
elif url="$(bash .ci/postgres.sh 2>"$pg_log")" && [ -n "$url" ]; then
  echo "export OPSTREAM_TEST_POSTGRES_URL='$url'" >> .test-env
  say "PostgreSQL at $url"
else
  echo "test-services: .ci/postgres.sh failed:" >&2
  cat "$pg_log" >&2
  # As root it could have installed and started everything: that is a real error.
  [ "$(id -u)" != 0 ] || fail "no PostgreSQL for the tests (output above)"
  missing+=("PostgreSQL, for tests/postgres and the store contract on PostgreSQL: run .ci/postgres.sh as root, or set OPSTREAM_TEST_POSTGRES_URL")
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ -n "${CI:-}" ]; then
    echo "test-services: under CI (CI=$CI) the suite needs these, and they could not be provided:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
  fi
  say "missing, so the tests that need them will be skipped (under CI they fail):"
  printf '  - %s\n' "${missing[@]}"
fi
