package installer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/kardianos/service"
)

// RunService runs the agent's main loop as the service manager expects. In
// a console it is run(ctx). Under the Service Control Manager, which kills
// a service that does not answer its protocol, the service library answers
// it: Start launches run, Stop cancels it and waits. A run that ends on its
// own (a fatal error) exits the process with status 1, so the recovery
// actions set at install restart it.
func RunService(ctx context.Context, run func(context.Context) error) error {
	if service.Interactive() {
		return run(ctx)
	}
	p := &scmProgram{parent: ctx, run: run}
	s, err := service.New(p, &service.Config{Name: ServiceName})
	if err != nil {
		return err
	}
	return errors.Join(s.Run(), p.result())
}

type scmProgram struct {
	parent context.Context
	run    func(context.Context) error

	mu       sync.Mutex
	cancel   context.CancelFunc
	done     chan struct{}
	err      error
	stopping bool
}

func (p *scmProgram) Start(service.Service) error {
	ctx, cancel := context.WithCancel(p.parent)
	p.mu.Lock()
	p.cancel, p.done = cancel, make(chan struct{})
	p.mu.Unlock()
	go func() {
		err := p.run(ctx)
		p.mu.Lock()
		p.err = err
		stopping := p.stopping
		p.mu.Unlock()
		close(p.done)
		if !stopping {
			fmt.Fprintln(os.Stderr, "postern-agent stopped on its own:", err)
			os.Exit(1)
		}
	}()
	return nil
}

func (p *scmProgram) Stop(service.Service) error {
	p.mu.Lock()
	p.stopping = true
	cancel, done := p.cancel, p.done
	p.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-time.After(15 * time.Second):
		return errors.New("the agent did not stop within 15 s")
	}
}

func (p *scmProgram) result() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if errors.Is(p.err, context.Canceled) {
		return nil
	}
	return p.err
}
