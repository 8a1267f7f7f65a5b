package installer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc/mgr"
)

// scmManager registers the agent with the Windows Service Control Manager:
// the service library creates it, and we update an existing registration in
// place and install recovery actions that also cover a non-zero exit.
type scmManager struct {
	libraryManager
}

func systemManager(lib libraryManager) (Manager, error) {
	return &scmManager{lib}, nil
}

func (m *scmManager) Register(_ context.Context, spec Spec) error {
	scm, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("connect to the service control manager: %w", err)
	}
	defer scm.Disconnect()
	s, err := scm.OpenService(ServiceName)
	if err != nil {
		if err := m.svc.Install(); err != nil {
			return fmt.Errorf("register %s: %w", ServiceName, err)
		}
		if s, err = scm.OpenService(ServiceName); err != nil {
			return fmt.Errorf("open %s: %w", ServiceName, err)
		}
	} else {
		c, err := s.Config()
		if err != nil {
			s.Close()
			return fmt.Errorf("read %s configuration: %w", ServiceName, err)
		}
		c.BinaryPathName = commandLine(spec.Binary, spec.Args())
		c.StartType = mgr.StartAutomatic
		c.DelayedAutoStart = true
		if err := s.UpdateConfig(c); err != nil {
			s.Close()
			return fmt.Errorf("update %s: %w", ServiceName, err)
		}
	}
	defer s.Close()
	delay, _ := time.ParseDuration(windowsRestartDelay)
	restart := mgr.RecoveryAction{Type: mgr.ServiceRestart, Delay: delay}
	if err := s.SetRecoveryActions([]mgr.RecoveryAction{restart, restart, restart}, windowsResetPeriod); err != nil {
		return fmt.Errorf("set recovery actions of %s: %w", ServiceName, err)
	}
	// Without this, an agent that exits with an error (rather than
	// crashing) would stay stopped.
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		return fmt.Errorf("set recovery actions of %s: %w", ServiceName, err)
	}
	return nil
}

func commandLine(bin string, args []string) string {
	parts := []string{syscall.EscapeArg(bin)}
	for _, a := range args {
		parts = append(parts, syscall.EscapeArg(a))
	}
	return strings.Join(parts, " ")
}

func (m *scmManager) Unregister(ctx context.Context, remove func() error) error {
	st, err := stopIfIn(ctx, m, StateRunning)
	if err != nil {
		return err
	}
	if st != StateNotInstalled {
		if err := m.svc.Uninstall(); err != nil {
			return fmt.Errorf("unregister %s: %w", ServiceName, err)
		}
	}
	return remove()
}

// State knows one more way of saying "not installed" than the library:
// the SCM's own error for a service it has no record of.
func (m *scmManager) State(ctx context.Context) (State, error) {
	st, err := m.libraryManager.State(ctx)
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return StateNotInstalled, nil
	}
	return st, err
}
