package replicate

import (
	"fmt"
	"strconv"
	"strings"
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
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || len(hi) == 0 || len(lo) == 0 || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("replicate: parse LSN %q: want two hexadecimal numbers separated by '/', e.g. 16/B374D848", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("replicate: parse LSN %q: high half: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("replicate: parse LSN %q: low half: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// String formats l as PostgreSQL does: upper-case hexadecimal halves without
// leading zeros, e.g. "16/B374D848"; zero is "0/0".
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xFFFFFFFF)
}

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
