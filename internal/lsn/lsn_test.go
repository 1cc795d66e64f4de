package lsn_test

import (
	"strings"
	"testing"

	"github.com/pgha/pgha/internal/lsn"
)

func TestParseFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		out  string
	}{
		{"0/0", 0, "0/0"},
		{"16/B374D848", 0x16_B374D848, "16/B374D848"},
		{"16/b374d848", 0x16_B374D848, "16/B374D848"},
		{"00000001/00000002", 1<<32 | 2, "1/2"},
		{"FFFFFFFF/FFFFFFFF", 1<<64 - 1, "FFFFFFFF/FFFFFFFF"},
	} {
		got, err := lsn.Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %#x, %v; want %#x", tc.in, got, err, tc.want)
		}
		if s := lsn.Format(got); s != tc.out {
			t.Errorf("Format(%#x) = %q; want %q", got, s, tc.out)
		}
	}
	for _, bad := range []string{"", "/", "1/", "/1", "1", "1/2/3", "123456789/0", "0/123456789", "g/0", "0/-1", "+1/0", " 1/0"} {
		if _, err := lsn.Parse(bad); err == nil || !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("Parse(%q) error = %v; want one naming the input", bad, err)
		}
	}
}
