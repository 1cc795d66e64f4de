package main

import "testing"

func TestPreVoteByDefault(t *testing.T) {
	for v, want := range map[string]bool{"3.4.23": false, "3.3.27": false, "3.5.0": true, "3.6.16": true, "4.0.0": true, "": true, "x.y": true, "2.3.8": false} {
		if got := preVoteByDefault(v); got != want {
			t.Errorf("preVoteByDefault(%q) = %v; want %v", v, got, want)
		}
	}
}
