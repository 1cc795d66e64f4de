package driver

import (
	"slices"
	"testing"
)

// TestChooseTopology drives the pure choice of primary and replicas.
func TestChooseTopology(t *testing.T) {
	w := func(k string) nodeView { return nodeView{key: k, state: wWritable} }
	r := func(k string) nodeView { return nodeView{key: k, state: wReadOnly, inRecovery: true, probed: true} }
	u := func(k string) nodeView { return nodeView{key: k, state: wUnknown} }
	for _, tc := range []struct {
		name         string
		in           topoInput
		primary      string
		replicas     []string
		writableWarn []string
	}{
		{name: "hosts: the one writable host", in: topoInput{nodes: []nodeView{r("a"), w("b"), r("c")}},
			primary: "b", replicas: []string{"a", "c"}},
		{name: "hosts: none writable", in: topoInput{nodes: []nodeView{r("a"), u("b")}},
			replicas: []string{"a"}},
		{name: "hosts: two writable, keep the current one", in: topoInput{nodes: []nodeView{w("a"), w("b")}, current: "b"},
			primary: "b", writableWarn: []string{"a", "b"}},
		{name: "hosts: two writable, none current: pick no side", in: topoInput{nodes: []nodeView{w("a"), w("b")}, current: "c"},
			writableWarn: []string{"a", "b"}},
		{name: "hosts: an unreachable node is neither", in: topoInput{nodes: []nodeView{w("a"), {key: "b", state: wUnknown}}},
			primary: "a"},
		{name: "etcd: the leader, writable", in: topoInput{byLeader: true, leader: "b", nodes: []nodeView{r("a"), w("b")}},
			primary: "b", replicas: []string{"a"}},
		{name: "etcd: the leader, not yet writable", in: topoInput{byLeader: true, leader: "b", nodes: []nodeView{r("a"), u("b")}},
			replicas: []string{"a"}},
		{name: "etcd: a writable node that is not the leader is never the primary", in: topoInput{byLeader: true, leader: "b", nodes: []nodeView{w("a"), u("b")}}},
		{name: "etcd: no leader", in: topoInput{byLeader: true, nodes: []nodeView{w("a"), r("b")}},
			replicas: []string{"b"}},
		{name: "etcd: a node in recovery whose record is not a replica's serves no reads",
			in:      topoInput{byLeader: true, leader: "a", nodes: []nodeView{w("a"), {key: "b", state: wReadOnly, inRecovery: true, probed: true, notReplica: true}, r("c")}},
			primary: "a", replicas: []string{"c"}},
		{name: "hosts: member roles are not consulted before etcd answers",
			in:      topoInput{nodes: []nodeView{w("a"), {key: "b", state: wReadOnly, inRecovery: true, probed: true, notReplica: true}}},
			primary: "a", replicas: []string{"b"}},
		{name: "etcd answering: replicas are the healthy replicas of the member records, probes or not",
			in: topoInput{byLeader: true, byRecords: true, leader: "a", nodes: []nodeView{
				w("a"), {key: "b", recordReplica: true}, {key: "c"}, {key: "d", recordReplica: true, probed: true}, r("e")}},
			primary: "a", replicas: []string{"b", "d"}},
		{name: "etcd broken: probes decide, records stand in for nodes not probed yet",
			in: topoInput{byLeader: true, leader: "a", nodes: []nodeView{
				w("a"), {key: "b", recordReplica: true}, {key: "c", recordReplica: true, probed: true, state: wUnknown}, r("d")}},
			primary: "a", replicas: []string{"b", "d"}},
		{name: "a read-only primary that is not in recovery is no replica", in: topoInput{nodes: []nodeView{{key: "a", state: wReadOnly}}}},
		{name: "one host: presumed the primary before any probe", in: topoInput{presume: true, nodes: []nodeView{u("a")}},
			primary: "a"},
		{name: "one host: presumed the primary after a failed probe too", in: topoInput{presume: true, nodes: []nodeView{{key: "a", state: wUnknown}}},
			primary: "a"},
		{name: "one host: not once found read-only", in: topoInput{presume: true, nodes: []nodeView{r("a")}},
			replicas: []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := chooseTopology(tc.in)
			if got.primary != tc.primary {
				t.Errorf("primary = %q, want %q", got.primary, tc.primary)
			}
			if !slices.Equal(got.replicas, tc.replicas) {
				t.Errorf("replicas = %v, want %v", got.replicas, tc.replicas)
			}
			if !slices.Equal(got.writable, tc.writableWarn) {
				t.Errorf("writable = %v, want %v", got.writable, tc.writableWarn)
			}
		})
	}
}
