package installer

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/kardianos/service"
)

// systemdManager registers the unit the installer wrote with systemctl and
// controls the service through the service library.
type systemdManager struct {
	svc service.Service
}

func newManager(spec Spec, unit, plist string) (Manager, error) {
	s, err := libraryService(spec, unit, plist)
	if err != nil {
		return nil, err
	}
	if p := s.Platform(); p != "linux-systemd" {
		return nil, fmt.Errorf("%w: the service manager here is %s; only systemd is supported", ErrNoServiceManager, p)
	}
	return &systemdManager{svc: s}, nil
}

const unitName = ServiceName + ".service"

func (m *systemdManager) Register(ctx context.Context, _ Spec) error {
	if err := systemctl(ctx, "daemon-reload"); err != nil {
		return err
	}
	return systemctl(ctx, "enable", unitName)
}

func (m *systemdManager) Unregister(ctx context.Context, remove func() error) error {
	st, err := m.State(ctx)
	if err != nil {
		return err
	}
	if st == StateRunning {
		if err := m.Control(ctx, ActionStop); err != nil {
			return err
		}
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

func (m *systemdManager) Control(_ context.Context, a Action) error {
	return libraryControl(m.svc, a)
}

func (m *systemdManager) State(context.Context) (State, error) {
	return libraryState(m.svc)
}

func systemctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
