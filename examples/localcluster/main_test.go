package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := testutil.CheckLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestDemoScripted runs the demo end to end in scripted mode, synchronous
// replication on, and checks its summary: every failure was recovered from,
// the primary changed where a failover was due, writes resumed, and no
// acknowledged row was lost.
func TestDemoScripted(t *testing.T) {
	testutil.PostgresBinDir(t) // skips (or fails under CI) without PostgreSQL
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	var out bytes.Buffer
	code := run(ctx, []string{"-scripted", "-sync", "on", "-ttl", "2s"}, strings.NewReader(""), &out)
	t.Logf("demo output:\n%s", out.String())
	if code != 0 {
		t.Fatalf("demo exited %d; want 0", code)
	}
	summary := out.String()[strings.Index(out.String(), "Summary"):]
	row := regexp.MustCompile(`(?m)^  (.+?)\s+(n\d)→(n\d)\s+(\S+)\s+(\d+)\s+(true|false)$`)
	rows := row.FindAllStringSubmatch(summary, -1)
	if len(rows) != 4 {
		t.Fatalf("summary has %d failure rows; want 4:\n%s", len(rows), summary)
	}
	for _, r := range rows {
		name, before, after, lost, recovered := strings.TrimSpace(r[1]), r[2], r[3], r[5], r[6]
		if recovered != "true" {
			t.Errorf("%s: not recovered", name)
		}
		if lost != "0" {
			t.Errorf("%s: %s acknowledged rows lost in synchronous mode", name, lost)
		}
		if before == after {
			t.Errorf("%s: primary stayed %s; want a failover", name, before)
		}
	}
	if !strings.Contains(summary, "RESULT: ok") {
		t.Errorf("summary does not say RESULT: ok")
	}
}

func TestDemoBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-nodes", "9"}, {"-sync", "maybe"}, {"-nope"}} {
		var out bytes.Buffer
		if code := run(t.Context(), args, strings.NewReader(""), &out); code != 2 {
			t.Errorf("run(%v) = %d; want 2 (usage error); output %q", args, code, out.String())
		}
	}
}
