package replicate

import (
	"strings"
	"testing"
)

// TestParseHistory checks the switch point of a timeline (its history's
// last entry) and the rejections.
func TestParseHistory(t *testing.T) {
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
		var got LSN
		h, err := ParseHistory(tc.content, tc.tl)
		if err == nil {
			got = h[len(h)-1].Switch
		}
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParseHistory(%q, %d) switch = %v, %v; want %v", tc.content, tc.tl, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseHistory(%q, %d) error = %v; want one containing %q", tc.content, tc.tl, err, tc.err)
		}
	}
}

func FuzzParseHistory(f *testing.F) {
	f.Add("1\t0/3000000\tno recovery target specified\n", uint32(2))
	f.Add("1\t0/3000000\tr\n\n2\t0/5A000A0\tr\n", uint32(3))
	f.Add("", uint32(1))
	f.Fuzz(func(t *testing.T, content string, tl uint32) {
		h, err := ParseHistory(content, tl)
		if err != nil {
			if !strings.Contains(err.Error(), "timeline history") {
				t.Fatalf("error %q does not say it is about the timeline history", err)
			}
			return
		}
		if len(h) == 0 {
			t.Fatal("accepted a history without an entry")
		}
		for i, e := range h {
			if e.Parent >= tl || i > 0 && e.Parent <= h[i-1].Parent {
				t.Fatalf("accepted parents %v for timeline %d: want increasing, below it", h, tl)
			}
		}
		if at, ok := forkPoint(h, h[0].Parent); !ok || at != h[0].Switch {
			t.Fatalf("forkPoint(%v, %d) = %v, %v", h, h[0].Parent, at, ok)
		}
	})
}
