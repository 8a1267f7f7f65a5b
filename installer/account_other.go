//go:build !linux

package installer

import (
	"context"
	"runtime"
)

// ensureUser: outside Linux the agent runs as the system account (root on
// macOS, LocalSystem on Windows); its token is protected by owner-only
// permissions or an ACL instead of a dedicated user.
func ensureUser(context.Context, string) (Account, error) {
	if runtime.GOOS == "windows" {
		return Account{Name: "LocalSystem", UID: -1, GID: -1}, nil
	}
	return Account{Name: "root", UID: 0, GID: 0}, nil
}
