package replicate

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

func (i *Instance) startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	attrs = append(attrs, attribute.String("pgha.node", i.cfg.Name))
	return i.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

func sourceAttrs(src Source) []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("pgha.source", src.String())}
}

// Init creates a new cluster in DataDir with initdb: data checksums on (so
// pg_rewind works), SCRAM authentication, the superuser with
// SuperuserPassword and the replication role with ReplicationPassword. It
// leaves the server stopped; call [Instance.Start]. DataDir may exist but
// must be empty: otherwise Init changes nothing and returns an error
// wrapping [ErrDataDirNotEmpty]. When running as root, DataDir is made
// owned by OSUser, and every parent directory must let OSUser through
// ([ErrWrongOwner] otherwise). Init, Clone and Start report a full or
// read-only file system as an error matching syscall.ENOSPC or
// syscall.EROFS (errors.Is) that names DataDir and the fix.
func (i *Instance) Init(ctx context.Context) (err error) {
	ctx, span := i.startSpan(ctx, "replicate.Init")
	defer func() { endSpan(span, err) }()
	defer func() { err = withDiskHint(err, i.cfg.DataDir) }()
	i.opMu.Lock()
	defer i.opMu.Unlock()
	start := time.Now()
	if i.initialized() {
		return fmt.Errorf("%w: %s already holds a PostgreSQL cluster", ErrDataDirNotEmpty, i.cfg.DataDir)
	}
	if err := i.prepareEmptyDir(i.cfg.DataDir, false); err != nil {
		return err
	}
	pw, cleanup, err := i.secretFile("pgha-initdb-", "pw", i.cfg.SuperuserPassword+"\n")
	if err != nil {
		return err
	}
	defer cleanup()
	args := []string{"-D", i.cfg.DataDir, "-U", i.cfg.Superuser, "--auth=scram-sha-256", "--pwfile=" + pw,
		"--encoding=UTF8", "--locale=C", "--data-checksums"}
	if i.cfg.UnsafeNoSync {
		args = append(args, "--no-sync")
	}
	if _, err := i.run(ctx, "initdb", args, runOpts{}); err != nil {
		return opErr(fmt.Sprintf("init %s", i.cfg.Name), err)
	}
	if err := i.writeNodeConfig(); err != nil {
		return err
	}
	// Create the replication role in single-user mode: no port, no
	// connection, and the password goes in as its SCRAM verifier only.
	ver, err := scramVerifier(i.cfg.ReplicationPassword)
	if err != nil {
		return fmt.Errorf("replicate: %w", err)
	}
	sql := fmt.Sprintf("CREATE ROLE %s WITH LOGIN REPLICATION PASSWORD %s;\n", quoteIdent(i.cfg.ReplicationUser), quoteLiteral(ver))
	sargs := []string{"--single", "-D", i.cfg.DataDir, "-c", "listen_addresses=", "-c", "log_min_messages=error", "postgres"}
	out, err := i.run(ctx, "postgres", sargs, runOpts{stdin: strings.NewReader(sql)})
	if err == nil && strings.Contains(out, "ERROR:") {
		err = &CommandError{Path: i.bins.path("postgres"), Args: sargs, ExitCode: 0, Stderr: tail(out), Err: errors.New("CREATE ROLE reported an error")}
	}
	if err != nil {
		return opErr(fmt.Sprintf("init %s: create replication role", i.cfg.Name), err)
	}
	i.log.Info("initialized data directory", "dir", i.cfg.DataDir, "took", time.Since(start))
	return nil
}

// Clone makes DataDir a standby of the running server src, with the
// methods of Config.ReplicaMethods tried in order (default: pg_basebackup
// alone, WAL streamed through src.Slot): each gets an empty data
// directory and its timeout; a failed method's directory is moved aside
// to DataDir.failed-<kind>-<time> (never deleted) before the next runs.
// The standby is configured to stream from src with application_name
// Config.Name (src.Slot is created on src if missing) and started; Clone
// returns once it accepts connections. The server must not be running
// ([ErrRunning]). DataDir must be empty or absent ([ErrDataDirNotEmpty])
// unless Config.ReplaceDataDir is set, which moves the old directory aside
// (it is never deleted). A source of another cluster than Config.SystemID
// gives [ErrSystemIDMismatch], and so does a method that restored another
// system than src's; a rejected replication password [ErrAuthentication];
// a failed pg_basebackup a [*CommandError] (pg_basebackup removes what it
// wrote). When every method failed, the error joins a [*MethodError] per
// method.
func (i *Instance) Clone(ctx context.Context, src Source) (err error) {
	return i.clone(ctx, src, i.cfg.ReplaceDataDir)
}

