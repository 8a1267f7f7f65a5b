// Package stopsignal gives both commands the same two-step stop: the
// first SIGINT or SIGTERM starts a graceful stop (open streams drain),
// the second forces it. Service managers send one SIGTERM and wait; an
// operator at a terminal can press Ctrl-C twice.
package stopsignal

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Notify returns a context cancelled at the first signal; force runs at
// the second. stop releases the signal handler and must be called.
func Notify(parent context.Context, log *slog.Logger, force func()) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		n := 0
		for {
			select {
			case <-done:
				return
			case sig := <-sigs:
				n++
				if n == 1 {
					log.Info("stopping: letting open streams finish; signal again to stop now", "signal", sig.String())
					cancel()
					continue
				}
				force()
			}
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		<-exited
		cancel()
	}
}
