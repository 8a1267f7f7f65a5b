package installer

import "context"

// launchdManager controls the launchd job whose plist the installer wrote
// to /Library/LaunchDaemons, through the service library (launchctl
// load/unload).
type launchdManager struct {
	libraryManager
}

func systemManager(lib libraryManager) (Manager, error) {
	return &launchdManager{lib}, nil
}

// Register has nothing to do: launchd reads the plist at boot (RunAtLoad)
// and on start.
func (m *launchdManager) Register(context.Context, Spec) error { return nil }

// Unregister stops a failed job too: it is still loaded, and stopping is
// what unloads it (launchctl unload) before its plist goes.
func (m *launchdManager) Unregister(ctx context.Context, remove func() error) error {
	if _, err := stopIfIn(ctx, m, StateRunning, StateFailed); err != nil {
		return err
	}
	return remove()
}
