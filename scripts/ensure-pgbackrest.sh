#!/usr/bin/env bash
# Finds pgBackRest (the pgbackrest program) or installs it from the OS
# packages. Prints its path on stdout; everything else goes to stderr.
# Exits non-zero with a message that says exactly what is missing and how
# to install it. $PGHA_TEST_PGBACKREST, when set, is the only program
# looked at.
set -euo pipefail

find_pgbackrest() {
	if [ -n "${PGHA_TEST_PGBACKREST:-}" ]; then
		[ -x "$PGHA_TEST_PGBACKREST" ] && { echo "$PGHA_TEST_PGBACKREST"; return 0; }
		echo "ensure-pgbackrest: PGHA_TEST_PGBACKREST=$PGHA_TEST_PGBACKREST is not an executable file" >&2
		return 2
	fi
	local p
	p=$(command -v pgbackrest 2>/dev/null || true)
	[ -n "$p" ] && { echo "$p"; return 0; }
	for p in /usr/bin/pgbackrest /usr/local/bin/pgbackrest; do
		[ -x "$p" ] && { echo "$p"; return 0; }
	done
	return 1
}

if p=$(find_pgbackrest); then echo "$p"; exit 0; fi
rc=$?
[ $rc -eq 2 ] && exit 2

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-pgbackrest: pgbackrest not found; installing it from the OS packages (apt-get install pgbackrest)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq pgbackrest >&2
	if p=$(find_pgbackrest); then echo "$p"; exit 0; fi
fi

cat >&2 <<MSG
ensure-pgbackrest: pgBackRest is missing (the pgbackrest program).
  Searched: \$PGHA_TEST_PGBACKREST, PATH, /usr/bin, /usr/local/bin
  Install it, then re-run:
    Debian/Ubuntu: sudo apt-get install pgbackrest
    Fedora/RHEL:   sudo dnf install pgbackrest
    macOS:         brew install pgbackrest
  or point PGHA_TEST_PGBACKREST at the program.
MSG
exit 1
