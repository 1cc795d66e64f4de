package ha

import (
	"fmt"
	"strings"

	"github.com/pgha/pgha/internal/keyspace"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Components that need an etcd role, as named by [EtcdRoles].
const (
	// RoleManager is the [Manager] (one per PostgreSQL node, e.g. the
	// pgha-agent): read-write on the cluster's prefix, nothing else.
	RoleManager = "manager"
	// RolePool is a driver.Pool: read-only on the cluster's prefix.
	RolePool = "pool"
	// RoleOperator is pghactl and the operations of this package
	// ([ClusterStatus], [Switchover], [Failover], [Pause], [Resume],
	// [Reinit], [Remove], [ProposeConfig], [RestartMember]): read on the
	// prefix, read-write on the switchover, pause and config-proposal keys
	// (the leader writes the config record once it accepts a proposal) and
	// the reinit/, remove/ and restart/ request prefixes.
	RoleOperator = "operator"
)

var (
	permRead      = clientv3.PermissionType(clientv3.PermRead)
	permReadWrite = clientv3.PermissionType(clientv3.PermReadWrite)
)

// EtcdPermission is one permission of an etcd role.
type EtcdPermission struct {
	// Key is the key, or the prefix when Prefix is set.
	Key string
	// Prefix makes the permission cover every key that starts with Key.
	Prefix bool
	// Type is clientv3.PermRead, PermWrite or PermReadWrite.
	Type clientv3.PermissionType
}

// RangeEnd is the range end to give etcd's RoleGrantPermission: the end of
// the prefix for a prefix permission, "" for a single key.
func (p EtcdPermission) RangeEnd() string {
	if p.Prefix {
		return clientv3.GetPrefixRangeEnd(p.Key)
	}
	return ""
}

// EtcdRole is the least-privilege etcd role of one pgha component for one
// cluster.
type EtcdRole struct {
	// Name is the role name: pgha-<cluster>-<component>.
	Name string
	// Component is [RoleManager], [RolePool] or [RoleOperator].
	Component string
	// Permissions are everything the component needs: it is tested to
	// work with exactly these.
	Permissions []EtcdPermission
}

// EtcdRoles returns the least-privilege etcd roles of cluster under keyRoot
// ("" means "/pgha"): one per component ([RoleManager], [RolePool],
// [RoleOperator]), in that order. No role needs a permission outside the
// cluster's prefix: leases (grant, keep-alive, revoke) need none beyond
// write permission on the keys attached to them, which are all under the
// prefix. See docs/security.md. It fails when keyRoot or cluster is
// invalid.
func EtcdRoles(keyRoot, cluster string) ([]EtcdRole, error) {
	l, err := keyspace.NewLayout(keyRoot, cluster)
	if err != nil {
		return nil, fmt.Errorf("ha: etcd roles: %w", err)
	}
	name := func(c string) string { return "pgha-" + cluster + "-" + c }
	return []EtcdRole{
		{Name: name(RoleManager), Component: RoleManager, Permissions: []EtcdPermission{
			{Key: l.Prefix(), Prefix: true, Type: permReadWrite},
		}},
		{Name: name(RolePool), Component: RolePool, Permissions: []EtcdPermission{
			{Key: l.Prefix(), Prefix: true, Type: permRead},
		}},
		{Name: name(RoleOperator), Component: RoleOperator, Permissions: []EtcdPermission{
			{Key: l.Prefix(), Prefix: true, Type: permRead},
			{Key: l.Switchover(), Type: permReadWrite},
			{Key: l.Pause(), Type: permReadWrite},
			{Key: l.ConfigProposal(), Type: permReadWrite},
			{Key: l.RestartPrefix(), Prefix: true, Type: permReadWrite},
			{Key: l.Reinits(), Prefix: true, Type: permReadWrite},
			{Key: l.Removes(), Prefix: true, Type: permReadWrite},
		}},
	}, nil
}

// EtcdctlCommands returns the etcdctl commands that create the role and
// grant its permissions, one per line, for an operator to run as etcd's
// root user.
func (r EtcdRole) EtcdctlCommands() []string {
	cmds := []string{"etcdctl role add " + shellQuote(r.Name)}
	for _, p := range r.Permissions {
		typ := "readwrite"
		switch p.Type {
		case permRead:
			typ = "read"
		case clientv3.PermissionType(clientv3.PermWrite):
			typ = "write"
		}
		c := fmt.Sprintf("etcdctl role grant-permission %s %s %s", shellQuote(r.Name), typ, shellQuote(p.Key))
		if p.Prefix {
			c += " --prefix=true"
		}
		cmds = append(cmds, c)
	}
	return cmds
}

// shellQuote quotes s for a POSIX shell when it holds anything but
// letters, digits and /_.-.
func shellQuote(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/_.-", r)) {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}