// Reclone is [Instance.Clone] that moves a non-empty DataDir aside first
// (DataDir.replaced-<time>; never deleted), whatever Config.ReplaceDataDir
// says: for a data directory an operator or a setting (ha's
// RecloneOnRewindFailure) has decided to replace, e.g. one pg_rewind
// cannot bring back.
func (i *Instance) Reclone(ctx context.Context, src Source) error {
	return i.clone(ctx, src, true)
}

func (i *Instance) clone(ctx context.Context, src Source, replace bool) (err error) {
	ctx, span := i.startSpan(ctx, "replicate.Clone", sourceAttrs(src)...)
	defer func() { endSpan(span, err) }()
	defer func() { err = withDiskHint(err, i.cfg.DataDir) }()
	if err := src.validate(); err != nil {
		return err
	}
	i.opMu.Lock()
	defer i.opMu.Unlock()
	start := time.Now()
	if p := i.running(); p != nil {
		return fmt.Errorf("%w: clone %s into %s (pid %d): stop it first", ErrRunning, src, i.cfg.DataDir, p.pid)
	}
	sysID, srcTLI, err := i.identifySource(ctx, src)
	if err != nil {
		return opErr(fmt.Sprintf("clone %s", i.cfg.Name), err)
	}
	if i.cfg.SystemID != 0 && sysID != i.cfg.SystemID {
		return fmt.Errorf("%w: clone source %s belongs to system %d, Config.SystemID is %d", ErrSystemIDMismatch, src, sysID, i.cfg.SystemID)
	}
	if err := i.prepareEmptyDir(i.cfg.DataDir, replace); err != nil {
		return err
	}
	methods := i.replicaMethods()
	var errs []error
	for n, m := range methods {
		if n > 0 {
			if err := i.prepareEmptyDir(i.cfg.DataDir, false); err != nil {
				return errors.Join(append(errs, err)...)
			}
		}
		mstart := time.Now()
		err := i.createReplica(ctx, m, src, sysID, srcTLI)
		if err == nil {
			i.log.Info("cloned", "source", src.String(), "method", m.String(), "took", time.Since(start), "method_took", time.Since(mstart))
			return nil
		}
		if p := i.running(); p != nil {
			// createReplica could not stop the server it started: never
			// move a running server's directory.
			errs = append(errs, &MethodError{Method: m, Err: err})
			return opErr(fmt.Sprintf("clone %s from %s", i.cfg.Name, src),
				errors.Join(append(errs, fmt.Errorf("%w: the server started by the failed method still runs (pid %d): stop it, then move %s aside", ErrRunning, p.pid, i.cfg.DataDir))...))
		}
		aside, merr := i.moveAsideFailed(m.Kind)
		me := &MethodError{Method: m, MovedTo: aside, Err: err}
		errs = append(errs, me)
		i.log.Warn("replica method failed", "method", m.String(), "moved_to", aside, "took", time.Since(mstart), "err", err.Error(), "next", n+1 < len(methods))
		if merr != nil {
			// The directory could not be moved aside: the next method
			// would find it non-empty. Stop here.
			return opErr(fmt.Sprintf("clone %s from %s", i.cfg.Name, src), errors.Join(append(errs, merr)...))
		}
		if ctx.Err() != nil {
			break
		}
	}
	return opErr(fmt.Sprintf("clone %s from %s", i.cfg.Name, src), errors.Join(errs...))
}

func (i *Instance) setSource(src Source, tli uint32) {
	i.mu.Lock()
	i.src, i.srcTLI = &src, tli
	i.mu.Unlock()
}

