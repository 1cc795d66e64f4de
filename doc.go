// Package pgha makes PostgreSQL highly available from inside a Go service,
// and gives applications a connection pool that always finds the primary.
//
// A pgha cluster is one PostgreSQL primary and streaming-replication
// standbys, one HA manager per node embedded in a service beside its
// PostgreSQL, and an etcd cluster that decides, by majority, who leads.
//
// # Packages
//
//   - [github.com/pgha/pgha/election]: leadership of one etcd key prefix
//     (campaign, observe, resign), with a fencing token and a lease deadline
//     measured on the local monotonic clock.
//   - replicate: one local PostgreSQL server (init, clone, follow, promote,
//     fence, rewind, status).
//   - ha: the HA manager that runs the loop deciding who is primary.
//   - driver: a primary-aware drop-in for pgxpool.Pool.
//
// # Safety
//
// The invariants every package keeps are: one writer at any instant; no
// acknowledged commit lost in synchronous mode; bounded loss in asynchronous
// mode; no silent divergence of a former primary; the pool never writes to a
// standby; no data directory deleted unless a setting says so.
//
// A leader fences its PostgreSQL before its etcd lease can have expired on the
// server: [github.com/pgha/pgha/election.Term.ValidUntil] is computed from the
// send time of the last successful renewal plus the lease TTL, minus a safety
// margin. A manager that is frozen or dead cannot fence its own PostgreSQL;
// clients that use the driver still stop writing to it because they follow
// the leader record, and other clients are protected only by a hardware or
// software watchdog, or by synchronous replication.
package pgha
