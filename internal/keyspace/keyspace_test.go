package keyspace_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgha/pgha/internal/keyspace"
)

func TestLayout(t *testing.T) {
	l, err := keyspace.NewLayout("", "main")
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		l.Prefix():         "/pgha/main/",
		l.Leader():         "/pgha/main/leader",
		l.Member("node-1"): "/pgha/main/members/node-1",
		l.Initialize():     "/pgha/main/initialize",
		l.Config():         "/pgha/main/config",
		l.Sync():           "/pgha/main/sync",
		l.Switchover():     "/pgha/main/switchover",
		l.Pause():          "/pgha/main/pause",
		l.History():        "/pgha/main/history",
		l.Reinit("n2"):     "/pgha/main/reinit/n2",
		l.Remove("n3"):     "/pgha/main/remove/n3",
	} {
		if got != want {
			t.Errorf("key %q; want %q", got, want)
		}
	}
	if n := l.MemberName("/pgha/main/members/node-1"); n != "node-1" {
		t.Errorf("MemberName = %q", n)
	}
	for _, k := range []string{"/pgha/main/members/", "/pgha/main/members/a/b", "/pgha/other/members/x", "/pgha/main/leader"} {
		if n := l.MemberName(k); n != "" {
			t.Errorf("MemberName(%q) = %q; want empty", k, n)
		}
	}
	for _, bad := range []string{"", "-x", "a b", "a/b", strings.Repeat("a", 64)} {
		if _, err := keyspace.NewLayout("", bad); err == nil || !strings.Contains(err.Error(), "cluster") {
			t.Errorf("NewLayout(%q) = %v; want an error naming the cluster", bad, err)
		}
	}
	if n := keyspace.RequestNode(l.Reinits(), "/pgha/main/reinit/n2"); n != "n2" {
		t.Errorf("RequestNode = %q", n)
	}
	if n := keyspace.RequestNode(l.Reinits(), "/pgha/main/remove/n2"); n != "" {
		t.Errorf("RequestNode of a remove key under Reinits = %q", n)
	}
	if _, err := keyspace.NewLayout("pgha", "main"); err == nil {
		t.Errorf("root without leading slash accepted")
	}
}

func TestRoundTrip(t *testing.T) {
	in := keyspace.MemberRecord{Node: "n1", Role: keyspace.RoleReplica, Host: "127.0.0.1", Port: 5432, Timeline: 3, ReplayLSN: 1 << 33, LagBytes: 10}
	b, err := keyspace.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := keyspace.Decode[keyspace.MemberRecord](b)
	if err != nil {
		t.Fatal(err)
	}
	in.V = keyspace.Version
	if out.Node != in.Node || out.ReplayLSN != in.ReplayLSN || out.V != 1 || out.Role != in.Role {
		t.Fatalf("round trip: %+v; want %+v", out, in)
	}
	// Unknown fields from a newer writer are ignored.
	if _, err := keyspace.Decode[keyspace.LeaderRecord]([]byte(`{"v":1,"node":"a","host":"h","port":1,"future":true}`)); err != nil {
		t.Fatalf("unknown field rejected: %v", err)
	}
	if _, err := keyspace.Encode(keyspace.LeaderRecord{Node: "a"}); err == nil {
		t.Fatalf("Encode accepted a leader record without host")
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct {
		name, in, field string
		decode          func([]byte) error
	}{
		{"garbage", "\x00\xffnot json", "", decodeAs[keyspace.LeaderRecord]},
		{"empty", "", "", decodeAs[keyspace.MemberRecord]},
		{"no version", `{"node":"a","host":"h","port":1}`, "v", decodeAs[keyspace.LeaderRecord]},
		{"future version", `{"v":99,"node":"a","host":"h","port":1}`, "v", decodeAs[keyspace.LeaderRecord]},
		{"wrong type", `{"v":1,"node":5}`, "node", decodeAs[keyspace.LeaderRecord]},
		{"version a string", `{"v":"1"}`, "v", decodeAs[keyspace.LeaderRecord]},
		{"bad time", `{"v":1,"node":"a","role":"replica","host":"h","port":1,"updated_at":"yesterday"}`, "", decodeAs[keyspace.MemberRecord]},
		{"host with space", `{"v":1,"node":"a","host":"h h","port":1}`, "host", decodeAs[keyspace.LeaderRecord]},
		{"unknown role", `{"v":1,"node":"a","role":"leader","host":"h","port":1}`, "role", decodeAs[keyspace.MemberRecord]},
		{"member bad system id", `{"v":1,"node":"a","role":"replica","host":"h","port":1,"system_id":"abc"}`, "system_id", decodeAs[keyspace.MemberRecord]},
		{"lag below -1", `{"v":1,"node":"a","role":"replica","host":"h","port":1,"lag_bytes":-2}`, "lag_bytes", decodeAs[keyspace.MemberRecord]},
		{"initialize hex system id", `{"v":1,"system_id":"0x1"}`, "system_id", decodeAs[keyspace.InitializeRecord]},
		{"bad port", `{"v":1,"node":"a","host":"h","port":70000}`, "port", decodeAs[keyspace.LeaderRecord]},
		{"member no role", `{"v":1,"node":"a","host":"h","port":1}`, "role", decodeAs[keyspace.MemberRecord]},
		{"sync bad standby", `{"v":1,"leader":"a","standbys":["ok","bad name"]}`, "standbys[1]", decodeAs[keyspace.SyncRecord]},
		{"history not increasing", `{"v":1,"entries":[{"timeline":2},{"timeline":2}]}`, "entries[1].timeline", decodeAs[keyspace.HistoryRecord]},
		{"history first_xid reserved", `{"v":1,"entries":[{"timeline":1},{"timeline":2,"first_xid":2}]}`, "entries[1].first_xid", decodeAs[keyspace.HistoryRecord]},
		{"history first_xid negative", `{"v":1,"entries":[{"timeline":2,"first_xid":-1}]}`, "entries.first_xid", decodeAs[keyspace.HistoryRecord]},
		{"config bad mode", `{"v":1,"synchronous_mode":"maybe"}`, "synchronous_mode", decodeAs[keyspace.ConfigRecord]},
		{"initialize empty", `{"v":1}`, "system_id", decodeAs[keyspace.InitializeRecord]},
		{"switchover bad from", `{"v":1,"from":"a b","to":"b"}`, "from", decodeAs[keyspace.SwitchoverRecord]},
		{"failover without target", `{"v":1}`, "to", decodeAs[keyspace.SwitchoverRecord]},
		{"scheduled switchover as v1", `{"v":1,"from":"a","at":"2030-01-02T03:04:05Z"}`, "at", decodeAs[keyspace.SwitchoverRecord]},
		{"scheduled manual failover", `{"v":2,"to":"a","at":"2030-01-02T03:04:05Z"}`, "at", decodeAs[keyspace.SwitchoverRecord]},
		{"switchover v3", `{"v":3,"from":"a"}`, "v", decodeAs[keyspace.SwitchoverRecord]},
		{"leader v2", `{"v":2,"node":"a","host":"h","port":1}`, "v", decodeAs[keyspace.LeaderRecord]},
		{"reinit no node", `{"v":1}`, "node", decodeAs[keyspace.ReinitRecord]},
		{"remove bad outcome", `{"v":1,"node":"a","outcome":"done"}`, "outcome", decodeAs[keyspace.RemoveRecord]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.decode([]byte(tc.in))
			var re *keyspace.RecordError
			if !errors.As(err, &re) {
				t.Fatalf("Decode(%q) = %v; want *RecordError", tc.in, err)
			}
			if re.Field != tc.field {
				t.Fatalf("Decode(%q) field %q; want %q (err %v)", tc.in, re.Field, tc.field, err)
			}
		})
	}
}

