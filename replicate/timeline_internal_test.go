package replicate

import (
	"strings"
	"testing"
)

func TestParseHistorySwitch(t *testing.T) {
	cases := []struct {
		content string
		tl      uint32
		want    LSN
		err     string
	}{
		{"1\t0/3000000\tno recovery target specified\n", 2, 0x3000000, ""},
		{"1\t0/3000000\tno recovery target specified\n\n2\t0/5A000A0\tno recovery target specified\n", 3, 0x5A000A0, ""},
		{"# comment\n1\t1/0\treason\n", 2, 1 << 32, ""},
		{"", 2, 0, "has no entry"},
		{"1\n", 2, 0, "has no switch point"},
		{"2\t0/1\tr\n1\t0/2\tr\n", 3, 0, "does not increase"},
		{"x\t0/1\tr\n", 2, 0, "parent timeline"},
		{"3\t0/1\tr\n", 2, 0, "is not below 2"},
		{"1\tnope\tr\n", 2, 0, "switch point"},
	}
	for _, tc := range cases {
		got, err := parseHistorySwitch(tc.content, tc.tl)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("parseHistorySwitch(%q, %d) = %v, %v; want %v", tc.content, tc.tl, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseHistorySwitch(%q, %d) error = %v; want one containing %q", tc.content, tc.tl, err, tc.err)
		}
	}
}

func FuzzParseHistorySwitch(f *testing.F) {
	f.Add("1\t0/3000000\tno recovery target specified\n", uint32(2))
	f.Add("1\t0/3000000\tr\n\n2\t0/5A000A0\tr\n", uint32(3))
	f.Add("", uint32(1))
	f.Fuzz(func(t *testing.T, content string, tl uint32) {
		lsn, err := parseHistorySwitch(content, tl)
		if err != nil {
			if !strings.Contains(err.Error(), "timeline history") {
				t.Fatalf("error %q does not say it is about the timeline history", err)
			}
			return
		}
		if lsn.String() == "" {
			t.Fatal("empty LSN")
		}
	})
}
