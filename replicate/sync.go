package replicate

import (
	"context"
	"fmt"
	"strings"
)

// SyncMethod is how synchronous_standby_names picks the standbys a commit
// waits for.
type SyncMethod int

const (
	// SyncAny waits for any Num of the Names (quorum commit): "ANY n (...)".
	SyncAny SyncMethod = iota
	// SyncFirst waits for the first Num of the Names that are connected, in
	// list order (priority): "FIRST n (...)".
	SyncFirst
)

// String returns "ANY" or "FIRST", as in synchronous_standby_names.
func (m SyncMethod) String() string {
	if m == SyncFirst {
		return "FIRST"
	}
	return "ANY"
}

// SyncSpec is a value of synchronous_standby_names. Names are standby
// application names (their Config.Name). The zero SyncSpec (no names)
// means asynchronous replication: commits wait for no standby.
type SyncSpec struct {
	Method SyncMethod
	// Num is how many standbys must confirm each commit: 1..len(Names).
	Num   int
	Names []string
}

// String returns the setting's text, e.g. `ANY 1 ("node2", "node3")`, or ""
// for asynchronous replication.
func (s SyncSpec) String() string {
	if len(s.Names) == 0 {
		return ""
	}
	q := make([]string, len(s.Names))
	for k, n := range s.Names {
		q[k] = quoteIdent(n)
	}
	return fmt.Sprintf("%s %d (%s)", s.Method, s.Num, strings.Join(q, ", "))
}

// Validate checks Num and Names.
func (s SyncSpec) Validate() error {
	if len(s.Names) == 0 {
		return nil
	}
	if s.Num < 1 || s.Num > len(s.Names) {
		return &ConfigError{"SyncSpec.Num", s.Num, fmt.Sprintf("out of range 1..%d (the number of Names)", len(s.Names))}
	}
	seen := map[string]bool{}
	for _, n := range s.Names {
		if n == "" || strings.ContainsAny(n, "\x00\n\r'") {
			return &ConfigError{"SyncSpec.Names", fmt.Sprintf("%q", n), "must be standby application names (no quotes, NUL or line breaks)"}
		}
		if seen[n] {
			return &ConfigError{"SyncSpec.Names", fmt.Sprintf("%q", n), "is listed twice"}
		}
		seen[n] = true
	}
	if s.Method != SyncAny && s.Method != SyncFirst {
		return &ConfigError{"SyncSpec.Method", int(s.Method), "must be SyncAny or SyncFirst"}
	}
	return nil
}

// SetSynchronousStandbys sets synchronous_standby_names to spec with ALTER
// SYSTEM and a reload, and returns once the server reports the new value
// (SHOW synchronous_standby_names). It works on a primary and on a standby
// (where it takes effect after promotion). It returns the effective value.
// When ctx ends before the value shows, the setting is written but may
// not be in effect yet.
func (i *Instance) SetSynchronousStandbys(ctx context.Context, spec SyncSpec) (string, error) {
	if err := spec.Validate(); err != nil {
		return "", err
	}
	want := spec.String()
	conn, err := i.Connect(ctx)
	if err != nil {
		return "", opErr("set synchronous standbys", err)
	}
	defer conn.Close(context.Background())
	for _, s := range []string{"ALTER SYSTEM SET synchronous_standby_names = " + quoteLiteral(want), "SELECT pg_reload_conf()"} {
		if _, err := conn.Exec(ctx, s); err != nil {
			return "", fmt.Errorf("replicate: set synchronous standbys to %q: %w", want, err)
		}
	}
	var got string
	err = pollCtx(ctx, func() (bool, error) {
		err := conn.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&got)
		return err == nil && got == want, err
	})
	if err != nil {
		return got, &ServerError{Op: fmt.Sprintf("set synchronous standbys to %q: wait for reload (shows %q)", want, got), Err: err, LogTail: i.logTail()}
	}
	i.log.Info("synchronous standbys set", "synchronous_standby_names", got)
	return got, nil
}
