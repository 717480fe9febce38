#!/usr/bin/env bash
# What the test suite needs beyond Python packages: Chromium for the dashboard tests and a
# running PostgreSQL 15 for the PostgreSQL store. Installs them where it can (root, Debian),
# and otherwise says what will be skipped. Writes ./.test-env with the variables the tests read.
set -u
cd "$(dirname "$0")/.."
: > .test-env

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_install() {
  if can_install; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; }
  else
    return 1
  fi
}

if ! command -v chromium >/dev/null; then
  echo "test-services: installing Debian's chromium for the dashboard tests"
  apt_install chromium || echo "test-services: no chromium and cannot install it: browser tests will be skipped"
fi

if [ -x .ci/postgres.sh ] || [ -f .ci/postgres.sh ]; then
  if url=$(bash .ci/postgres.sh 2>/dev/null | tail -n 1) && [ -n "$url" ]; then
    echo "export OPSTREAM_TEST_POSTGRES_URL='$url'" >> .test-env
    echo "test-services: PostgreSQL at $url"
  else
    echo "test-services: no PostgreSQL available: PostgreSQL tests will be skipped (they fail in CI)"
  fi
fi
exit 0
