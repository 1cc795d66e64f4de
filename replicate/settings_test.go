package replicate_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/testutil"
	"github.com/pgha/pgha/replicate"
)

func TestCheckParameter(t *testing.T) {
	workMem := replicate.Setting{Name: "work_mem", Type: "integer", Unit: "kB", Min: "64", Max: "2147483647"}
	sharedBuffers := replicate.Setting{Name: "shared_buffers", Type: "integer", Unit: "8kB", Min: "16", Max: "1073741823"}
	timeout := replicate.Setting{Name: "statement_timeout", Type: "integer", Unit: "ms", Min: "0", Max: "2147483647"}
	fraction := replicate.Setting{Name: "checkpoint_completion_target", Type: "real", Min: "0", Max: "1"}
	level := replicate.Setting{Name: "wal_level", Type: "enum", Enum: []string{"minimal", "replica", "logical"}}
	flag := replicate.Setting{Name: "hot_standby_feedback", Type: "bool"}
	conns := replicate.Setting{Name: "max_connections", Type: "integer", Min: "1", Max: "262143"}
	for _, tc := range []struct {
		s     replicate.Setting
		value string
		want  string // "" = valid
	}{
		{workMem, "64MB", ""},
		{workMem, "4096", ""},
		{workMem, "1GB", ""},
		{workMem, "32kB", "outside the allowed range 64..2147483647 (in kB)"},
		{workMem, "64mb", `unit "mb" does not fit this setting (its unit is kB; use B, kB, MB, GB or TB)`},
		{workMem, "lots", "want a number"},
		{sharedBuffers, "128MB", ""},
		{sharedBuffers, "100kB", "outside the allowed range"},
		{timeout, "5s", ""},
		{timeout, "2min", ""},
		{timeout, "5MB", `unit "MB" does not fit`},
		{fraction, "0.9", ""},
		{fraction, "1.5", "outside the allowed range 0..1"},
		{level, "logical", ""},
		{level, "LOGICAL", ""},
		{level, "archive", "want one of minimal, replica, logical"},
		{flag, "on", ""},
		{flag, "tr", ""},
		{flag, "maybe", "want a boolean"},
		{conns, "200", ""},
		{conns, "0", "outside the allowed range 1..262143"},
		{conns, "200MB", `takes no unit, got "MB"`},
	} {
		err := replicate.CheckParameter(tc.s, tc.value)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s = %q: %v; want valid", tc.s.Name, tc.value, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, replicate.ErrBadParameter)):
			t.Errorf("%s = %q: %v; want an ErrBadParameter containing %q", tc.s.Name, tc.value, err, tc.want)
		}
	}
}

// TestApplyParameters: on a real server, values are checked against its
// own pg_settings; a reloadable parameter takes effect without a restart,
// a restart-only one is reported pending, node-local Parameters win, and
// names pgha sets are refused.
func TestApplyParameters(t *testing.T) {
	inst := testutil.StartPostgres(t, testutil.PostgresOptions{Parameters: map[string]string{"statement_timeout": "7s"}})
	ctx := testutil.Ctx(t, time.Minute)
	settings, err := inst.Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{"work_mem": "1kB", "wal_levl": "replica", "port": "5433", "synchronous_standby_names": "*", "shared_buffers": "lots"}
	err = replicate.CheckParameters(settings, bad)
	for _, want := range []string{"work_mem", "wal_levl is not a setting", "port is set from each node's Config", "synchronous_standby_names is managed by pgha", "shared_buffers"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckParameters(bad) = %v; want it to mention %q", err, want)
		}
	}
	good := map[string]string{"work_mem": "8MB", "shared_buffers": "32MB", "statement_timeout": "9s", "pgha_test.custom": "x y"}
	if err := replicate.CheckParameters(settings, good); err != nil {
		t.Fatalf("CheckParameters(good) = %v", err)
	}
	pending, err := inst.ApplyParameters(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pending, []string{"shared_buffers"}) {
		t.Errorf("pending restart = %v; want [shared_buffers]", pending)
	}
	testutil.Eventually(t, 10*time.Second, "work_mem reloaded", func() error {
		s, err := inst.Settings(ctx)
		if err != nil {
			return err
		}
		if s["work_mem"].Value != "8192" {
			return errors.New("work_mem = " + s["work_mem"].Value)
		}
		if s["statement_timeout"].Value != "7000" {
			t.Fatalf("statement_timeout = %s; want the node's own 7s (node Parameters win)", s["statement_timeout"].Value)
		}
		return nil
	})
	if _, err := inst.ApplyParameters(ctx, map[string]string{"primary_conninfo": "host=x"}); !errors.Is(err, replicate.ErrBadParameter) {
		t.Fatalf("ApplyParameters(primary_conninfo) = %v; want ErrBadParameter", err)
	}
	// After a restart nothing is pending and the value is in effect.
	if err := inst.Stop(ctx, replicate.Fast); err != nil {
		t.Fatal(err)
	}
	if err := inst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pending, err = inst.ApplyParameters(ctx, good)
	if err != nil || len(pending) != 0 {
		t.Fatalf("after restart: pending %v, %v; want none", pending, err)
	}
	s, err := inst.Settings(ctx)
	if err != nil || s["shared_buffers"].Value != "4096" {
		t.Fatalf("shared_buffers after restart = %q, %v; want 4096 (32MB)", s["shared_buffers"].Value, err)
	}
}
