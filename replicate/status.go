package replicate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Status is a snapshot of the local server, from [Instance.Status]. Fields
// that do not apply to the server's role are zero.
type Status struct {
	// Initialized: DataDir holds a cluster.
	Initialized bool
	// RewindIncomplete: a pg_rewind of DataDir started modifying it and did
	// not finish; Start refuses it ([ErrRewindIncomplete]) until a Clone
	// replaces it.
	RewindIncomplete bool
	// Running: a postmaster runs for DataDir and accepted a connection.
	Running bool
	// PID of the postmaster, when running.
	PID int
	// StandbyConfigured: standby.signal exists, so the server starts (or
	// runs) as a standby.
	StandbyConfigured bool
	// InRecovery: the running server is a standby (pg_is_in_recovery()).
	InRecovery bool
	// SystemID is the PostgreSQL system identifier of the data directory.
	SystemID uint64
	// Timeline: on a primary, the timeline it writes (from its current WAL
	// file name); on a standby, the timeline its WAL receiver receives, or
	// without a streaming one the highest timeline whose history file and
	// WAL segments are in pg_wal and whose switch point it has replayed up
	// to (else its latest restartpoint's); when stopped, the latest
	// checkpoint's timeline from pg_controldata.
	Timeline uint32
	// Diverged: this standby replayed WAL of its timeline past the point
	// where a newer timeline forked off it (it holds that timeline's
	// history file, fetched from its upstream). It can never follow that
	// timeline as it is, only after a pg_rewind ([Instance.Rewind]) or a
	// new clone. PostgreSQL logs "new timeline N forked off current
	// database system timeline M before current recovery point" and waits
	// for good. Typical cause: an asynchronous standby that had received
	// more WAL than the standby that was promoted.
	Diverged bool
	// ClusterState is pg_controldata's "Database cluster state" when the
	// server is stopped, e.g. "shut down", "shut down in recovery", or "in
	// production" after a crash. Empty when running.
	ClusterState string
	// CheckpointLSN is the latest checkpoint record's location, when
	// stopped. After a clean shutdown ("shut down") it is the last record
	// the server wrote: a standby whose ReplayLSN has passed it has every
	// transaction of this server (see [Instance.WaitReplayed]), and this
	// server can then Follow the standby once promoted, without a rewind.
	CheckpointLSN LSN

	// WriteLSN is pg_current_wal_lsn() and FlushLSN
	// pg_current_wal_flush_lsn(), on a primary.
	WriteLSN, FlushLSN LSN
	// ReceiveLSN is pg_last_wal_receive_lsn() and ReplayLSN
	// pg_last_wal_replay_lsn(), on a standby.
	ReceiveLSN, ReplayLSN LSN
	// ReplayLagBytes is ReceiveLSN - ReplayLSN on a standby: WAL received
	// but not yet applied. Lag behind the primary is the primary's WriteLSN
	// minus this standby's ReplayLSN (see [LSN.BytesAhead]).
	ReplayLagBytes uint64

	// SynchronousStandbyNames is the effective synchronous_standby_names.
	SynchronousStandbyNames string
	// Replicas are the standbys streaming from this server
	// (pg_stat_replication), ordered by name.
	Replicas []Replica
	// WALReceiver is this standby's WAL receiver (pg_stat_wal_receiver), or
	// nil when none runs.
	WALReceiver *WALReceiver
}

// Replica is one row of pg_stat_replication: a standby streaming from this
// server.
type Replica struct {
	Name       string // application_name: the standby's Config.Name
	ClientAddr string // "" for a unix socket connection
	State      string // startup, catchup, streaming, backup, stopping
	SyncState  string // async, potential, sync, quorum
	SentLSN    LSN
	WriteLSN   LSN
	FlushLSN   LSN
	ReplayLSN  LSN
}

// WALReceiver is the row of pg_stat_wal_receiver on a standby.
type WALReceiver struct {
	Status       string // e.g. streaming, waiting, stopping
	SenderHost   string
	SenderPort   int
	SlotName     string
	Timeline     uint32 // received_tli
	FlushedLSN   LSN    // WAL received and flushed to disk
	LatestEndLSN LSN    // last WAL position reported by the sender
}

// Status reports the local server's state. When it is not running, the
// fields come from pg_controldata. When it runs, the queries go over one
// persistent superuser session per Instance (opened on first use, reopened
// after a restart or a broken connection; [Instance.Close] closes it), so
// calling Status every loop round makes no new logins. Errors: [ErrAuthentication] for a
// rejected superuser password; a running server that refuses connections
// (e.g. still starting) gives an error too.
func (i *Instance) Status(ctx context.Context) (Status, error) {
	st := Status{Initialized: i.initialized(), RewindIncomplete: i.rewindIncomplete()}
	if !st.Initialized {
		return st, nil
	}
	if _, err := os.Stat(filepath.Join(i.cfg.DataDir, standbyFile)); err == nil {
		st.StandbyConfigured = true
	}
	p := i.running()
	if p == nil {
		c, err := i.controlData(ctx)
		if err != nil {
			return st, opErr(fmt.Sprintf("status %s", i.cfg.Name), err)
		}
		st.SystemID, st.Timeline, st.ClusterState, st.CheckpointLSN = c.SystemID, c.Timeline, c.State, c.CheckpointLSN
		return st, nil
	}
	st.PID = p.pid
	base := st
	err := i.withAdmin(ctx, fmt.Sprintf("status %s", i.cfg.Name), func(conn *pgx.Conn) error {
		st = base // a retry on a fresh session starts over
		st.Running = true
		return i.queryStatus(ctx, conn, &st)
	})
	return st, err
}