// Follow makes this server a standby streaming from src. On a running
// standby it changes primary_conninfo and primary_slot_name with ALTER
// SYSTEM and a reload (no restart; PostgreSQL 13+) and returns once the
// new settings are in effect; on a stopped server (a standby, or an
// ex-primary that did not diverge) it writes standby.signal and the
// settings, and starts it. It does not wait for streaming to start: use
// [Instance.WaitStreaming]. src.Slot is created on src if missing.
//
// Follow refuses a running primary with [ErrNotStandby] (Fence or Stop it
// first), and a source of another cluster with [ErrSystemIDMismatch]. It
// does not check for divergence: PostgreSQL refuses to stream from a
// source whose timeline forked before this server's position, and then
// WaitStreaming times out with the log line that says so; use
// [Instance.Rewind] for an ex-primary.
func (i *Instance) Follow(ctx context.Context, src Source) (err error) {
	ctx, span := i.startSpan(ctx, "replicate.Follow", sourceAttrs(src)...)
	defer func() { endSpan(span, err) }()
	if err := src.validate(); err != nil {
		return err
	}
	i.opMu.Lock()
	defer i.opMu.Unlock()
	start := time.Now()
	if !i.initialized() {
		return fmt.Errorf("%w: %s (Clone it instead)", ErrNotInitialized, i.cfg.DataDir)
	}
	srcID, srcTLI, err := i.identifySource(ctx, src)
	if err != nil {
		return opErr(fmt.Sprintf("follow %s", src), err)
	}
	ourID, err := i.systemID(ctx)
	if err != nil {
		return opErr(fmt.Sprintf("follow %s", src), err)
	}
	if srcID != ourID {
		return fmt.Errorf("%w: follow %s: the source is system %d, this data directory is system %d", ErrSystemIDMismatch, src, srcID, ourID)
	}
	p := i.running()
	if p == nil {
		if err := i.writeStandbyConfig(src); err != nil {
			return err
		}
		i.setSource(src, srcTLI)
		if err := i.start(ctx); err != nil {
			return opErr(fmt.Sprintf("follow %s", src), err)
		}
		i.log.Info("following", "source", src.String(), "restarted", true, "took", time.Since(start))
		return nil
	}
	conn, err := i.Connect(ctx)
	if err != nil {
		return opErr(fmt.Sprintf("follow %s", src), err)
	}
	defer conn.Close(context.Background())
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return fmt.Errorf("replicate: follow %s: %w", src, err)
	}
	if !inRecovery {
		return fmt.Errorf("%w: follow %s", ErrNotStandby, src)
	}
	ci := i.primaryConninfo(src)
	stmts := []string{"ALTER SYSTEM SET primary_conninfo = " + quoteLiteral(ci)}
	if src.Slot != "" {
		stmts = append(stmts, "ALTER SYSTEM SET primary_slot_name = "+quoteLiteral(src.Slot))
	} else {
		stmts = append(stmts, "ALTER SYSTEM RESET primary_slot_name")
	}
	stmts = append(stmts, "SELECT pg_reload_conf()")
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("replicate: follow %s: %s: %w", src, strings.SplitN(s, "=", 2)[0], err)
		}
	}
	i.setSource(src, srcTLI)
	err = pollCtx(ctx, func() (bool, error) {
		var got, slot string
		err := conn.QueryRow(ctx, "SELECT current_setting('primary_conninfo'), current_setting('primary_slot_name')").Scan(&got, &slot)
		return err == nil && got == ci && slot == src.Slot, err
	})
	if err != nil {
		return &ServerError{Op: "follow " + src.String() + ": wait for reload", Err: err, LogTail: i.logTail()}
	}
	i.log.Info("following", "source", src.String(), "restarted", false, "took", time.Since(start))
	return nil
}

