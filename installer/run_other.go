//go:build !windows

package installer

import "context"

// RunService runs the agent's main loop as the service manager expects.
// systemd and launchd only need a process that exits on SIGTERM, which run
// handles itself; so here it is run(ctx). See run_windows.go for the
// Service Control Manager.
func RunService(ctx context.Context, run func(context.Context) error) error {
	return run(ctx)
}
