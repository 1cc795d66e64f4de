package keyspace_test

import (
	"bytes"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
)

// One fuzz target per record type. Each checks, for any bytes read from
// etcd:
//   - a rejection is a *RecordError of the right kind whose message starts
//     with "keyspace: <kind> record: " and names the field (or says the
//     JSON does not parse), and the returned record is the zero value;
//   - an accepted record validates, has version 1, passes the type's own
//     invariants, and survives Encode/Decode unchanged (Encode of the
//     decoded record is a fixed point).
// Seeds are realistic records as the manager encodes them and malformed
// ones; more seeds live in testdata/fuzz/<Target>/.

// fuzzRecord runs the checks above for record type T. check holds the
// type's own invariants of an accepted record.
func fuzzRecord[T keyspace.Record](f *testing.F, kind string, seeds []T, raw []string, check func(*testing.T, T)) {
	f.Helper()
	for _, s := range seeds {
		b, err := keyspace.Encode(s)
		if err != nil {
			f.Fatalf("seed %+v does not encode: %v", s, err)
		}
		f.Add(b)
	}
	for _, s := range raw {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := keyspace.Decode[T](b)
		if err != nil {
			checkRejection(t, kind, b, err)
			var zero T
			if !reflect.DeepEqual(r, zero) {
				t.Fatalf("Decode(%q) returned %+v with error %v; want the zero record", b, r, err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("Decode(%q) accepted a record that does not validate: %v", b, err)
		}
		if v := reflect.ValueOf(r).FieldByName("V").Int(); v != keyspace.Version && (kind != "switchover" || v != keyspace.SwitchoverAtVersion) {
			t.Fatalf("Decode(%q) accepted version %d", b, v)
		}
		if check != nil {
			check(t, r)
		}
		enc, err := keyspace.Encode(r)
		if err != nil {
			t.Fatalf("Decode(%q) accepted %+v, which does not encode: %v", b, r, err)
		}
		r2, err := keyspace.Decode[T](enc)
		if err != nil {
			t.Fatalf("re-encoded record %s does not decode: %v (input %q)", enc, err, b)
		}
		enc2, err := keyspace.Encode(r2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed the record: %s then %s (%v); input %q", enc, enc2, err, b)
		}
	})
}

// checkRejection asserts that err is a clear rejection of a kind record.
func checkRejection(t *testing.T, kind string, b []byte, err error) {
	t.Helper()
	var re *keyspace.RecordError
	if !errors.As(err, &re) {
		t.Fatalf("Decode(%q): rejection is %T %v; want *RecordError", b, err, err)
	}
	if re.Kind != kind {
		t.Fatalf("Decode(%q): error kind %q; want %q", b, re.Kind, kind)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "keyspace: "+kind+" record: ") {
		t.Fatalf("Decode(%q): error %q does not start with the record kind", b, msg)
	}
	switch {
	case re.Field != "" && !strings.Contains(msg, strconv.Quote(re.Field)):
		t.Fatalf("Decode(%q): error %q does not name field %q", b, msg, re.Field)
	case re.Field == "" && !strings.Contains(msg, "parse"):
		t.Fatalf("Decode(%q): error %q names no field and does not say the record does not parse", b, msg)
	case re.Err == nil || re.Err.Error() == "":
		t.Fatalf("Decode(%q): error %q has no reason", b, msg)
	}
}

// checkName fails unless name is a valid node name.
func checkName(t *testing.T, field, name string) {
	t.Helper()
	if err := keyspace.ValidName(name); err != nil {
		t.Fatalf("accepted %s: %v", field, err)
	}
}

// checkHost fails unless host is non-empty and printable without spaces.
func checkHost(t *testing.T, host string) {
	t.Helper()
	if host == "" || strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		t.Fatalf("accepted host %q", host)
	}
}

var seedTime = time.Date(2026, 11, 22, 2, 30, 0, 123456789, time.UTC)

