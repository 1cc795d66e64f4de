// Package testutil starts real servers for pgha's tests: embedded etcd (one
// member or a three-member cluster with per-member stop and restart), a TCP
// fault proxy (pass, blackhole, reset, latency), a network-namespace test
// bed whose links drop packets ([StartNetbed]) and PostgreSQL servers, plus
// polling helpers.
//
// Every helper takes a [TB], calls t.Helper and registers its cleanup with
// t.Cleanup, so no process, port or directory outlives its test. Helpers fail
// the test with what they did, with which inputs, what came back and what was
// expected.
//
// # Environment
//
//   - PGHA_TEST_PGBIN: directory holding the PostgreSQL server binaries
//     (initdb, postgres, pg_ctl, pg_basebackup, pg_rewind). Default: found
//     by the replicate package's search.
//   - CI: when "true", a missing PostgreSQL, or a [Netbed] that cannot be
//     built (no root, CAP_NET_ADMIN, ip or iptables), is a test failure;
//     otherwise the test is skipped with the command that installs it.
//
// # Waiting
//
// Tests never sleep to synchronise: they poll a condition with [Eventually]
// or [Poll], which report the last error seen when the deadline passes.
package testutil

import "testing"

// TB is the subset of testing.TB the helpers use. *testing.T and *testing.B
// satisfy it.
type TB = testing.TB
