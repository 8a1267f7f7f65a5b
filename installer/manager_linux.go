package installer

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// systemdManager registers the unit the installer wrote with systemctl and
// controls the service through the service library.
type systemdManager struct {
	libraryManager
}

func systemManager(lib libraryManager) (Manager, error) {
	if p := lib.svc.Platform(); p != "linux-systemd" {
		return nil, fmt.Errorf("%w: the service manager here is %s; only systemd is supported", ErrNoServiceManager, p)
	}
	return &systemdManager{lib}, nil
}

const unitName = ServiceName + ".service"

func (m *systemdManager) Register(ctx context.Context, _ Spec) error {
	if err := systemctl(ctx, "daemon-reload"); err != nil {
		return err
	}
	return systemctl(ctx, "enable", unitName)
}

func (m *systemdManager) Unregister(ctx context.Context, remove func() error) error {
	st, err := stopIfIn(ctx, m, StateRunning)
	if err != nil {
		return err
	}
	if st != StateNotInstalled {
		if err := systemctl(ctx, "disable", unitName); err != nil {
			return err
		}
	}
	if err := remove(); err != nil {
		return err
	}
	// A unit that failed before leaves a record behind; clear it so the
	// machine looks as it did before the install. Absent records are fine.
	_ = systemctl(ctx, "reset-failed", unitName)
	return systemctl(ctx, "daemon-reload")
}

func systemctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