func FuzzLeaderRecord(f *testing.F) {
	fuzzRecord(f, "leader",
		[]keyspace.LeaderRecord{
			{Node: "node1", Host: "10.0.0.1", Port: 5432, Timeline: 3, Writable: true},
			{Node: "pg-0.pg.default.svc", Host: "pg-0.pg.default.svc.cluster.local", Port: 5432},
		},
		[]string{
			`{"v":1,"node":"a","host":"h","port":65535,"timeline":4294967295,"writable":true}`,
			`{"v":1,"node":"a","host":"h","port":65536}`,
			`{"v":1,"node":"a","host":"h","port":0}`,
			`{"v":1,"node":"a","host":"","port":5432}`,
			`{"v":1,"node":"a","host":"h h","port":5432}`,
			`{"v":1,"node":"a","host":"h","port":5432,"timeline":-1}`,
			`{"v":1,"node":"a","host":"h","port":"5432"}`,
			`{"v":1,"Node":"a","HOST":"h","port":5432}`,
			`{"v":0,"node":"a","host":"h","port":5432}`,
			`{"v":1.5}`, `{"v":"1"}`, `{"v":null}`, `{"v":1,"v":2}`,
			`{"v":1,"node":"a","host":"h","port":5432}trailing`,
			`null`, `"leader"`, `[]`, ``, "\xff\xfe",
		},
		func(t *testing.T, r keyspace.LeaderRecord) {
			checkName(t, "node", r.Node)
			checkHost(t, r.Host)
			if r.Port < 1 || r.Port > 65535 {
				t.Fatalf("accepted port %d", r.Port)
			}
		})
}

func FuzzMemberRecord(f *testing.F) {
	fuzzRecord(f, "member",
		[]keyspace.MemberRecord{
			{Node: "node1", Role: keyspace.RolePrimary, Host: "10.0.0.1", Port: 5432, Timeline: 2, SystemID: "7311540542520848451",
				WriteLSN: 0x3_0000A0B8, LagBytes: -1, Healthy: true, APIURL: "http://10.0.0.1:8008", UpdatedAt: seedTime},
			{Node: "node2", Role: keyspace.RoleReplica, Host: "10.0.0.2", Port: 5432, Timeline: 2, SystemID: "7311540542520848451",
				ReceiveLSN: 0x3_0000A0B8, ReplayLSN: 0x3_00000028, LagBytes: 41104, Healthy: true, Streaming: true,
				Priority: 10, Tags: map[string]string{"zone": "b"}, UpdatedAt: seedTime},
			{Node: "node3", Role: keyspace.RoleStarting, Host: "::1", Port: 5433, LagBytes: -1, NoFailover: true, UpdatedAt: seedTime},
			{Node: "node4", Role: keyspace.RoleFenced, Host: "/var/run/postgresql", Port: 5432, LagBytes: -1},
		},
		[]string{
			`{"v":1,"node":"a","role":"replica","host":"h","port":1,"lag_bytes":-2}`,
			`{"v":1,"node":"a","role":"leader","host":"h","port":1,"lag_bytes":0}`,
			`{"v":1,"node":"a","role":"Primary","host":"h","port":1,"lag_bytes":0}`,
			`{"v":1,"node":"a","role":"replica","host":"h","port":1,"system_id":"abc"}`,
			`{"v":1,"node":"a","role":"replica","host":"h","port":1,"system_id":"-1"}`,
			`{"v":1,"node":"a","role":"replica","host":"h","port":1,"system_id":"18446744073709551616"}`,
			`{"v":1,"node":"a","role":"replica","host":"h","port":1,"updated_at":"yesterday"}`,
			`{"v":1,"node":"a","role":"replica","host":"h","port":1,"updated_at":"0000-01-01T00:00:00+23:59"}`,
			`{"v":1,"node":"a","role":"replica","host":"h","port":1,"updated_at":"9999-12-31T23:59:59-23:59"}`,
			`{"v":1,"node":"a","role":"replica","host":"h","port":1,"tags":{"a":1}}`,
			`{"v":1,"node":"a","role":"replica","host":"h","port":1,"write_lsn":-1}`,
			`{"v":1,"node":"a","role":"replica","host":"h","port":1,"write_lsn":18446744073709551615}`,
			`{"v":1,"node":"a\u0000","role":"replica","host":"h","port":1}`,
			`{"v":1,"node":"a","role":"replica","host":"h\n","port":1}`,
		},
		func(t *testing.T, r keyspace.MemberRecord) {
			checkName(t, "node", r.Node)
			checkHost(t, r.Host)
			switch r.Role {
			case keyspace.RolePrimary, keyspace.RoleReplica, keyspace.RoleStarting, keyspace.RoleFenced, keyspace.RoleStopped:
			default:
				t.Fatalf("accepted role %q", r.Role)
			}
			if r.SystemID != "" {
				if _, err := strconv.ParseUint(r.SystemID, 10, 64); err != nil {
					t.Fatalf("accepted system_id %q", r.SystemID)
				}
			}
			if r.LagBytes < -1 {
				t.Fatalf("accepted lag_bytes %d", r.LagBytes)
			}
		})
}

