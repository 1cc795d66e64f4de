package testutil

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestNetbed builds a bed (its self-test checks a cut link times out
// without a reset and a healed one works), isolates a node and checks the
// other links are untouched, and checks that the cleanup leaves no
// namespace behind.
func TestNetbed(t *testing.T) {
	var names []string
	t.Run("bed", func(t *testing.T) {
		b := StartNetbed(t, 2)
		names = append(names, b.sw, b.Client.Name)
		for _, n := range b.Nodes {
			names = append(names, n.Name)
		}
		n1, n2 := b.Nodes[0], b.Nodes[1]
		l, err := n2.Listen("tcp", n2.Addr+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		dial := func(from *Netns) error {
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			c, err := from.DialContext(ctx, "tcp", l.Addr().String())
			if err == nil {
				c.Close()
			}
			return err
		}
		if err := dial(n1); err != nil {
			t.Fatalf("n1 -> n2 before any fault: %v", err)
		}
		b.Isolate(n1)
		if err := dial(n1); !TimedOut(err) {
			t.Errorf("n1 -> n2 with n1 isolated: got %v, want a timeout", err)
		}
		if err := dial(b.Client); err != nil {
			t.Errorf("client -> n2 with n1 isolated: %v, want a connection", err)
		}
		b.Heal()
		if err := dial(n1); err != nil {
			t.Errorf("n1 -> n2 after the heal: %v", err)
		}
		// The host's namespace has no address of the bed.
		if out, _ := exec.Command("ip", "-4", "addr").Output(); strings.Contains(string(out), "198.18.") {
			t.Errorf("the host's network namespace has a bed address:\n%s", out)
		}
	})
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s left after the test: ip netns list:\n%s", n, out)
		}
	}
	if len(names) == 0 && os.Getenv("CI") == "true" {
		t.Error("no namespace was made")
	}
}
