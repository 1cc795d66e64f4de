package replicate

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Fuzz targets for every text replicate reads back from PostgreSQL, its
// tools or the data directory, and for the quoting of what it writes into
// postgresql.conf and primary_conninfo. Seeds are real outputs of
// PostgreSQL 15 (pg_controldata, postmaster.pid, PG_VERSION, postgres
// --version, /proc/<pid>/stat) and malformed variants; more live in
// testdata/fuzz/<Target>/.

// pgControlDataStopped is real pg_controldata output (PostgreSQL 15, shut
// down), cut after the fields replicate reads and a few more.
const pgControlDataStopped = `pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7710818547489302343
Database cluster state:               shut down
pg_control last modified:             Sun Nov 22 02:34:05 2026
Latest checkpoint location:           0/1500790
Latest checkpoint's REDO location:    0/1500790
Latest checkpoint's REDO WAL file:    000000010000000000000001
Latest checkpoint's TimeLineID:       1
Latest checkpoint's PrevTimeLineID:   1
Latest checkpoint's full_page_writes: on
Latest checkpoint's NextXID:          0:724
`

// pgPIDFile is a real postmaster.pid of a running PostgreSQL 15.
const pgPIDFile = "10063\n/tmp/seedpg/d\n1795314845\n54999\n/tmp/seedpg\n\n 10010642   8454393\nready   \n"

func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/0", "16/B374D848", "16/b374d848", "FFFFFFFF/FFFFFFFF", "0/1500790",
		"", "/", "1/", "/1", "1/2/3", "100000000/0", "-1/0", "+1/0", " 1/0", "0x1/0", "1_0/0", "G/0", "0/١"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "replicate: parse LSN ") || !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("ParseLSN(%q): error %q does not name the input", s, err)
			}
			if l != 0 {
				t.Fatalf("ParseLSN(%q) = %v with an error", s, l)
			}
			return
		}
		// What parses is PostgreSQL's form, up to case and leading zeros.
		back, err := ParseLSN(l.String())
		if err != nil || back != l {
			t.Fatalf("ParseLSN(%q) = %v; ParseLSN(String()) = %v, %v", s, l, back, err)
		}
		hi, lo, _ := strings.Cut(s, "/")
		if h, _ := strconv.ParseUint(hi, 16, 64); h != uint64(l)>>32 {
			t.Fatalf("ParseLSN(%q) = %v: high half %x", s, l, h)
		}
		if lw, _ := strconv.ParseUint(lo, 16, 64); lw != uint64(l)&0xFFFFFFFF {
			t.Fatalf("ParseLSN(%q) = %v: low half %x", s, l, lw)
		}
	})
}

func FuzzLSNRoundTrip(f *testing.F) {
	for _, v := range []uint64{0, 1, 0x16_B374D848, 1 << 32, ^uint64(0)} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v uint64) {
		l := LSN(v)
		s := l.String()
		back, err := ParseLSN(s)
		if err != nil || back != l {
			t.Fatalf("LSN(%#x).String() = %q; ParseLSN = %v, %v", v, s, back, err)
		}
		if s != strings.ToUpper(s) || strings.HasPrefix(s, "0") && !strings.HasPrefix(s, "0/") {
			t.Fatalf("LSN(%#x).String() = %q: want upper case without leading zeros", v, s)
		}
		b, _ := l.MarshalText()
		var u LSN
		if err := u.UnmarshalText(b); err != nil || u != l {
			t.Fatalf("LSN(%#x): text round trip %q gave %v, %v", v, b, u, err)
		}
	})
}

var controlFields = []string{cdSystemID, cdTimeline, cdState, cdCheckpoint}

func FuzzControlData(f *testing.F) {
	f.Add(pgControlDataStopped)
	f.Add(strings.Replace(pgControlDataStopped, "shut down", "in production", 1))
	f.Add(strings.Replace(pgControlDataStopped, "TimeLineID:       1", "TimeLineID:       0", 1))
	f.Add(strings.Replace(pgControlDataStopped, "7710818547489302343", "-7710818547489302343", 1))
	f.Add(strings.Replace(pgControlDataStopped, "0/1500790", "0/15007900A", 1))
	f.Add(strings.Replace(pgControlDataStopped, "Database cluster state:               shut down\n", "", 1))
	f.Add("pg_controldata: fatal: could not open file \"global/pg_control\" for reading: No such file or directory\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, out string) {
		c, err := parseControlData(out)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "replicate: pg_controldata") {
				t.Fatalf("error %q does not say pg_controldata", msg)
			}
			named := strings.Contains(msg, "bytes")
			for _, fld := range controlFields {
				named = named || strings.Contains(msg, strconv.Quote(fld))
			}
			if !named {
				t.Fatalf("error %q names no field", msg)
			}
			if c != (controlFile{}) {
				t.Fatalf("parseControlData returned %+v with error %v", c, err)
			}
			return
		}
		if c.Timeline == 0 || c.State == "" {
			t.Fatalf("accepted %+v from %q", c, out)
		}
		// Printed the way pg_controldata prints it, c parses to itself.
		again := fmt.Sprintf("%s: %d\n%s: %d\n%s: %s\n%s: %s\n", cdSystemID, c.SystemID, cdTimeline, c.Timeline, cdState, c.State, cdCheckpoint, c.CheckpointLSN)
		c2, err := parseControlData(again)
		if err != nil || c2 != c {
			t.Fatalf("round trip of %+v: %+v, %v", c, c2, err)
		}
	})
}

