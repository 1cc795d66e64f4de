#!/usr/bin/env bash
# fuzz.sh runs every Fuzz target of the module, one after the other, for
# FUZZTIME each, prints a summary table and exits 1 if any target found a
# failing input (or did not build/run).
#
# Environment:
#   FUZZTIME      how long each target runs (go test -fuzztime), default 1m
#   GO            the go command, default go
#   FUZZPKGS      packages to search for targets, default ./...
#   FUZZMATCH     only run targets whose name matches this extended regexp
#   FUZZPARALLEL  go test -parallel for the fuzz workers (default: GOMAXPROCS)
#
# A failing input is written by the go tool to the package's
# testdata/fuzz/<Target>/ directory; the summary prints its path. Fix the
# parser, then commit that file: from then on `go test` (and make test)
# replays it as part of the seed corpus.
set -u -o pipefail

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-1m}
FUZZPKGS=${FUZZPKGS:-./...}
FUZZMATCH=${FUZZMATCH:-.}

cd "$(dirname "$0")/.." || exit 2

logdir=$(mktemp -d "${TMPDIR:-/tmp}/pgha-fuzz.XXXXXX") || exit 2
parallel=()
if [ -n "${FUZZPARALLEL:-}" ]; then
	parallel=(-parallel "$FUZZPARALLEL")
fi

# Discover: every package, every test function named Fuzz*.
pkgs=$($GO list $FUZZPKGS) || { echo "fuzz.sh: $GO list $FUZZPKGS failed" >&2; exit 2; }
targets=()
for pkg in $pkgs; do
	dir=$($GO list -f '{{.Dir}}' "$pkg") || exit 2
	# Only packages with test files can hold fuzz targets.
	if ! ls "$dir"/*_test.go >/dev/null 2>&1; then
		continue
	fi
	if ! grep -lq '^func Fuzz' "$dir"/*_test.go; then
		continue
	fi
	if ! names=$($GO test -list '^Fuzz' "$pkg" 2>&1); then
		echo "fuzz.sh: listing the fuzz targets of $pkg failed:" >&2
		echo "$names" >&2
		exit 2
	fi
	for n in $(printf '%s\n' "$names" | grep -E '^Fuzz[A-Za-z0-9_]*$' | grep -E -- "$FUZZMATCH"); do
		targets+=("$pkg $n")
	done
done
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz.sh: no Fuzz targets found in $FUZZPKGS matching $FUZZMATCH" >&2
	exit 2
fi
echo "fuzz.sh: ${#targets[@]} targets, $FUZZTIME each; logs in $logdir"

rows=()
failed=0
for t in "${targets[@]}"; do
	pkg=${t% *}
	name=${t#* }
	log="$logdir/$(echo "$pkg" | tr '/' '_').$name.log"
	echo "=== $pkg $name"
	start=$(date +%s)
	$GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "${parallel[@]}" "$pkg" >"$log" 2>&1
	rc=$?
	took=$(( $(date +%s) - start ))
	# The last progress line: "fuzz: elapsed: 1m0s, execs: 123456 (2057/sec), new interesting: 3 (total: 40)".
	execs=$(grep -oE 'execs: [0-9]+' "$log" | tail -1 | awk '{print $2}')
	newint=$(grep -oE 'new interesting: [0-9]+' "$log" | tail -1 | awk '{print $3}')
	if [ $rc -eq 0 ]; then
		result=ok
	elif ! grep -q 'Failing input written' "$log" && ! grep -q -- '--- FAIL: .*/' "$log" &&
		grep -qx '    context deadline exceeded' "$log"; then
		# Go's fuzz coordinator can report its own -fuzztime deadline as a
		# failure, with no input (go.dev/issue/75804, fixed in Go 1.27).
		result="ok (go.dev/issue/75804: fuzztime deadline reported as failure, no input)"
	else
		failed=1
		dir=$($GO list -f '{{.Dir}}' "$pkg")
		input=$(grep -oE 'Failing input written to [^ ]+' "$log" | tail -1 | awk '{print $5}')
		if [ -n "$input" ]; then
			result="FINDING: $(realpath --relative-to="$PWD" "$dir/$input" 2>/dev/null || echo "$dir/$input")"
		else
			result="FAIL (no input written; see $log)"
		fi
		sed -n '1,60p' "$log" | sed 's/^/    /'
	fi
	rows+=("$(printf '%-40s %-28s %12s %6s %6ss  %s' "$pkg" "$name" "${execs:--}" "${newint:--}" "$took" "$result")")
done

echo
printf '%-40s %-28s %12s %6s %7s  %s\n' PACKAGE TARGET EXECS NEW TIME RESULT
for r in "${rows[@]}"; do
	echo "$r"
done
if [ $failed -ne 0 ]; then
	echo
	echo "fuzz.sh: at least one target failed. A FINDING path is the failing input the go tool"
	echo "wrote: reproduce it with go test -run '<Target>/<file>' <package>, fix the parser,"
	echo "and commit the file so the seed corpus keeps it (make test replays it)."
	exit 1
fi
echo
echo "fuzz.sh: no findings (full logs in $logdir)"
