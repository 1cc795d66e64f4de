package ha_test

import (
	"context"
	"log/slog"
	"os/exec"
	"time"

	"github.com/pgha/pgha/ha"
)

// ExampleConfig_onRoleChange moves a virtual IP with the primary. The hook
// runs on a goroutine of its own, so a slow command delays only the next
// call, never a failover; its ctx ends when the role it announces ends, so
// a command still running then is killed. (Not run: it needs root and a
// network interface.)
func ExampleConfig_onRoleChange() {
	const vip, dev = "10.0.0.100/24", "eth0"
	cfg := ha.DefaultConfig()
	cfg.Cluster, cfg.Node = "main", "node1" // and Client, Instance
	cfg.OnRoleChange = func(ctx context.Context, ev ha.RoleChange) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		verb := "del"
		if ev.New == ha.RolePrimary {
			verb = "add"
		}
		out, err := exec.CommandContext(ctx, "ip", "addr", verb, vip, "dev", dev).CombinedOutput()
		slog.Info("virtual IP", "verb", verb, "role", string(ev.New), "token", ev.Token, "err", err, "output", string(out))
	}
	_ = cfg // ha.New(cfg), then Run
}
