package election

import "errors"

// Errors returned by [Term.Err], [Elector.Leader], [Term.Proclaim] and
// [Elector.Campaign]. Match them with errors.Is.
var (
	// ErrNoLeader: no candidate holds the election.
	ErrNoLeader = errors.New("election: no leader")

	// ErrNotLeader: the term has ended or its key is no longer the one it
	// created; a leader-only write was refused.
	ErrNotLeader = errors.New("election: not leader")

	// ErrLeaseLost: etcd reports the term's lease as gone (expired or
	// revoked).
	ErrLeaseLost = errors.New("election: lease lost")

	// ErrLeaseExpired: no renewal succeeded in time, so the lease may have
	// expired on the server. The term ended at ValidUntil.
	ErrLeaseExpired = errors.New("election: lease not renewed before ValidUntil")

	// ErrKeyDeleted: the candidate's key was deleted or replaced by someone
	// else.
	ErrKeyDeleted = errors.New("election: leader key deleted")

	// ErrResigned: the term ended because [Term.Resign] was called.
	ErrResigned = errors.New("election: resigned")
)
