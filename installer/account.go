package installer

import "context"

// Account is the identity the service runs as and owns its files.
// UID and GID are -1 where the system has no numeric owners (Windows).
type Account struct {
	Name     string
	UID, GID int
}

// EnsureUserFunc returns the service account called name, creating it when
// it is missing. The installer's default creates a Linux system user;
// tests substitute one that touches no account database.
type EnsureUserFunc func(ctx context.Context, name string) (Account, error)
