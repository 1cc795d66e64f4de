package replicate

import (
	"fmt"

	"github.com/pgha/pgha/internal/lsn"
)

// LSN is a PostgreSQL write-ahead log position (pg_lsn): a byte offset into
// the WAL stream. Its text form is two hexadecimal numbers, the high and low
// 32 bits, separated by a slash: "16/B374D848". The zero LSN ("0/0") means
// "unknown" or "not applicable" in [Status].
type LSN uint64

// ParseLSN parses the text form of an LSN, as PostgreSQL prints it
// ("16/B374D848"). Each half is 1 to 8 hexadecimal digits, in either case.
// It returns an error naming the input for anything else.
func ParseLSN(s string) (LSN, error) {
	l, err := lsn.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("replicate: parse %w", err)
	}
	return LSN(l), nil
}

// String formats l as PostgreSQL does: upper-case hexadecimal halves without
// leading zeros, e.g. "16/B374D848"; zero is "0/0".
func (l LSN) String() string { return lsn.Format(uint64(l)) }

// Sub returns l - o in bytes: positive when l is ahead of o, negative when it
// is behind. It is what pg_wal_lsn_diff(l, o) returns.
func (l LSN) Sub(o LSN) int64 { return int64(l - o) }

// BytesAhead returns how many bytes l is ahead of o, or 0 when l is not ahead:
// the lag of a standby that replayed o behind a primary at l is
// l.BytesAhead(o).
func (l LSN) BytesAhead(o LSN) uint64 {
	if l <= o {
		return 0
	}
	return uint64(l - o)
}

// MarshalText implements encoding.TextMarshaler, so LSNs appear in JSON
// records in their PostgreSQL text form.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with [ParseLSN].
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// parseLSNOrZero parses a nullable text LSN from a query: "" means 0.
func parseLSNOrZero(s *string) (LSN, error) {
	if s == nil || *s == "" {
		return 0, nil
	}
	return ParseLSN(*s)
}
