package driver_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/pgha/pgha/driver"
)

// FuzzParseCausalToken: a token that parses prints back to a token that
// parses to the same position; a rejection names the input.
func FuzzParseCausalToken(f *testing.F) {
	for _, s := range []string{"0/16B3748", "16/B374D848", "0/0", "FFFFFFFF/FFFFFFFF", "100000000/0", "1/", "/1", "", "x/y", "1/2/3", "+1/0", " 0/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := driver.ParseCausalToken(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "driver: causal token ") || !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("ParseCausalToken(%q): error %q does not name the input", s, err)
			}
			if !tok.IsZero() {
				t.Fatalf("ParseCausalToken(%q) = %v with an error", s, tok)
			}
			return
		}
		back, err := driver.ParseCausalToken(tok.String())
		if err != nil || back != tok {
			t.Fatalf("ParseCausalToken(%q) = %v; parsing its String() gives %v, %v", s, tok, back, err)
		}
		// It is the position the two hexadecimal halves name.
		hi, lo, _ := strings.Cut(s, "/")
		h, _ := strconv.ParseUint(hi, 16, 64)
		l, _ := strconv.ParseUint(lo, 16, 64)
		if want := fmt.Sprintf("%X/%X", h, l); want != tok.String() {
			t.Fatalf("ParseCausalToken(%q).String() = %q; want %q", s, tok, want)
		}
	})
}