func FuzzPGVersion(f *testing.F) {
	for _, s := range []string{"15\n", "13", "9.6\n", "016\n", "\n", "", "15\n16\n", "99999999999999999999", "+15", " 15 ", "1\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := parsePGVersion(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "PG_VERSION holds ") {
				t.Fatalf("error %q does not name PG_VERSION", err)
			}
			return
		}
		if n <= 0 {
			t.Fatalf("parsePGVersion(%q) = %d", b, n)
		}
		if back, err := parsePGVersion([]byte(strconv.Itoa(n) + "\n")); err != nil || back != n {
			t.Fatalf("parsePGVersion(%q) = %d; round trip %d, %v", b, n, back, err)
		}
	})
}

func FuzzPIDFile(f *testing.F) {
	for _, s := range []string{pgPIDFile, "10063\n", "10063", "-1\n/tmp\n", "0\n", "4194305\n", "12a\n", "\n\n\n\n\n\n\n\n", "",
		"99999999999999999999999\n", "+5\n", strings.Replace(pgPIDFile, "ready", "stopping", 1)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := parsePIDFile(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "postmaster.pid ") {
				t.Fatalf("error %q does not name postmaster.pid", err)
			}
			return
		}
		if info.PID <= 0 || info.PID > 1<<22 {
			t.Fatalf("parsePIDFile(%q) accepted PID %d", b, info.PID)
		}
		if strings.ContainsAny(info.Status, "\n") || info.Status != strings.TrimSpace(info.Status) {
			t.Fatalf("parsePIDFile(%q) status %q", b, info.Status)
		}
	})
}

func FuzzServerVersion(f *testing.F) {
	for _, s := range []string{"postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", "postgres (PostgreSQL) 17beta1\n",
		"postgres (PostgreSQL) 9.6.24\n", "postgres (PostgreSQL) 0.1", "postgres (PostgreSQL) 99999999999999999999.1",
		"postgres (PostgreSQL) 16", "bash: postgres: command not found", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		major, version, err := parseServerVersion(out)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "printed ") || !strings.Contains(err.Error(), "want") {
				t.Fatalf("error %q does not say what was printed and what is wanted", err)
			}
			return
		}
		if major <= 0 || !strings.HasPrefix(version, strconv.Itoa(major)) || strings.HasPrefix(version, "0") {
			t.Fatalf("parseServerVersion(%q) = %d, %q", out, major, version)
		}
	})
}

func FuzzProcStat(f *testing.F) {
	for _, s := range []string{"10131 (cat) R 10040 10040 544 0 -1 4194304 125 0 0 0 0 0 0 0 20 0 1 0 1027861 31",
		"1 (postgres: walwriter ) S 10063 10063", "2 (a) b) Z 7 7", "3 (x) X", "4 (x)", "5 x S 1", "6 () RS 1", "7 (y) S -1", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseProcStat(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "/proc stat ") {
				t.Fatalf("error %q does not name /proc stat", err)
			}
			return
		}
		if st.PPID < 0 || !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", rune(st.State)) {
			t.Fatalf("parseProcStat(%q) = %+v", b, st)
		}
	})
}

func FuzzTimeline(f *testing.F) {
	for _, s := range []string{"00000001", "0000000A", "0000000a", "00000000", "FFFFFFFF", "100000000", "1", "", "-1", "+1", "0x1", "1_0", "G"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, hex bool) {
		base := 10
		if hex {
			base = 16
		}
		tli, err := parseTimeline(s, base)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "timeline ") {
				t.Fatalf("error %q does not name the timeline", err)
			}
			return
		}
		if tli == 0 {
			t.Fatalf("parseTimeline(%q, %d) accepted 0", s, base)
		}
		if back, err := parseTimeline(strconv.FormatUint(uint64(tli), base), base); err != nil || back != tli {
			t.Fatalf("parseTimeline(%q, %d) = %d; round trip %d, %v", s, base, tli, back, err)
		}
	})
}

func FuzzSystemID(f *testing.F) {
	for _, s := range []string{"7710818547489302343", "0", "18446744073709551615", "18446744073709551616", "-1", "+1", " 1", "1 ", "", "0x1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := parseSystemID(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "system identifier ") {
				t.Fatalf("error %q does not name the system identifier", err)
			}
			return
		}
		if strconv.FormatUint(id, 10) != strings.TrimLeft(s, "0") && !(id == 0 && strings.Trim(s, "0") == "") {
			t.Fatalf("parseSystemID(%q) = %d", s, id)
		}
	})
}

