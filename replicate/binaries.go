package replicate

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// requiredBinaries are the programs an Instance runs.
var requiredBinaries = []string{"postgres", "initdb", "pg_basebackup", "pg_rewind", "pg_controldata"}

// binaries are the resolved paths of the PostgreSQL programs.
type binaries struct {
	dir     string
	major   int    // e.g. 15
	version string // e.g. "15.14"
}

func (b binaries) path(name string) string { return filepath.Join(b.dir, name) }

// binDirCandidates are searched, newest version first, when neither
// Config.BinDir, pg_config nor PATH give a directory.
var binDirCandidates = []string{
	"/usr/lib/postgresql/*/bin",
	"/usr/pgsql-*/bin",
	"/usr/local/pgsql/bin",
	"/opt/homebrew/opt/postgresql*/bin",
	"/usr/local/opt/postgresql*/bin",
}

// FindBinDir returns the directory holding the PostgreSQL server binaries
// (postgres, initdb, pg_basebackup, pg_rewind, pg_controldata), searched as
// documented on [Config.BinDir]. dir, when not empty, is the only place
// looked at. The error wraps [ErrNoBinaries] and names every place searched.
func FindBinDir(dir string) (string, error) {
	var searched []string
	try := func(what, d string) bool {
		if d == "" {
			return false
		}
		missing := missingBinaries(d)
		if len(missing) == 0 {
			return true
		}
		searched = append(searched, fmt.Sprintf("%s %s (missing %s)", what, d, strings.Join(missing, ", ")))
		return false
	}
	if dir != "" {
		if try("BinDir", dir) {
			return dir, nil
		}
		return "", fmt.Errorf("%w: searched %s", ErrNoBinaries, strings.Join(searched, "; "))
	}
	if p, err := exec.LookPath("pg_config"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, p, "--bindir").Output()
		cancel()
		if d := strings.TrimSpace(string(out)); err == nil && try("pg_config --bindir:", d) {
			return d, nil
		}
	} else {
		searched = append(searched, "pg_config on PATH (not found)")
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		if d := filepath.Dir(p); try("initdb on PATH:", d) {
			return d, nil
		}
	} else {
		searched = append(searched, "initdb on PATH (not found)")
	}
	var dirs []string
	for _, g := range binDirCandidates {
		m, _ := filepath.Glob(g)
		dirs = append(dirs, m...)
	}
	sort.Slice(dirs, func(i, j int) bool { return versionKey(dirs[i]) > versionKey(dirs[j]) })
	for _, d := range dirs {
		if try("", d) {
			return d, nil
		}
	}
	searched = append(searched, strings.Join(binDirCandidates, ", "))
	return "", fmt.Errorf("%w: searched %s; install them (Debian/Ubuntu: apt-get install postgresql) or set BinDir", ErrNoBinaries, strings.Join(searched, "; "))
}

func missingBinaries(dir string) []string {
	var missing []string
	for _, b := range requiredBinaries {
		fi, err := os.Stat(filepath.Join(dir, b))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	return missing
}

var digitsRE = regexp.MustCompile(`\d+`)

// versionKey orders directories by the first number in their path, so
// /usr/lib/postgresql/16/bin sorts before /usr/lib/postgresql/9/bin.
func versionKey(p string) int {
	n, _ := strconv.Atoi(digitsRE.FindString(p))
	return n
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(\.\d+)?`)

// resolveBinaries finds the binaries and asks postgres for its version.
func resolveBinaries(dir string) (binaries, error) {
	d, err := FindBinDir(dir)
	if err != nil {
		return binaries{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(d, "postgres"), "--version")
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return binaries{}, &CommandError{Path: cmd.Path, Args: []string{"--version"}, ExitCode: exitCode(err), Stderr: tail(out.String()), Err: err}
	}
	major, version, err := parseServerVersion(out.String())
	if err != nil {
		return binaries{}, fmt.Errorf("replicate: %s --version %w", cmd.Path, err)
	}
	if major < 13 {
		return binaries{}, fmt.Errorf("replicate: PostgreSQL %s in %s is too old: replicate needs 13 or newer", version, d)
	}
	return binaries{dir: d, major: major, version: version}, nil
}
