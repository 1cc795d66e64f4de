// Package e2e holds end-to-end tests that run pgha's programs as separate
// processes (the agent), so that a test can freeze a manager with SIGSTOP
// while its PostgreSQL keeps running. It has no non-test code.
package e2e