// WaitStreaming waits until the standby's WAL receiver streams from the
// source given to the last Clone, Follow or Rewind, on the timeline the
// source had then or a later one (pg_stat_wal_receiver status "streaming"
// with that sender host and port, and received_tli). A standby that
// follows a newly promoted server first streams the old timeline up to the
// fork: WaitStreaming waits until it has switched. When ctx ends first it
// returns a [*ServerError] with the server log's tail, which says why
// (e.g. a diverged timeline, a missing slot, a rejected password).
func (i *Instance) WaitStreaming(ctx context.Context) error {
	i.mu.Lock()
	src, tli := i.src, i.srcTLI
	i.mu.Unlock()
	if src == nil {
		return errors.New("replicate: wait for streaming: no source: call Clone, Follow or Rewind first")
	}
	var last string
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	err := pollCtx(ctx, func() (bool, error) {
		if conn == nil {
			c, err := i.Connect(ctx)
			if err != nil {
				last = err.Error()
				return false, nil
			}
			conn = c
		}
		var status, host string
		var port, rtli int32
		err := conn.QueryRow(ctx, "SELECT status, coalesce(sender_host, ''), coalesce(sender_port, 0), coalesce(received_tli, 0) FROM pg_stat_wal_receiver").Scan(&status, &host, &port, &rtli)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			last = "no WAL receiver"
			return false, nil
		case err != nil:
			last = err.Error()
			conn.Close(context.Background())
			conn = nil
			return false, nil
		}
		last = fmt.Sprintf("WAL receiver %s from %s:%d on timeline %d (want %d or later)", status, host, port, rtli, tli)
		return status == "streaming" && host == src.Host && int(port) == src.Port && uint32(rtli) >= tli, nil
	})
	if err != nil {
		return &ServerError{Op: "wait for streaming from " + src.String(), Err: fmt.Errorf("%w (last seen: %s)", err, last), LogTail: i.logTail()}
	}
	return nil
}

// pollCtx calls cond every pollEvery until it returns true, or ctx ends (then
// it returns ctx.Err() joined with cond's last error).
func pollCtx(ctx context.Context, cond func() (bool, error)) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return errors.Join(ctx.Err(), err)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Promote turns the running standby into a primary with pg_promote and
// returns the new timeline once the server accepts writes
// (pg_is_in_recovery() is false). On a server that is already a primary it
// returns its timeline and no error. It does not checkpoint: Rewind
// checkpoints its source itself. Errors: [ErrNotRunning], or a
// [*ServerError] with the log's tail when the promotion did not finish
// before ctx ended (it may still finish: check Status).
func (i *Instance) Promote(ctx context.Context) (timeline uint32, err error) {
	ctx, span := i.startSpan(ctx, "replicate.Promote")
	defer func() {
		span.SetAttributes(attribute.Int64("pgha.timeline", int64(timeline)))
		endSpan(span, err)
	}()
	i.opMu.Lock()
	defer i.opMu.Unlock()
	start := time.Now()
	conn, err := i.Connect(ctx)
	if err != nil {
		return 0, opErr(fmt.Sprintf("promote %s", i.cfg.Name), err)
	}
	defer conn.Close(context.Background())
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return 0, fmt.Errorf("replicate: promote %s: %w", i.cfg.Name, err)
	}
	if inRecovery && i.cfg.ArchiveReceivedWAL {
		// Before the promotion, while no checkpoint of the new primary
		// can remove them; again after it for the segments completed
		// meanwhile.
		i.archiveReceivedWAL()
		defer i.archiveReceivedWAL()
	}
	if inRecovery {
		var sent bool
		if err := conn.QueryRow(ctx, "SELECT pg_promote(false)").Scan(&sent); err != nil {
			return 0, &ServerError{Op: "promote", Err: err, LogTail: i.logTail()}
		}
		if !sent {
			return 0, &ServerError{Op: "promote", Err: errors.New("pg_promote could not signal the postmaster"), LogTail: i.logTail()}
		}
		err = pollCtx(ctx, func() (bool, error) {
			err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
			return err == nil && !inRecovery, err
		})
		if err != nil {
			return 0, &ServerError{Op: "promote: wait for end of recovery", Err: err, LogTail: i.logTail()}
		}
	}
	var tliHex string
	if err := conn.QueryRow(ctx, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)").Scan(&tliHex); err != nil {
		return 0, fmt.Errorf("replicate: promote %s: read timeline: %w", i.cfg.Name, err)
	}
	t, err := parseTimeline(tliHex, 16)
	if err != nil {
		return 0, fmt.Errorf("replicate: promote %s: WAL file name: %w", i.cfg.Name, err)
	}
	if inRecovery {
		return 0, errors.New("replicate: promote: still in recovery") // unreachable
	}
	i.log.Info("promoted", "timeline", t, "took", time.Since(start))
	return uint32(t), nil
}

