package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
)

// ensureUser looks name up and, when it does not exist, creates it as a
// system user with its own group, no home directory and no login shell.
func ensureUser(ctx context.Context, name string) (Account, error) {
	u, err := user.Lookup(name)
	if errors.As(err, new(user.UnknownUserError)) {
		args := []string{"--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", nologin(), name}
		if out, err := exec.CommandContext(ctx, "useradd", args...).CombinedOutput(); err != nil {
			return Account{}, fmt.Errorf("create system user %s: useradd: %w: %s", name, err, bytes.TrimSpace(out))
		}
		u, err = user.Lookup(name)
	}
	if err != nil {
		return Account{}, fmt.Errorf("service user %s: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return Account{}, fmt.Errorf("service user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return Account{}, fmt.Errorf("service user %s: gid %q: %w", name, u.Gid, err)
	}
	return Account{Name: name, UID: uid, GID: gid}, nil
}

func nologin() string {
	for _, p := range []string{"/usr/sbin/nologin", "/sbin/nologin"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "/bin/false"
}
