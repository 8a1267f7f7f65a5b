package installer

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kardianos/service"
)

// State is the service manager's view of the agent service.
type State string

const (
	StateUnknown      State = "unknown"
	StateNotInstalled State = "not installed"
	StateStopped      State = "stopped"
	StateRunning      State = "running"
	StateFailed       State = "failed"
)

// Action is a control request to the service manager.
type Action string

const (
	ActionStart   Action = "start"
	ActionStop    Action = "stop"
	ActionRestart Action = "restart"
)

// Manager registers the agent service with the host's service manager and
// controls it. The installer writes the service definition file (unit or
// plist) itself, under Options.Root, before Register and removes it inside
// Unregister's remove callback.
type Manager interface {
	// Register makes the service manager load the current definition and
	// start the service at boot. Calling it again updates the registration.
	Register(ctx context.Context, spec Spec) error
	// Unregister stops the service, removes it from the boot sequence,
	// calls remove to delete the definition file, and lets the manager
	// forget it. A service that is not registered is not an error.
	Unregister(ctx context.Context, remove func() error) error
	// Control starts, stops or restarts the registered service.
	Control(ctx context.Context, a Action) error
	// State reports the service's state.
	State(ctx context.Context) (State, error)
}

// Windows recovery: restart after RestartDelay-ish pauses, forever; the
// failure count resets after a day without failures.
const (
	windowsRestartDelay = "5s"
	windowsResetPeriod  = 24 * 60 * 60
)

// libraryConfig is the service library's view of spec. Where the library
// renders a definition itself it is handed ours (SystemdScript,
// LaunchdConfig), so its defaults never reach a host.
func libraryConfig(spec Spec, unit, plist string) *service.Config {
	return &service.Config{
		Name:        ServiceName,
		DisplayName: "Postern agent",
		Description: "Keeps an outbound tunnel to the Postern relay and serves allowlisted connections.",
		Executable:  spec.Binary,
		Arguments:   spec.Args(),
		Option: service.KeyValue{
			// systemd and launchd: our own definitions.
			"SystemdScript": unit,
			"LaunchdConfig": plist,
			"KeepAlive":     true,
			"RunAtLoad":     true,
			// Windows: start at boot, after the network is usually up, and
			// restart on failure.
			"StartType":              "automatic",
			"DelayedAutoStart":       true,
			"OnFailure":              "restart",
			"OnFailureDelayDuration": windowsRestartDelay,
			"OnFailureResetPeriod":   windowsResetPeriod,
		},
	}
}

// noProgram satisfies service.Interface for a process that only controls
// the service and never runs as it.
type noProgram struct{}

func (noProgram) Start(service.Service) error { return nil }
func (noProgram) Stop(service.Service) error  { return nil }

// libraryService builds the service library's handle for control and
// status.
func libraryService(spec Spec, unit, plist string) (service.Service, error) {
	s, err := service.New(noProgram{}, libraryConfig(spec, unit, plist))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoServiceManager, err)
	}
	return s, nil
}

// libraryControl runs a on s, turning "not installed" into ErrNotInstalled.
func libraryControl(s service.Service, a Action) error {
	var err error
	switch a {
	case ActionStart:
		err = s.Start()
	case ActionStop:
		err = s.Stop()
	case ActionRestart:
		err = s.Restart()
	default:
		return fmt.Errorf("unknown action %q", a)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", a, ServiceName, err)
	}
	return nil
}

// libraryState maps the library's status onto State.
func libraryState(s service.Service) (State, error) {
	st, err := s.Status()
	switch {
	case errors.Is(err, service.ErrNotInstalled):
		return StateNotInstalled, nil
	case err != nil && strings.Contains(err.Error(), "failed"):
		return StateFailed, nil
	case err != nil:
		return StateUnknown, fmt.Errorf("status of %s: %w", ServiceName, err)
	case st == service.StatusRunning:
		return StateRunning, nil
	case st == service.StatusStopped:
		return StateStopped, nil
	default:
		return StateUnknown, nil
	}
}