func FuzzInitializeRecord(f *testing.F) {
	fuzzRecord(f, "initialize",
		[]keyspace.InitializeRecord{{SystemID: "7311540542520848451", Node: "node1"}, {SystemID: "1"}},
		[]string{
			`{"v":1,"system_id":""}`, `{"v":1,"system_id":"0x1"}`, `{"v":1,"system_id":" 1"}`,
			`{"v":1,"system_id":7311540542520848451}`, `{"v":1,"system_id":"99999999999999999999"}`,
			`{"v":1,"system_id":"1","node":"bad name"}`,
		},
		func(t *testing.T, r keyspace.InitializeRecord) {
			if _, err := strconv.ParseUint(r.SystemID, 10, 64); err != nil {
				t.Fatalf("accepted system_id %q", r.SystemID)
			}
			if r.Node != "" {
				checkName(t, "node", r.Node)
			}
		})
}

func FuzzSyncRecord(f *testing.F) {
	fuzzRecord(f, "sync",
		[]keyspace.SyncRecord{{Leader: "node1", Standbys: []string{"node2", "node3"}}, {Leader: "node1"}, {Leader: "node1", Standbys: []string{}}},
		[]string{
			`{"v":1,"leader":"a","standbys":null}`, `{"v":1,"leader":"a","standbys":"b"}`,
			`{"v":1,"leader":"a","standbys":["b",""]}`, `{"v":1,"standbys":["b"]}`,
			`{"v":1,"leader":"a","standbys":["b","b"]}`,
		},
		func(t *testing.T, r keyspace.SyncRecord) {
			checkName(t, "leader", r.Leader)
			for _, s := range r.Standbys {
				checkName(t, "standbys", s)
			}
		})
}

func FuzzHistoryRecord(f *testing.F) {
	fuzzRecord(f, "history",
		[]keyspace.HistoryRecord{
			{Entries: []keyspace.HistoryEntry{
				{Timeline: 2, SwitchLSN: 0x3000060, Leader: "node2", Reason: "failover", Token: 7587884, Time: seedTime},
				{Timeline: 3, SwitchLSN: 0x5000148, Leader: "node1", Reason: "switchover", Token: 7587990, Time: seedTime.Add(time.Hour)},
			}},
			{},
		},
		[]string{
			`{"v":1,"entries":[{"timeline":0}]}`, `{"v":1,"entries":[{"timeline":3},{"timeline":2}]}`,
			`{"v":1,"entries":[{"timeline":2,"leader":"bad name"}]}`,
			`{"v":1,"entries":[{"timeline":2,"time":"2026-13-01T00:00:00Z"}]}`,
			`{"v":1,"entries":{"timeline":2}}`, `{"v":1,"entries":[null]}`,
		},
		func(t *testing.T, r keyspace.HistoryRecord) {
			for i, e := range r.Entries {
				if e.Timeline == 0 || i > 0 && e.Timeline <= r.Entries[i-1].Timeline {
					t.Fatalf("accepted entries[%d].timeline %d", i, e.Timeline)
				}
			}
		})
}

