package replicate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// This file is run-time settings: the server's own description of its
// settings (pg_settings), a check of a value against it, and the
// cluster-wide parameters a manager applies without a restart where
// PostgreSQL allows (ApplyParameters).

// Setting is one row of pg_settings: what the server says about a
// setting, enough to check a value without applying it.
type Setting struct {
	Name string `json:"name"`
	// Value is the value in effect, in Unit.
	Value string `json:"value"`
	// Unit is the base unit of integer and real settings ("8kB", "ms",
	// ...), "" when none.
	Unit string `json:"unit,omitempty"`
	// Type is bool, integer, real, string or enum.
	Type string `json:"type"`
	// Context says when a change takes effect: postmaster (restart),
	// sighup (reload), superuser, user, ... .
	Context  string   `json:"context"`
	Min, Max string   `json:"-"`
	Enum     []string `json:"enum,omitempty"`
	// PendingRestart: the configuration files hold a value that takes
	// effect only after a restart.
	PendingRestart bool `json:"pending_restart,omitempty"`
}

// Settings returns pg_settings of the running server, by name.
func (i *Instance) Settings(ctx context.Context) (map[string]Setting, error) {
	out := map[string]Setting{}
	err := i.withAdmin(ctx, "settings", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT name, coalesce(setting, ''), coalesce(unit, ''), vartype, context,
			coalesce(min_val, ''), coalesce(max_val, ''), coalesce(enumvals, '{}'), pending_restart FROM pg_settings`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var s Setting
			if err := rows.Scan(&s.Name, &s.Value, &s.Unit, &s.Type, &s.Context, &s.Min, &s.Max, &s.Enum, &s.PendingRestart); err != nil {
				return err
			}
			out[s.Name] = s
		}
		return rows.Err()
	})
	return out, err
}

// ErrBadParameter is returned, wrapped, for a parameter value the server
// would reject.
var ErrBadParameter = errors.New("replicate: invalid parameter")

// CheckParameter checks value for setting s the way the server parses
// configuration files: booleans and enums by their accepted spellings,
// integers and reals with an optional unit, within the setting's range.
// It returns an error wrapping ErrBadParameter that names the setting
// and says what it accepts.
func CheckParameter(s Setting, value string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s = %q: %s", ErrBadParameter, s.Name, value, fmt.Sprintf(format, args...))
	}
	v := strings.TrimSpace(value)
	switch s.Type {
	case "bool":
		if !parseBool(v) {
			return bad("want a boolean (on, off, true, false, yes, no, 1, 0)")
		}
	case "enum":
		if !slices.ContainsFunc(s.Enum, func(e string) bool { return strings.EqualFold(e, v) }) {
			return bad("want one of %s", strings.Join(s.Enum, ", "))
		}
	case "integer", "real":
		n, err := parseWithUnit(v, s.Unit, s.Type == "integer")
		if err != nil {
			return bad("%v", err)
		}
		lo, err1 := strconv.ParseFloat(s.Min, 64)
		hi, err2 := strconv.ParseFloat(s.Max, 64)
		if err1 == nil && err2 == nil && (n < lo || n > hi) {
			unit := s.Unit
			if unit != "" {
				unit = " (in " + unit + ")"
			}
			return bad("outside the allowed range %s..%s%s", s.Min, s.Max, unit)
		}
	case "string":
		if strings.ContainsAny(value, "\n\r\x00") {
			return bad("must be one line")
		}
	}
	return nil
}

func parseBool(v string) bool {
	v = strings.ToLower(v)
	for _, w := range []string{"on", "off", "true", "false", "yes", "no", "1", "0"} {
		if v == w {
			return true
		}
	}
	// PostgreSQL also takes unique prefixes of true/false/yes/no.
	if v == "" || v == "o" {
		return false
	}
	for _, w := range []string{"true", "false", "yes", "no"} {
		if strings.HasPrefix(w, v) {
			return true
		}
	}
	return false
}

var numUnit = regexp.MustCompile(`^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|0[xX][0-9a-fA-F]+)\s*([a-zA-Z]*)$`)

// memory units in bytes, time units in microseconds, as PostgreSQL's
// guc.c accepts them (case-sensitive).
var (
	memUnits  = map[string]float64{"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
	timeUnits = map[string]float64{"us": 1, "ms": 1e3, "s": 1e6, "min": 60e6, "h": 3600e6, "d": 86400e6}
)

// parseWithUnit parses an integer or real setting's value, with an
// optional unit, into the setting's base unit.
func parseWithUnit(v, base string, integer bool) (float64, error) {
	m := numUnit.FindStringSubmatch(v)
	if m == nil {
		return 0, errors.New("want a number, optionally with a unit")
	}
	var n float64
	if strings.HasPrefix(strings.ToLower(m[1]), "0x") {
		u, err := strconv.ParseUint(m[1][2:], 16, 64)
		if err != nil {
			return 0, err
		}
		n = float64(u)
	} else {
		f, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return 0, errors.New("want a number")
		}
		n = f
	}
	if m[2] == "" {
		if integer && n != math.Trunc(n) {
			// PostgreSQL rounds a fractional integer; accept it.
			n = math.Round(n)
		}
		return n, nil
	}
	scale, baseScale, ok := unitScale(m[2], base)
	if !ok {
		if base == "" {
			return 0, fmt.Errorf("takes no unit, got %q", m[2])
		}
		return 0, fmt.Errorf("unit %q does not fit this setting (its unit is %s; use %s)", m[2], base, validUnits(base))
	}
	return math.Round(n*scale/baseScale*1e6) / 1e6, nil
}

// unitScale returns the sizes of unit and of the setting's base unit in
// one family (bytes or microseconds).
func unitScale(unit, base string) (float64, float64, bool) {
	if b, ok := baseMem(base); ok {
		s, ok := memUnits[unit]
		return s, b, ok
	}
	if b, ok := timeUnits[base]; ok {
		s, ok := timeUnits[unit]
		return s, b, ok
	}
	return 0, 0, false
}

// baseMem parses a memory base unit such as "8kB" or "MB".
func baseMem(base string) (float64, bool) {
	i := strings.IndexFunc(base, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		return 0, false
	}
	u, ok := memUnits[base[i:]]
	if !ok {
		return 0, false
	}
	k := 1.0
	if i > 0 {
		n, err := strconv.Atoi(base[:i])
		if err != nil {
			return 0, false
		}
		k = float64(n)
	}
	return k * u, true
}

func validUnits(base string) string {
	if _, ok := baseMem(base); ok {
		return "B, kB, MB, GB or TB"
	}
	return "us, ms, s, min, h or d"
}

// Reload makes the running server read its configuration files again
// (pg_reload_conf) and returns the settings that then wait for a restart,
// sorted, like ApplyParameters. It returns ErrNotRunning when the server
// is down.
func (i *Instance) Reload(ctx context.Context) ([]string, error) {
	if i.running() == nil {
		return nil, ErrNotRunning
	}
	var pending []string
	err := i.withAdmin(ctx, "reload", func(c *pgx.Conn) error {
		if _, err := c.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			return err
		}
		var err error
		pending, err = pendingRestart(ctx, c)
		return err
	})
	if err == nil {
		i.log.Info("configuration reloaded", "pending_restart", pending)
	}
	return pending, err
}

// pendingRestart lists the settings whose value in the files takes effect
// only after a restart. pg_file_settings reads the files now, so it does
// not depend on when this session processes a reload: an entry that could
// not be applied is one that needs a restart.
func pendingRestart(ctx context.Context, c *pgx.Conn) ([]string, error) {
	rows, err := c.Query(ctx, `SELECT DISTINCT name FROM pg_file_settings WHERE error = 'setting could not be applied'
		UNION SELECT name FROM pg_settings WHERE pending_restart ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// clusterConfFile holds the cluster-wide parameters a manager applies
// (ApplyParameters); postgresql.conf includes it before pgha.conf, so
// that Config.Parameters (node-local) win.
const clusterConfFile = "pgha-cluster.conf"

// ApplyParameters writes params (the cluster-wide parameters, with this
// node's overrides applied) to the configuration and, when the server
// runs and they changed, reloads it. It returns the settings whose new
// value takes effect only after a restart (pg_settings.pending_restart),
// sorted. Config.Parameters keep precedence over params. Names set from
// Config (port, listen_addresses, ...) are refused like in Config.
func (i *Instance) ApplyParameters(ctx context.Context, params map[string]string) ([]string, error) {
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if err := checkParamName(k, params[k], i.cfg.TLS.Enabled()); err != nil {
			return nil, err
		}
	}
	content := clusterConf(params)
	path := filepath.Join(i.cfg.DataDir, clusterConfFile)
	changed, err := i.writeIfChanged(path, []byte(content))
	if err != nil {
		return nil, err
	}
	if i.running() == nil {
		return nil, nil
	}
	var pending []string
	err = i.withAdmin(ctx, "apply parameters", func(c *pgx.Conn) error {
		if changed {
			if _, err := c.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
				return err
			}
		}
		var err error
		pending, err = pendingRestart(ctx, c)
		return err
	})
	if changed && err == nil {
		i.log.Info("cluster parameters applied", "file", path, "pending_restart", pending)
	}
	return pending, err
}

