package session

import (
	"fmt"
	"time"

	"github.com/postern/postern/protocol"
)

// readControl handles relay notices until the control stream ends.
func (s *Session) readControl() error {
	for {
		f, err := s.tun.Recv(0)
		if err != nil {
			return fmt.Errorf("control stream: %w", err)
		}
		switch f.Type {
		case protocol.FrameGoAway:
			// The relay's reason and message say why: a draining node, or
			// a report of this agent's the relay would not take.
			var g protocol.GoAway
			if f.Decode(protocol.FrameGoAway, &g) != nil || g.Reason == "" && g.Message == "" {
				return ErrGoAway
			}
			return fmt.Errorf("%w: %s: %s", ErrGoAway, g.Reason, g.Message)
		case protocol.FrameRevoked:
			var r protocol.Revoked
			_ = f.Decode(protocol.FrameRevoked, &r)
			if r.Reason != protocol.ReasonUnknown {
				return fmt.Errorf("%w: %s: %s", ErrRevoked, r.Reason, r.Message)
			}
			return fmt.Errorf("%w: %s", ErrRevoked, r.Message)
		case protocol.FrameNotice:
			var n protocol.Notice
			if f.Decode(protocol.FrameNotice, &n) == nil && s.opts.OnNotice != nil {
				s.opts.OnNotice(n)
			}
		}
		// Unknown notices are ignored: newer relays may add some.
	}
}

// sendHealth reports on the control stream every heartbeat the relay
// asked for, and at once when the reporter says something changed.
func (s *Session) sendHealth() error {
	every := s.welcome.HeartbeatInterval()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		changed := s.opts.Reporter.Changed()
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-t.C:
		case <-changed:
		}
		// A report may queue behind bulk data on a slow link; it gets a
		// whole period before the tunnel counts as stuck.
		if err := s.tun.Send(protocol.FrameHealth, s.opts.Reporter.Health(), every); err != nil {
			return fmt.Errorf("send health: %w", err)
		}
	}
}

// acceptStreams hands every relay-opened stream to the handler, each on a
// goroutine counted in s.streams (and the handler's rest on another, see
// Handler), until the tunnel ends.
func (s *Session) acceptStreams() error {
	for {
		st, err := s.tun.Accept()
		if err != nil {
			return fmt.Errorf("accept stream: %w", err)
		}
		s.streams.Add(1)
		go func() {
			rest := s.opts.Handler.ServeStream(s.ctx, st, s.log)
			if rest == nil {
				s.streams.Done()
				return
			}
			go func() {
				defer s.streams.Done()
				rest()
			}()
		}()
	}
}
