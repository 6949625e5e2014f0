#!/usr/bin/env bash
# Debian packages that tests drive for real (chromium for the UI test). Idempotent and quick when present;
# where they cannot be installed (not root, no apt), the tests that need them skip and say why.
set -uo pipefail
want=(chromium)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "note: cannot install ${missing[*]} (needs root and apt-get); the tests that use them will skip" >&2
  exit 0
fi
echo "installing Debian packages for the tests: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null \
  && apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || echo "note: apt-get could not install ${missing[*]}; the tests that use them will skip" >&2
exit 0