// queryStatus fills the running server's part of st from conn.
func (i *Instance) queryStatus(ctx context.Context, conn *pgx.Conn, st *Status) error {
	var sysID string
	var write, flush, recv, replay, tliHex *string
	var ckptTLI int32
	err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(),
		(SELECT system_identifier::text FROM pg_control_system()),
		CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
		CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END,
		pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
		CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END,
		(SELECT timeline_id FROM pg_control_checkpoint()),
		current_setting('synchronous_standby_names')`).Scan(
		&st.InRecovery, &sysID, &write, &flush, &recv, &replay, &tliHex, &ckptTLI, &st.SynchronousStandbyNames)
	if err != nil {
		return fmt.Errorf("replicate: status %s: %w", i.cfg.Name, err)
	}
	if st.SystemID, err = parseSystemID(sysID); err != nil {
		return fmt.Errorf("replicate: status %s: pg_control_system(): %w", i.cfg.Name, err)
	}
	var perr error
	set := func(dst *LSN, s *string) {
		v, err := parseLSNOrZero(s)
		if err != nil && perr == nil {
			perr = err
		}
		*dst = v
	}
	set(&st.WriteLSN, write)
	set(&st.FlushLSN, flush)
	set(&st.ReceiveLSN, recv)
	set(&st.ReplayLSN, replay)
	if st.ReceiveLSN > 0 {
		st.ReplayLagBytes = st.ReceiveLSN.BytesAhead(st.ReplayLSN)
	}
	st.Timeline = uint32(ckptTLI)
	if tliHex != nil {
		t, err := parseTimeline(*tliHex, 16)
		if err != nil {
			return fmt.Errorf("replicate: status %s: WAL file name: %w", i.cfg.Name, err)
		}
		st.Timeline = t
	}

	rows, err := conn.Query(ctx, `SELECT coalesce(application_name, ''), coalesce(client_addr::text, ''),
		coalesce(state, ''), coalesce(sync_state, ''), sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text
		FROM pg_stat_replication ORDER BY application_name, pid`)
	if err != nil {
		return fmt.Errorf("replicate: status %s: pg_stat_replication: %w", i.cfg.Name, err)
	}
	for rows.Next() {
		var r Replica
		var sent, w, f, rp *string
		if err := rows.Scan(&r.Name, &r.ClientAddr, &r.State, &r.SyncState, &sent, &w, &f, &rp); err != nil {
			rows.Close()
			return fmt.Errorf("replicate: status %s: pg_stat_replication: %w", i.cfg.Name, err)
		}
		set(&r.SentLSN, sent)
		set(&r.WriteLSN, w)
		set(&r.FlushLSN, f)
		set(&r.ReplayLSN, rp)
		r.ClientAddr = strings.TrimSuffix(strings.TrimSuffix(r.ClientAddr, "/32"), "/128")
		st.Replicas = append(st.Replicas, r)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("replicate: status %s: pg_stat_replication: %w", i.cfg.Name, err)
	}

	var w WALReceiver
	var port, tli int32
	var flushed, latest *string
	err = conn.QueryRow(ctx, `SELECT status, coalesce(sender_host, ''), coalesce(sender_port, 0), coalesce(slot_name, ''),
		coalesce(received_tli, 0), flushed_lsn::text, latest_end_lsn::text FROM pg_stat_wal_receiver`).Scan(
		&w.Status, &w.SenderHost, &port, &w.SlotName, &tli, &flushed, &latest)
	switch {
	case err == pgx.ErrNoRows:
	case err != nil:
		return fmt.Errorf("replicate: status %s: pg_stat_wal_receiver: %w", i.cfg.Name, err)
	default:
		w.SenderPort, w.Timeline = int(port), uint32(tli)
		set(&w.FlushedLSN, flushed)
		set(&w.LatestEndLSN, latest)
		st.WALReceiver = &w
		if st.InRecovery && w.Timeline > 0 {
			st.Timeline = w.Timeline
		}
	}
	if perr != nil {
		return fmt.Errorf("replicate: status %s: %w", i.cfg.Name, perr)
	}
	if st.InRecovery && (st.WALReceiver == nil || st.WALReceiver.Status != "streaming") {
		if st.Timeline, st.Diverged, err = replayTimeline(ctx, conn, st.ReplayLSN, st.Timeline); err != nil {
			return fmt.Errorf("replicate: status %s: replay timeline: %w", i.cfg.Name, err)
		}
	}
	return nil
}

// WaitReplayed waits until this running standby has replayed WAL up to lsn
// or beyond (pg_last_wal_replay_lsn() >= lsn), e.g. the last LSN of a
// primary stopped for a switchover, before promoting it. It returns
// [ErrNotStandby] on a primary, and when ctx ends first a [*ServerError]
// with the position reached.
func (i *Instance) WaitReplayed(ctx context.Context, lsn LSN) error {
	conn, err := i.Connect(ctx)
	if err != nil {
		return opErr(fmt.Sprintf("wait for replay of %v", lsn), err)
	}
	defer conn.Close(context.Background())
	var replayed *string
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return fmt.Errorf("replicate: wait for replay of %v: %w", lsn, err)
	}
	if !inRecovery {
		return fmt.Errorf("%w: wait for replay of %v", ErrNotStandby, lsn)
	}
	var last LSN
	err = pollCtx(ctx, func() (bool, error) {
		if err := conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&replayed); err != nil {
			return false, err
		}
		l, err := parseLSNOrZero(replayed)
		last = l
		return err == nil && l >= lsn, err
	})
	if err != nil {
		return &ServerError{Op: fmt.Sprintf("wait for replay of %v (replayed %v)", lsn, last), Err: err, LogTail: i.logTail()}
	}
	return nil
}
