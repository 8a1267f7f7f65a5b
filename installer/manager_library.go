//go:build linux || darwin || windows

package installer

import (
	"context"
	"slices"

	"github.com/kardianos/service"
)

// libraryManager controls the registered service and reads its state
// through the service library. The manager of each supported system embeds
// it and adds what registering there takes.
type libraryManager struct {
	svc service.Service
}

func newManager(spec Spec, unit, plist string) (Manager, error) {
	s, err := libraryService(spec, unit, plist)
	if err != nil {
		return nil, err
	}
	return systemManager(libraryManager{svc: s})
}

func (m libraryManager) Control(_ context.Context, a Action) error {
	return libraryControl(m.svc, a)
}

func (m libraryManager) State(context.Context) (State, error) {
	return libraryState(m.svc)
}

// stopIfIn starts an Unregister: it reads m's state and stops the service
// when it is in one of states. It returns the state it read, so the caller
// knows what else there is to undo.
func stopIfIn(ctx context.Context, m Manager, states ...State) (State, error) {
	st, err := m.State(ctx)
	if err != nil {
		return st, err
	}
	if slices.Contains(states, st) {
		if err := m.Control(ctx, ActionStop); err != nil {
			return st, err
		}
	}
	return st, nil
}