func FuzzSwitchoverRecord(f *testing.F) {
	fuzzRecord(f, "switchover",
		[]keyspace.SwitchoverRecord{{From: "node1", To: "node2"}, {From: "node1"}, {To: "node3", Force: true},
			{From: "node1", At: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}},
		[]string{
			`{"v":1}`, `{"v":1,"from":"","to":""}`, `{"v":1,"from":"a b"}`, `{"v":1,"to":"-x"}`,
			`{"v":1,"from":"a","to":"a"}`, `{"v":1,"to":"a","force":"yes"}`,
			`{"v":2,"from":"a","at":"2030-01-02T03:04:05Z"}`, `{"v":1,"from":"a","at":"2030-01-02T03:04:05Z"}`,
			`{"v":2,"to":"a","at":"2030-01-02T03:04:05Z"}`, `{"v":3,"from":"a"}`, `{"v":2,"from":"a","at":"soon"}`,
		},
		func(t *testing.T, r keyspace.SwitchoverRecord) {
			if r.From == "" && r.To == "" {
				t.Fatal("accepted a switchover with neither from nor to")
			}
			if r.From != "" {
				checkName(t, "from", r.From)
			}
			if r.To != "" {
				checkName(t, "to", r.To)
			}
			if !r.At.IsZero() && (r.From == "" || r.V != keyspace.SwitchoverAtVersion) {
				t.Fatalf("accepted at %v with from %q, version %d", r.At, r.From, r.V)
			}
		})
}

func FuzzReinitRecord(f *testing.F) {
	fuzzRecord(f, "reinit",
		[]keyspace.ReinitRecord{{Node: "node2"}, {Node: "n3", RequestedAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}},
		[]string{`{"v":1}`, `{"v":1,"node":"a b"}`, `{"v":1,"node":5}`, `{"v":2,"node":"a"}`},
		func(t *testing.T, r keyspace.ReinitRecord) { checkName(t, "node", r.Node) })
}

func FuzzRemoveRecord(f *testing.F) {
	fuzzRecord(f, "remove",
		[]keyspace.RemoveRecord{{Node: "node2"}, {Node: "n3", Outcome: keyspace.RemoveLive, Leader: "n1"}, {Node: "n3", Outcome: keyspace.RemoveUnknown}},
		[]string{`{"v":1}`, `{"v":1,"node":"a","outcome":"gone"}`, `{"v":1,"node":"a","leader":"-"}`},
		func(t *testing.T, r keyspace.RemoveRecord) {
			checkName(t, "node", r.Node)
			if r.Outcome != "" && r.Outcome != keyspace.RemoveLive && r.Outcome != keyspace.RemoveUnknown {
				t.Fatalf("accepted outcome %q", r.Outcome)
			}
		})
}

func FuzzPauseRecord(f *testing.F) {
	fuzzRecord(f, "pause",
		[]keyspace.PauseRecord{{Reason: "maintenance: kernel upgrade"}, {}},
		[]string{`{"v":1,"reason":5}`, `{"v":1,"reason":null}`, `{}`},
		nil)
}

func FuzzConfigRecord(f *testing.F) {
	lag, mode, n := int64(1<<20), "on", 1
	strict := "strict"
	fuzzRecord(f, "config",
		[]keyspace.ConfigRecord{{MaxLagOnFailover: &lag, SynchronousMode: &mode, SynchronousNodeCount: &n}, {SynchronousMode: &strict}, {}},
		[]string{
			`{"v":1,"max_lag_on_failover":-1}`, `{"v":1,"max_lag_on_failover":1e30}`,
			`{"v":1,"synchronous_mode":"ON"}`, `{"v":1,"synchronous_mode":null}`,
			`{"v":1,"synchronous_node_count":0}`, `{"v":1,"synchronous_node_count":2147483648}`,
		},
		func(t *testing.T, r keyspace.ConfigRecord) {
			if r.MaxLagOnFailover != nil && *r.MaxLagOnFailover < 0 {
				t.Fatalf("accepted max_lag_on_failover %d", *r.MaxLagOnFailover)
			}
			if r.SynchronousMode != nil && *r.SynchronousMode != "off" && *r.SynchronousMode != "on" && *r.SynchronousMode != "strict" {
				t.Fatalf("accepted synchronous_mode %q", *r.SynchronousMode)
			}
			if r.SynchronousNodeCount != nil && *r.SynchronousNodeCount < 1 {
				t.Fatalf("accepted synchronous_node_count %d", *r.SynchronousNodeCount)
			}
		})
}