// clusterConf is the content of pgha-cluster.conf.
func clusterConf(params map[string]string) string {
	var b strings.Builder
	b.WriteString("# Written by github.com/pgha/pgha from the cluster's config record; edits are lost.\n")
	b.WriteString("# Change it with pghactl edit-config; node-local Parameters (pgha.conf) win.\n")
	for _, k := range slices.Sorted(maps.Keys(params)) {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(params[k]))
	}
	return b.String()
}

// managedParams are set by pgha itself and may not be cluster parameters.
var managedParams = map[string]string{
	"synchronous_standby_names": "ha manages it from the sync mode",
	"primary_conninfo":          "set by Follow and Clone",
	"primary_slot_name":         "set by Follow and Clone",
	"cluster_name":              "it is the node's name",
	"data_directory":            "it is Config.DataDir",
	"hba_file":                  "pgha writes pg_hba.conf",
	"ident_file":                "it is node-local",
	"config_file":               "it is node-local",
}

// checkParamName refuses a cluster parameter that is not a setting name,
// that Config or pgha sets, or whose value is not one line.
func checkParamName(k, v string, tls bool) error {
	switch {
	case !paramRE.MatchString(k):
		return fmt.Errorf("%w: %q is not a PostgreSQL setting name (lower-case letters, digits, '_', '.')", ErrBadParameter, k)
	case nodeParams[k]:
		return fmt.Errorf("%w: %s is set from each node's Config (ListenAddresses, Port, SocketDir), not cluster-wide", ErrBadParameter, k)
	case managedParams[k] != "":
		return fmt.Errorf("%w: %s is managed by pgha: %s", ErrBadParameter, k, managedParams[k])
	case tls && tlsParams[k]:
		return fmt.Errorf("%w: %s is set from Config.TLS when TLS is on", ErrBadParameter, k)
	case strings.ContainsAny(v, "\n\r\x00"):
		return fmt.Errorf("%w: %s: the value must be one line", ErrBadParameter, k)
	}
	return nil
}

// CheckParameters checks cluster parameters against the server's
// settings (see [CheckParameter]): unknown names, names pgha or each
// node's Config sets, and values the server would reject are errors
// wrapping ErrBadParameter, all of them joined.
func CheckParameters(settings map[string]Setting, params map[string]string) error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if err := checkParamName(k, params[k], false); err != nil {
			errs = append(errs, err)
			continue
		}
		s, ok := settings[k]
		if !ok {
			if strings.Contains(k, ".") {
				continue // a custom (extension) setting: free text
			}
			errs = append(errs, fmt.Errorf("%w: %s is not a setting this server knows (check the spelling, or load the extension that defines it)", ErrBadParameter, k))
			continue
		}
		if err := CheckParameter(s, params[k]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
