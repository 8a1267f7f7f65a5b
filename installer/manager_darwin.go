package installer

import (
	"context"

	"github.com/kardianos/service"
)

// launchdManager controls the launchd job whose plist the installer wrote
// to /Library/LaunchDaemons, through the service library (launchctl
// load/unload).
type launchdManager struct {
	svc service.Service
}

func newManager(spec Spec, unit, plist string) (Manager, error) {
	s, err := libraryService(spec, unit, plist)
	if err != nil {
		return nil, err
	}
	return &launchdManager{svc: s}, nil
}

// Register has nothing to do: launchd reads the plist at boot (RunAtLoad)
// and on start.
func (m *launchdManager) Register(context.Context, Spec) error { return nil }

func (m *launchdManager) Unregister(ctx context.Context, remove func() error) error {
	st, err := m.State(ctx)
	if err != nil {
		return err
	}
	if st == StateRunning || st == StateFailed {
		if err := m.Control(ctx, ActionStop); err != nil {
			return err
		}
	}
	return remove()
}

func (m *launchdManager) Control(_ context.Context, a Action) error {
	return libraryControl(m.svc, a)
}

func (m *launchdManager) State(context.Context) (State, error) {
	return libraryState(m.svc)
}