// TestHistoryFirstXID: an entry written before first_xid existed parses,
// with FirstXID 0 ("unknown"); a set one round-trips.
func TestHistoryFirstXID(t *testing.T) {
	old, err := keyspace.Decode[keyspace.HistoryRecord]([]byte(`{"v":1,"entries":[{"timeline":1,"leader":"a"},{"timeline":2,"switch_lsn":100,"leader":"b"}]}`))
	if err != nil {
		t.Fatalf("record without first_xid: %v", err)
	}
	if got := old.Entries[1].FirstXID; got != 0 {
		t.Fatalf("FirstXID of an entry without first_xid = %d; want 0 (unknown)", got)
	}
	old.Entries[1].FirstXID = 1<<32 + 7 // with an epoch
	b, err := keyspace.Encode(old)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"first_xid":4294967303`) || strings.Count(string(b), "first_xid") != 1 {
		t.Fatalf("encoded %s; want first_xid on the second entry only", b)
	}
	back, err := keyspace.Decode[keyspace.HistoryRecord](b)
	if err != nil || back.Entries[1].FirstXID != 1<<32+7 {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}

func decodeAs[T keyspace.Record](b []byte) error {
	_, err := keyspace.Decode[T](b)
	return err
}

// FuzzDecode: no input makes a decoder panic, and every rejection is a
// *RecordError.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"node":"a","host":"h","port":5432,"timeline":1,"writable":true}`,
		`{"v":1,"node":"a","role":"replica","host":"h","port":1,"lag_bytes":-1}`,
		`{"v":1,"entries":[{"timeline":2,"switch_lsn":100}]}`,
		`{"v":1,"leader":"a","standbys":["b"]}`,
		`{"v":1,"synchronous_mode":"on","synchronous_node_count":1}`,
		`{"v":2}`, `null`, `[]`, `{"v":1e400}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, dec := range []func([]byte) error{
			decodeAs[keyspace.LeaderRecord], decodeAs[keyspace.MemberRecord], decodeAs[keyspace.InitializeRecord],
			decodeAs[keyspace.SyncRecord], decodeAs[keyspace.HistoryRecord], decodeAs[keyspace.SwitchoverRecord],
			decodeAs[keyspace.PauseRecord], decodeAs[keyspace.ConfigRecord],
		} {
			if err := dec(b); err != nil {
				var re *keyspace.RecordError
				if !errors.As(err, &re) {
					t.Fatalf("rejection is %T %v; want *RecordError", err, err)
				}
			}
		}
	})
}

// TestScheduledSwitchoverVersion: a switchover with At is written as
// version 2, so that a node reading up to version 1 ignores it rather
// than performing it at once; one without At stays version 1.
func TestScheduledSwitchoverVersion(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	b, err := keyspace.Encode(keyspace.SwitchoverRecord{From: "a", At: at})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"v":2`) {
		t.Fatalf("scheduled switchover encoded as %s; want version 2", b)
	}
	r, err := keyspace.Decode[keyspace.SwitchoverRecord](b)
	if err != nil || !r.At.Equal(at) {
		t.Fatalf("decode %s: %+v, %v", b, r, err)
	}
	b, err = keyspace.Encode(keyspace.SwitchoverRecord{From: "a", To: "b"})
	if err != nil || strings.Contains(string(b), `"at"`) || !strings.Contains(string(b), `"v":1`) {
		t.Fatalf("unscheduled switchover encoded as %s (%v); want version 1 without at", b, err)
	}
}
