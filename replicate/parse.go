package replicate

import (
	"fmt"
	"strconv"
	"strings"
)

// Parsers of text that PostgreSQL and its tools hand back: pg_controldata
// output, PG_VERSION, postmaster.pid, postgres --version, WAL file names,
// IDENTIFY_SYSTEM rows and /proc/<pid>/stat. Each is a pure function with
// a fuzz target (parse_fuzz_test.go); each rejects what it cannot use with
// an error naming the source and the field, never a silent zero.

// maxParseInput bounds every parser's input: the texts above are a few
// kilobytes at most; anything bigger is not what we expect.
const maxParseInput = 1 << 20

// controlFile holds the pg_controldata fields replicate uses.
type controlFile struct {
	SystemID      uint64 // "Database system identifier"
	Timeline      uint32 // "Latest checkpoint's TimeLineID"
	State         string // "Database cluster state", e.g. "shut down"
	CheckpointLSN LSN    // "Latest checkpoint location"
}

// pg_controldata field names (the C locale: run() sets LC_ALL=C).
const (
	cdSystemID   = "Database system identifier"
	cdTimeline   = "Latest checkpoint's TimeLineID"
	cdState      = "Database cluster state"
	cdCheckpoint = "Latest checkpoint location"
)

// parseControlData parses the output of pg_controldata. It returns an
// error naming the first field that is missing or does not parse.
func parseControlData(out string) (controlFile, error) {
	var c controlFile
	if len(out) > maxParseInput {
		return c, fmt.Errorf("replicate: pg_controldata printed %d bytes, more than the %d expected", len(out), maxParseInput)
	}
	m := make(map[string]string)
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		if _, dup := m[k]; !dup {
			m[k] = strings.TrimSpace(v)
		}
	}
	get := func(k string) (string, error) {
		v, ok := m[k]
		if !ok {
			return "", fmt.Errorf("replicate: pg_controldata: no %q line in its output", k)
		}
		return v, nil
	}
	v, err := get(cdSystemID)
	if err != nil {
		return controlFile{}, err
	}
	if c.SystemID, err = parseSystemID(v); err != nil {
		return controlFile{}, fmt.Errorf("replicate: pg_controldata: %q: %w", cdSystemID, err)
	}
	if v, err = get(cdTimeline); err != nil {
		return controlFile{}, err
	}
	if c.Timeline, err = parseTimeline(v, 10); err != nil {
		return controlFile{}, fmt.Errorf("replicate: pg_controldata: %q: %w", cdTimeline, err)
	}
	if c.State, err = get(cdState); err != nil {
		return controlFile{}, err
	}
	if c.State == "" {
		return controlFile{}, fmt.Errorf("replicate: pg_controldata: %q is empty", cdState)
	}
	if v, err = get(cdCheckpoint); err != nil {
		return controlFile{}, err
	}
	if c.CheckpointLSN, err = ParseLSN(v); err != nil {
		return controlFile{}, fmt.Errorf("replicate: pg_controldata: %q: %w", cdCheckpoint, err)
	}
	return c, nil
}

// parseSystemID parses a PostgreSQL system identifier: decimal digits only,
// at most 2^64-1.
func parseSystemID(s string) (uint64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("system identifier %.40q is not a decimal number", s)
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("system identifier %.40q is out of range", s)
	}
	return id, nil
}

// parseTimeline parses a timeline ID in base 10 or 16 (WAL file names):
// digits only, 1 to 2^32-1 (timeline 0 does not exist).
func parseTimeline(s string, base int) (uint32, error) {
	digits := "0123456789"
	if base == 16 {
		digits += "abcdefABCDEF"
	}
	if s == "" || len(s) > 10 || strings.TrimLeft(s, digits) != "" {
		return 0, fmt.Errorf("timeline %.40q is not a base-%d number", s, base)
	}
	t, err := strconv.ParseUint(s, base, 32)
	if err != nil {
		return 0, fmt.Errorf("timeline %q is out of range", s)
	}
	if t == 0 {
		return 0, fmt.Errorf("timeline %q: timelines start at 1", s)
	}
	return uint32(t), nil
}

