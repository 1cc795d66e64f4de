// Package lsn parses and formats PostgreSQL write-ahead log positions
// (pg_lsn) as plain uint64s, for the packages that must not import
// replicate (driver: a pool pulls in no server code). replicate.LSN is the
// public type built on it; use that wherever replicate is imported.
package lsn

import (
	"fmt"
	"strconv"
	"strings"
)

// Parse parses the text form of an LSN, as PostgreSQL prints it
// ("16/B374D848"): the high and low 32 bits in hexadecimal, 1 to 8 digits
// each, in either case, separated by a slash. Its error names the input
// and the expected form.
func Parse(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || len(hi) == 0 || len(lo) == 0 || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("LSN %q: want two hexadecimal numbers separated by '/', e.g. 16/B374D848", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: high half: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("LSN %q: low half: %w", s, err)
	}
	return h<<32 | l, nil
}

// Format formats l as PostgreSQL does: upper-case hexadecimal halves
// without leading zeros, e.g. "16/B374D848"; zero is "0/0".
func Format(l uint64) string {
	return fmt.Sprintf("%X/%X", l>>32, l&0xFFFFFFFF)
}
