#!/usr/bin/env bash
# Finds PostgreSQL server binaries (initdb, postgres, pg_ctl, pg_basebackup,
# pg_rewind) or installs them from the OS packages. Prints the bin dir on
# stdout; everything else goes to stderr. Exits non-zero with a message that
# says exactly what is missing and how to install it.
set -euo pipefail

need=(initdb postgres pg_ctl pg_basebackup pg_rewind pg_controldata)

has_all() {
	local dir=$1
	for b in "${need[@]}"; do [ -x "$dir/$b" ] || return 1; done
}

find_bindir() {
	if [ -n "${PGHA_TEST_PGBIN:-}" ]; then
		has_all "$PGHA_TEST_PGBIN" && { echo "$PGHA_TEST_PGBIN"; return 0; }
		echo "ensure-postgres: PGHA_TEST_PGBIN=$PGHA_TEST_PGBIN does not hold all of: ${need[*]}" >&2
		return 2
	fi
	if command -v pg_config >/dev/null 2>&1; then
		local d; d=$(pg_config --bindir 2>/dev/null || true)
		[ -n "$d" ] && has_all "$d" && { echo "$d"; return 0; }
	fi
	local p; p=$(command -v initdb 2>/dev/null || true)
	if [ -n "$p" ]; then
		local d; d=$(dirname "$(readlink -f "$p")")
		has_all "$d" && { echo "$d"; return 0; }
	fi
	local d
	for d in $(ls -d /usr/lib/postgresql/*/bin /usr/pgsql-*/bin /opt/homebrew/opt/postgresql*/bin /usr/local/opt/postgresql*/bin 2>/dev/null | sort -V -r); do
		has_all "$d" && { echo "$d"; return 0; }
	done
	return 1
}

if d=$(find_bindir); then echo "$d"; exit 0; fi
rc=$?
[ $rc -eq 2 ] && exit 2

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-postgres: PostgreSQL server binaries not found; installing them from the OS packages (apt-get install postgresql)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	# The postgresql package pulls in the distribution's server version. Its
	# post-install creates a default cluster that we do not use; stop it so it
	# holds no port.
	apt-get install -y -qq postgresql >&2
	if command -v pg_ctlcluster >/dev/null 2>&1; then
		for c in $(ls /etc/postgresql 2>/dev/null); do
			for n in $(ls /etc/postgresql/"$c" 2>/dev/null); do
				pg_ctlcluster "$c" "$n" stop >&2 2>/dev/null || true
			done
		done
	fi
	if d=$(find_bindir); then echo "$d"; exit 0; fi
fi

cat >&2 <<MSG
ensure-postgres: PostgreSQL server binaries are missing.
  Looked for: ${need[*]}
  Searched: \$PGHA_TEST_PGBIN, pg_config --bindir, PATH, /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin
  Install them, then re-run:
    Debian/Ubuntu: sudo apt-get install postgresql
    Fedora/RHEL:   sudo dnf install postgresql-server
    macOS:         brew install postgresql
  or point PGHA_TEST_PGBIN at a directory that holds them.
MSG
exit 1
