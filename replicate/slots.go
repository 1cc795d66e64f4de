package replicate

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var slotRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// SlotName returns a valid physical replication slot name for a node name:
// lower-cased, every character other than a-z, 0-9 and '_' replaced by
// '_', at most 63 bytes. Distinct names that differ only in those
// characters map to the same slot.
func SlotName(node string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(node) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
		if b.Len() >= 63 {
			break
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

// Slot is a physical replication slot on this server.
type Slot struct {
	Name       string
	Active     bool // a WAL sender streams through it now
	RestartLSN LSN  // oldest WAL the slot keeps; 0 if none reserved yet
}

func checkSlotName(name string) error {
	if !slotRE.MatchString(name) {
		return &ConfigError{"slot name", fmt.Sprintf("%q", name), "must be 1-63 lower-case letters, digits or '_' (see SlotName)"}
	}
	return nil
}

// EnsureSlot creates the physical replication slot name on this (running)
// server, reserving WAL from now, unless it exists. It is idempotent and
// safe to call concurrently.
func (i *Instance) EnsureSlot(ctx context.Context, name string) error {
	if err := checkSlotName(name); err != nil {
		return err
	}
	return i.withAdmin(ctx, fmt.Sprintf("ensure slot %s", name), func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)
			WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, name)
		var pe *pgconn.PgError
		if err != nil && !(errors.As(err, &pe) && pe.Code == "42710") { // duplicate_object: a concurrent create
			return fmt.Errorf("replicate: ensure slot %s: %w", name, err)
		}
		return nil
	})
}

// DropSlot drops the replication slot name from this (running) server. It is
// a no-op when the slot does not exist. A slot in use by a streaming standby
// cannot be dropped: the error says so (SQLSTATE 55006); stop that standby
// or point it elsewhere first.
func (i *Instance) DropSlot(ctx context.Context, name string) error {
	if err := checkSlotName(name); err != nil {
		return err
	}
	return i.withAdmin(ctx, fmt.Sprintf("drop slot %s", name), func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name)
		var pe *pgconn.PgError
		if err != nil && !(errors.As(err, &pe) && pe.Code == "42704") { // undefined_object: dropped concurrently
			return fmt.Errorf("replicate: drop slot %s: %w", name, err)
		}
		return nil
	})
}

// Slots lists the physical replication slots on this (running) server,
// ordered by name.
func (i *Instance) Slots(ctx context.Context) ([]Slot, error) {
	var out []Slot
	err := i.withAdmin(ctx, "list slots", func(conn *pgx.Conn) error {
		out = nil
		rows, err := conn.Query(ctx, `SELECT slot_name::text, active, restart_lsn::text FROM pg_replication_slots
			WHERE slot_type = 'physical' ORDER BY slot_name`)
		if err != nil {
			return fmt.Errorf("replicate: list slots: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var s Slot
			var lsn *string
			if err := rows.Scan(&s.Name, &s.Active, &lsn); err != nil {
				return fmt.Errorf("replicate: list slots: %w", err)
			}
			if s.RestartLSN, err = parseLSNOrZero(lsn); err != nil {
				return fmt.Errorf("replicate: list slots: %w", err)
			}
			out = append(out, s)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("replicate: list slots: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
