#!/usr/bin/env bash
# PostgreSQL and Redis from Debian's packages, for the cluster try-out and tests/test_distributed.py.
# Idempotent: returns at once when both are present. Needs root and apt-get otherwise; exits 0 with a
# message when it cannot install (the distributed test then skips, naming this script).
set -euo pipefail
have() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && command -v redis-server >/dev/null; }
if have; then exit 0; fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
	echo "install-servers: PostgreSQL/Redis missing and cannot install them here (needs root and apt-get);" \
		"tests/test_distributed.py will skip" >&2
	exit 0
fi
echo "install-servers: apt-get install postgresql redis-server (once)"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq postgresql redis-server >/dev/null; }; then
	echo "install-servers: apt-get could not install postgresql redis-server; tests/test_distributed.py will skip" >&2
	exit 0
fi
have || { echo "install-servers: packages installed but initdb/redis-server not found" >&2; exit 1; }
