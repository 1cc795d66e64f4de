package election_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/pgha/pgha/election"
	"github.com/pgha/pgha/internal/testutil"
)

func TestLeaderKV(t *testing.T) {
	kv := func(key string, lease, create int64) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: []byte(key), Lease: lease, CreateRevision: create}
	}
	const p = "/pgha/c/leader"
	for _, tc := range []struct {
		name   string
		prefix string
		kvs    []*mvccpb.KeyValue
		want   string // leader key; "" for none
	}{
		{"none", p, nil, ""},
		{"one candidate", p, []*mvccpb.KeyValue{kv(p+"/1a", 0x1a, 7)}, p + "/1a"},
		{"trailing slash on the prefix", p + "/", []*mvccpb.KeyValue{kv(p+"/1a", 0x1a, 7)}, p + "/1a"},
		{"lowest create revision wins, in any order", p,
			[]*mvccpb.KeyValue{kv(p+"/2b", 0x2b, 9), kv(p+"/1a", 0x1a, 7), kv(p+"/3c", 0x3c, 8)}, p + "/1a"},
		{"a key without a lease is foreign", p,
			[]*mvccpb.KeyValue{kv(p+"/0", 0, 1), kv(p+"/2b", 0x2b, 9)}, p + "/2b"},
		{"a key not named by its own lease is foreign", p,
			[]*mvccpb.KeyValue{kv(p+"/1a", 0x1b, 1), kv(p+"/2b", 0x2b, 9)}, p + "/2b"},
		{"upper-case hex is not the layout", p,
			[]*mvccpb.KeyValue{kv(p+"/1A", 0x1a, 1), kv(p+"/2b", 0x2b, 9)}, p + "/2b"},
		{"a key under a sub-prefix is foreign", p,
			[]*mvccpb.KeyValue{kv(p+"/x/1a", 0x1a, 1), kv(p+"/2b", 0x2b, 9)}, p + "/2b"},
		{"another election's key is foreign", p,
			[]*mvccpb.KeyValue{kv("/pgha/other/leader/1a", 0x1a, 1), kv(p+"x/1a", 0x1a, 2), kv(p+"/2b", 0x2b, 9)}, p + "/2b"},
		{"only foreign keys", p, []*mvccpb.KeyValue{kv(p+"/garbage", 5, 1), kv(p, 0x1a, 2)}, ""},
		{"equal create revisions: the lower key", p,
			[]*mvccpb.KeyValue{kv(p+"/2b", 0x2b, 7), kv(p+"/1a", 0x1a, 7)}, p + "/1a"},
	} {
		for _, order := range [][]*mvccpb.KeyValue{tc.kvs, reversed(tc.kvs)} {
			got := election.LeaderKV(tc.prefix, slices.Values(order))
			if key := keyOf(got); key != tc.want {
				t.Errorf("%s: LeaderKV(%q, %v) = %q; want %q", tc.name, tc.prefix, keyNames(order), key, tc.want)
			}
		}
	}
}

func reversed(kvs []*mvccpb.KeyValue) []*mvccpb.KeyValue {
	r := slices.Clone(kvs)
	slices.Reverse(r)
	return r
}

func keyOf(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return ""
	}
	return string(kv.Key)
}

func keyNames(kvs []*mvccpb.KeyValue) []string {
	var ks []string
	for _, kv := range kvs {
		ks = append(ks, string(kv.Key))
	}
	return ks
}

// TestTermEndsWhenKeyDeleted: someone else deleting the leader key ends
// the term at once, though its lease is still renewed.
func TestTermEndsWhenKeyDeleted(t *testing.T) {
	etcd := testutil.StartEtcd(t, 1)
	cli := etcd.Client(t)
	term := campaign(t, newElector(t, cli, 5*time.Second, "a"), "a")
	if _, err := cli.Delete(testutil.Ctx(t, 10*time.Second), term.Key()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-term.Done():
	case <-testutil.Ctx(t, 4*time.Second).Done():
		t.Fatalf("the term did not end within 4s (before its lease could expire) of its key being deleted")
	}
	if err := term.Err(); !errors.Is(err, election.ErrKeyDeleted) {
		t.Errorf("Err = %v; want ErrKeyDeleted", err)
	}
}