// Rewind brings a stopped ex-primary that diverged from src back in line
// with pg_rewind (after a CHECKPOINT on src, so that src's control file
// shows its new timeline), configures it as a standby of src and starts
// it. When nothing diverged, pg_rewind changes nothing and Rewind only
// configures and starts: so an ex-primary can always rejoin through Rewind.
// A server that crashed is recovered by pg_rewind first (PostgreSQL 13+).
//
// The server must be stopped ([ErrRunning]: Fence or Stop it first). Errors
// are a [*RewindError]; errors.Is(err, [ErrRewindImpossible]) when only a
// fresh Clone can help (another cluster, WAL gone, no checksums).
func (i *Instance) Rewind(ctx context.Context, src Source) (err error) {
	ctx, span := i.startSpan(ctx, "replicate.Rewind", sourceAttrs(src)...)
	defer func() { endSpan(span, err) }()
	if err := src.validate(); err != nil {
		return err
	}
	i.opMu.Lock()
	defer i.opMu.Unlock()
	start := time.Now()
	if p := i.running(); p != nil {
		return fmt.Errorf("%w: rewind %s (pid %d): Fence or Stop it first", ErrRunning, i.cfg.Name, p.pid)
	}
	if !i.initialized() {
		return fmt.Errorf("%w: %s (Clone it instead)", ErrNotInitialized, i.cfg.DataDir)
	}
	// pg_rewind first recovers a directory that was not shut down cleanly
	// in single-user mode, which refuses a postmaster.pid naming a zombie
	// (a killed postmaster nobody reaped) just as postgres does. No
	// postmaster runs for the directory (checked above).
	if err := i.clearStaleLock(ctx); err != nil {
		return &RewindError{Reason: "clear the dead postmaster's lock", Err: err}
	}
	srcID, srcTLI, err := i.identifySource(ctx, src)
	if err != nil {
		return &RewindError{Reason: "source unreachable", Err: err}
	}
	ourID, err := i.controlSystemID(ctx)
	if err != nil {
		return &RewindError{Reason: "read control data", Err: err}
	}
	if srcID != ourID {
		return &RewindError{Impossible: true, Reason: "the source belongs to another cluster",
			Err: fmt.Errorf("%w: source %s is system %d, this data directory is system %d", ErrSystemIDMismatch, src, srcID, ourID)}
	}
	if err := i.checkpointSource(ctx, src); err != nil {
		return &RewindError{Reason: "checkpoint on the source", Err: err}
	}
	conninfo := strings.Join(append([]string{
		"host=" + quoteConninfo(src.Host), fmt.Sprintf("port=%d", src.Port),
		"user=" + quoteConninfo(i.cfg.Superuser), "dbname=postgres",
		"application_name=" + quoteConninfo(i.cfg.Name+"-rewind"), "connect_timeout=5",
	}, i.sslConninfo()...), " ")
	// --progress makes pg_rewind say "need to copy" right before its
	// point of no return: a failure before it changed nothing.
	args := []string{"--target-pgdata=" + i.cfg.DataDir, "--source-server=" + conninfo, "--progress"}
	if i.cfg.UnsafeNoSync {
		args = append(args, "--no-sync")
	}
	// A directory that was not shut down cleanly is first recovered by
	// pg_rewind in single-user mode, which refuses standby.signal
	// ("standby mode is not supported by single-user servers"): a
	// standby's marker (ours; written again below) must not be there.
	hadSignal, err := i.removeStandbySignal()
	if err != nil {
		return &RewindError{Reason: "remove standby.signal before pg_rewind", Err: err}
	}
	// pg_rewind modifies the data directory in place; if it does not
	// finish, what is left may not be startable or may be silently wrong.
	// A marker beside the directory (pg_rewind would remove one inside)
	// records the attempt until it succeeds: Start refuses the directory
	// while it exists, and only a new Clone clears it.
	if err := i.markRewind(src); err != nil {
		return &RewindError{Reason: "write the rewind marker", Err: err}
	}
	out, err := i.run(ctx, "pg_rewind", args, runOpts{env: []string{"PGPASSWORD=" + i.cfg.SuperuserPassword}})
	if err != nil {
		if !rewindStartedModifying(out) {
			// Nothing changed (e.g. the source closed the connection while
			// pg_rewind read its file list): the directory is as it was,
			// and the rewind may simply be tried again.
			i.unmarkRewind()
			if hadSignal {
				i.writeFile(filepath.Join(i.cfg.DataDir, standbyFile), nil, 0o600)
			}
		}
		return classifyRewind(err)
	}
	if err := i.unmarkRewind(); err != nil {
		return &RewindError{Reason: "remove the rewind marker", Err: err}
	}
	rewound := !strings.Contains(out, "no rewind required")
	if err := i.writeStandbyConfig(src); err != nil {
		return &RewindError{Reason: "configure as standby", Err: err}
	}
	i.setSource(src, srcTLI)
	if err := i.start(ctx); err != nil {
		return &RewindError{Reason: "start as standby", Err: err}
	}
	i.log.Info("rewound", "source", src.String(), "changed", rewound, "took", time.Since(start))
	return nil
}