// parsePGVersion parses the content of a data directory's PG_VERSION file:
// the major version number and a newline, e.g. "15\n".
func parsePGVersion(b []byte) (int, error) {
	s := strings.TrimSpace(string(b[:min(len(b), 64)]))
	if s == "" || len(b) > 64 || strings.TrimLeft(s, "0123456789") != "" || s[0] == '0' {
		return 0, fmt.Errorf("PG_VERSION holds %.40q, want a major version number such as \"15\"", b)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("PG_VERSION holds %.40q, want a major version number such as \"15\"", b)
	}
	return n, nil
}

// pidFileInfo is what replicate reads from postmaster.pid: line 1, the
// postmaster's PID, and line 8, its status ("starting", "ready", "standby",
// "stopping"; empty while the postmaster has not written it yet).
type pidFileInfo struct {
	PID    int
	Status string
}

// parsePIDFile parses postmaster.pid. The PID must be a positive decimal
// number: a zero or negative one would make kill(2) signal a process group
// or every process.
func parsePIDFile(b []byte) (pidFileInfo, error) {
	if len(b) > maxParseInput {
		return pidFileInfo{}, fmt.Errorf("postmaster.pid is %d bytes, more than the %d expected", len(b), maxParseInput)
	}
	lines := strings.Split(string(b), "\n")
	first := strings.TrimSpace(lines[0])
	if first == "" || strings.TrimLeft(first, "0123456789") != "" {
		return pidFileInfo{}, fmt.Errorf("postmaster.pid line 1 is %.40q, want the postmaster's PID", first)
	}
	pid, err := strconv.Atoi(first)
	if err != nil || pid <= 0 || pid > 1<<22 {
		return pidFileInfo{}, fmt.Errorf("postmaster.pid line 1 is %.40q, want a PID between 1 and %d", first, 1<<22)
	}
	info := pidFileInfo{PID: pid}
	if len(lines) >= 8 {
		info.Status = strings.TrimSpace(lines[7])
	}
	return info, nil
}

// parseServerVersion parses "postgres --version" output, e.g. "postgres
// (PostgreSQL) 15.14 (Debian 15.14-1.pgdg120+1)", into the major version
// (15) and the version ("15.14").
func parseServerVersion(out string) (major int, version string, err error) {
	if len(out) > maxParseInput {
		out = out[:maxParseInput]
	}
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return 0, "", fmt.Errorf("printed %.200q, want \"postgres (PostgreSQL) N.M\"", strings.TrimSpace(out))
	}
	if len(m[1]) > 4 || m[1][0] == '0' {
		return 0, "", fmt.Errorf("printed version %.40q, want a major version from 1 to 9999 without leading zeros", m[1])
	}
	major, err = strconv.Atoi(m[1])
	if err != nil || major == 0 {
		return 0, "", fmt.Errorf("printed version %.40q, want a major version number", m[1])
	}
	return major, m[1] + m[2], nil
}

// procStat is what replicate reads from /proc/<pid>/stat.
type procStat struct {
	State byte // R, S, D, Z, X, ...
	PPID  int
}

// parseProcStat parses /proc/<pid>/stat: "pid (comm) state ppid ...". The
// command name may hold spaces and parentheses, so the fields are read
// after its last ')'.
func parseProcStat(b []byte) (procStat, error) {
	s := string(b[:min(len(b), 4096)])
	j := strings.LastIndexByte(s, ')')
	if j < 0 {
		return procStat{}, fmt.Errorf("/proc stat %.60q has no ')' after the command name", s)
	}
	f := strings.Fields(s[j+1:])
	if len(f) < 2 || len(f[0]) != 1 || !('A' <= f[0][0] && f[0][0] <= 'Z' || 'a' <= f[0][0] && f[0][0] <= 'z') {
		return procStat{}, fmt.Errorf("/proc stat %.60q: want a one-letter state and the parent PID after the command name", s)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil || ppid < 0 {
		return procStat{}, fmt.Errorf("/proc stat %.60q: parent PID %.20q is not a number", s, f[1])
	}
	return procStat{State: f[0][0], PPID: ppid}, nil
}
