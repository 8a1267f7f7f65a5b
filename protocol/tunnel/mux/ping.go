package mux

import (
	"os"
	"time"
)

var errDeadline = os.ErrDeadlineExceeded

// ping is one ping waiting for its answer.
type ping struct {
	sent  time.Time
	timer *time.Timer // ends the wait at WriteTimeout
	done  func(time.Duration, error)
}

// Ping measures one round trip, waiting at most WriteTimeout for the
// answer; a ping unanswered by then ends the session with
// ErrKeepAliveTimeout.
func (s *Session) Ping() (time.Duration, error) {
	type result struct {
		rtt time.Duration
		err error
	}
	ch := make(chan result, 1)
	s.PingThen(func(rtt time.Duration, err error) { ch <- result{rtt, err} })
	r := <-ch
	return r.rtt, r.err
}

// PingThen sends a ping and returns; done runs once with the round trip,
// or with the error that ended the wait: ErrKeepAliveTimeout when no
// answer came within WriteTimeout (the session ends right after done
// returns), or ErrSessionShutdown when the session ended first. done runs
// on the receive loop or a timer's goroutine and must not block.
func (s *Session) PingThen(done func(time.Duration, error)) {
	s.mu.Lock()
	if s.isClosed.Load() {
		s.mu.Unlock()
		done(0, ErrSessionShutdown)
		return
	}
	id := s.pingID
	s.pingID++
	if s.pings == nil {
		s.pings = make(map[uint32]*ping, 1)
	}
	p := &ping{sent: time.Now(), done: done}
	s.pings[id] = p
	p.timer = time.AfterFunc(s.cfg.WriteTimeout, func() {
		if s.takePing(id) != nil {
			// done first: it may drop the socket, which a close would
			// otherwise wait on.
			done(0, ErrKeepAliveTimeout)
			s.closeWith(ErrKeepAliveTimeout)
		}
	})
	s.mu.Unlock()

	if err := s.writeFrame(typePing, flagSYN, 0, id, nil); err != nil {
		if s.takePing(id) != nil {
			p.timer.Stop()
			done(0, err)
		}
	}
}

// takePing removes ping id and returns it, or nil when it was already
// answered, timed out or ended.
func (s *Session) takePing(id uint32) *ping {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pings[id]
	delete(s.pings, id)
	if len(s.pings) == 0 {
		s.pings = nil
	}
	return p
}

// pingFrame answers the peer's ping or completes one of ours.
func (s *Session) pingFrame(flags uint16, opaque uint32) {
	switch {
	case flags&flagSYN != 0:
		s.control(typePing, flagACK, 0, opaque)
	case flags&flagACK != 0:
		if p := s.takePing(opaque); p != nil {
			p.timer.Stop()
			p.done(time.Since(p.sent), nil)
		}
	}
}

// endPings completes the pings still waiting when the session ends.
func (s *Session) endPings() {
	s.mu.Lock()
	pings := s.pings
	s.pings = nil
	s.mu.Unlock()
	for _, p := range pings {
		p.timer.Stop()
		p.done(0, ErrSessionShutdown)
	}
}