// rewindImpossible are pg_rewind messages after which only a new clone helps.
var rewindImpossible = []string{
	"source and target clusters are from different systems",
	"could not find common ancestor",
	"could not find previous WAL record",
	"could not open file",
	"needs to use either data checksums",
	"clusters are not compatible",
	"could not find WAL",
}

func classifyRewind(err error) error {
	var ce *CommandError
	if !errors.As(err, &ce) {
		return &RewindError{Reason: "pg_rewind", Err: err}
	}
	for _, m := range rewindImpossible {
		if strings.Contains(ce.Stderr, m) {
			return &RewindError{Impossible: true, Reason: m, Err: err}
		}
	}
	reason := "pg_rewind"
	if strings.Contains(ce.Stderr, "password authentication failed") {
		reason = "source rejected the superuser password"
		err = fmt.Errorf("%w: %w", ErrAuthentication, err)
	}
	return &RewindError{Reason: reason, Err: err}
}

// checkpointSource runs CHECKPOINT on src as the superuser, so that a newly
// promoted source's control file names its new timeline (pg_rewind reads
// it).
func (i *Instance) checkpointSource(ctx context.Context, src Source) error {
	conn, err := i.connectTo(ctx, src.Host, src.Port, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "CHECKPOINT")
	return err
}

// controlData runs pg_controldata and parses the fields replicate uses.
func (i *Instance) controlData(ctx context.Context) (controlFile, error) {
	out, err := i.run(ctx, "pg_controldata", []string{"-D", i.cfg.DataDir}, runOpts{})
	if err != nil {
		return controlFile{}, err
	}
	c, err := parseControlData(out)
	if err != nil {
		return controlFile{}, fmt.Errorf("%w (data directory %s)", err, i.cfg.DataDir)
	}
	return c, nil
}

func (i *Instance) controlSystemID(ctx context.Context) (uint64, error) {
	c, err := i.controlData(ctx)
	if err != nil {
		return 0, err
	}
	return c.SystemID, nil
}

// systemID returns the data directory's system identifier, from the
// running server or from pg_controldata.
func (i *Instance) systemID(ctx context.Context) (uint64, error) {
	if i.running() != nil {
		if conn, err := i.Connect(ctx); err == nil {
			defer conn.Close(context.Background())
			var s string
			if err := conn.QueryRow(ctx, "SELECT system_identifier::text FROM pg_control_system()").Scan(&s); err == nil {
				id, err := parseSystemID(s)
				if err != nil {
					return 0, fmt.Errorf("replicate: pg_control_system(): %w", err)
				}
				return id, nil
			}
		}
	}
	return i.controlSystemID(ctx)
}