// gucString is the lexer's STRING token of postgresql.conf (guc-file.l).
var gucString = regexp.MustCompile(`^'([^'\\\n]|\\.|'')*'$`)

// gucScanStr is PostgreSQL's GUC_scanstr (guc-file.l): it strips the quotes
// of a postgresql.conf string and processes its escapes.
func gucScanStr(s string) string {
	s = s[1 : len(s)-1]
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			switch e := s[i]; e {
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case '0', '1', '2', '3', '4', '5', '6', '7':
				v := int(e - '0')
				for k := 0; k < 2 && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '7'; k++ {
					i++
					v = v*8 + int(s[i]-'0')
				}
				b.WriteByte(byte(v))
			default:
				b.WriteByte(e)
			}
		case c == '\'' && i+1 < len(s) && s[i+1] == '\'':
			i++
			b.WriteByte('\'')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func FuzzQuoteConf(f *testing.F) {
	for _, s := range []string{"", "replica", "%m [%p] ", "it's", `C:\pg\data`, `a\b`, "two\nlines", `\\'`, "host='a b' port=5432", "\r\t\\0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.IndexByte(s, 0) >= 0 {
			return // a C string cannot hold NUL; Config.Validate's concern
		}
		q := quoteConf(s)
		if !gucString.MatchString(q) {
			t.Fatalf("quoteConf(%q) = %q is not one postgresql.conf string token", s, q)
		}
		if got := gucScanStr(q); got != s {
			t.Fatalf("quoteConf(%q) = %q: PostgreSQL reads it as %q", s, q, got)
		}
	})
}

// libpqValue is how libpq's conninfo_parse reads one value at the start of
// s: quoted ('...' with backslash escapes) or up to the next isspace()
// character (backslash escapes too). It returns the value and the rest.
func libpqValue(s string) (string, string) {
	var b strings.Builder
	if strings.HasPrefix(s, "'") {
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
				if i < len(s) {
					b.WriteByte(s[i])
				}
			case '\'':
				return b.String(), s[i+1:]
			default:
				b.WriteByte(s[i])
			}
		}
		return b.String() + "<unterminated>", ""
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\n', '\v', '\f', '\r':
			return b.String(), s[i:]
		case '\\':
			i++
			if i < len(s) {
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String(), ""
}

func FuzzQuoteConninfo(f *testing.F) {
	for _, s := range []string{"", "10.0.0.1", "/var/run/postgresql", "a b", "it's", `a\b`, "a\rb", "a\vb", "node-1", "x=y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.IndexByte(s, 0) >= 0 {
			return // a C string cannot hold NUL
		}
		q := quoteConninfo(s)
		got, rest := libpqValue(q + " port=5432")
		if got != s || rest != " port=5432" {
			t.Fatalf("quoteConninfo(%q) = %q: libpq reads %q, then %q", s, q, got, rest)
		}
	})
}

// gucName is a PostgreSQL parameter name.
var gucName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

func FuzzEditAutoConf(f *testing.F) {
	const real = "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n" +
		"primary_conninfo = 'host=10.0.0.1 port=5432 user=replicator'\nprimary_slot_name = 'node2'\nwork_mem = '64MB'\n"
	f.Add(real, "primary_conninfo", "host=10.0.0.2 port=5432", true)
	f.Add(real, "primary_slot_name", "", false)
	f.Add(real, "PRIMARY_CONNINFO", "host='a b'", true)
	f.Add("", "synchronous_standby_names", "ANY 1 (\"a\",\"b\")", true)
	f.Add("primary_conninfo='x'\r\nfoo=bar", "primary_conninfo", `it's \ here`, true)
	f.Fuzz(func(t *testing.T, old, key, val string, set bool) {
		if !gucName.MatchString(key) || strings.IndexByte(val, 0) >= 0 {
			return // keys are PostgreSQL parameter names, chosen by replicate
		}
		var v *string
		if set {
			v = &val
		}
		out := editAutoConf(old, map[string]*string{key: v})
		if !strings.HasSuffix(out, "\n") {
			t.Fatalf("editAutoConf: %q does not end in a newline", out)
		}
		var found []string
		for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			k, rhs, _ := strings.Cut(l, "=")
			if strings.EqualFold(strings.TrimSpace(k), key) {
				found = append(found, strings.TrimSpace(rhs))
			}
		}
		switch {
		case !set && len(found) != 0:
			t.Fatalf("editAutoConf(%q) removing %s left %q", old, key, found)
		case set && (len(found) != 1 || !gucString.MatchString(found[0]) || gucScanStr(found[0]) != val):
			t.Fatalf("editAutoConf(%q) setting %s=%q gave %q", old, key, val, out)
		}
		if again := editAutoConf(out, map[string]*string{key: v}); again != out {
			t.Fatalf("editAutoConf is not idempotent: %q then %q", out, again)
		}
	})
}
