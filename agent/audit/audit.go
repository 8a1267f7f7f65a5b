// Package audit writes the agent's local audit log: one JSON line per
// stream, so the customer can see everything the cloud reached, and
// everything it was refused. The file is size-capped and rotated; a write
// failure is reported to the caller's logger but never blocks a stream.
// Lines are gathered in memory and written at most FlushInterval later (at
// once when FlushBytes gather, and on Close), so a busy agent does not
// make one system call per stream.
package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Entry is one audit record.
type Entry struct {
	Time      time.Time `json:"time"`
	RequestID string    `json:"request_id"`
	Op        string    `json:"op"`
	Target    string    `json:"target"`
	// Addr is the address dialled, when one was.
	Addr string `json:"addr,omitempty"`
	// Decision is allowed | denied | report_allowed (report mode let
	// through a target no allow rule covers; Reason is ALLOWLIST_MISSING).
	Decision   string `json:"decision"`
	Rule       string `json:"rule,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Message    string `json:"message,omitempty"`
	BytesUp    int64  `json:"bytes_to_target"`
	BytesDown  int64  `json:"bytes_from_target"`
	DurationMS int64  `json:"duration_ms"`
}

// Decisions.
const (
	Allowed       = "allowed"
	Denied        = "denied"
	ReportAllowed = "report_allowed"
)

// Log appends entries to a file, rotating it at MaxBytes and keeping Keep
// old files (path.1 is the newest). It is safe for concurrent use.
type Log struct {
	path     string
	maxBytes int64
	keep     int

	mu   sync.Mutex
	f    *os.File
	size int64 // of the file, with the lines still in buf
	buf  []byte
	// flushing is the timer that writes buf; nil while buf is empty.
	flushing *time.Timer
	// err is the failure of a timed write, reported by the next call.
	err error
}

// FlushInterval is how long, at most, an entry waits in memory before it
// is written to the file; FlushBytes of waiting entries are written at
// once.
const (
	FlushInterval = time.Second
	FlushBytes    = 64 << 10
)

// Defaults for Open.
const (
	DefaultMaxBytes = 64 << 20
	DefaultKeep     = 5
)

// Open opens (creating, mode 0640) the audit log at path.
func Open(path string, maxBytes int64, keep int) (*Log, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if keep <= 0 {
		keep = DefaultKeep
	}
	l := &Log{path: path, maxBytes: maxBytes, keep: keep}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("audit log: %w", err)
	}
	l.f, l.size = f, fi.Size()
	return nil
}

// Write appends one entry as a JSON line.
func (l *Log) Write(e Entry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit entry: %w", err)
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("audit log is closed")
	}
	if err := l.err; err != nil {
		l.err = nil
		return err
	}
	if l.size+int64(len(line)) > l.maxBytes && l.size > 0 {
		if err := l.flush(); err != nil {
			return err
		}
		if err := l.rotate(); err != nil {
			return err
		}
	}
	l.buf = append(l.buf, line...)
	l.size += int64(len(line))
	if len(l.buf) >= FlushBytes {
		return l.flush()
	}
	if l.flushing == nil {
		l.flushing = time.AfterFunc(FlushInterval, l.timedFlush)
	}
	return nil
}

// flush writes the gathered lines; l.mu is held.
func (l *Log) flush() error {
	if l.flushing != nil {
		l.flushing.Stop()
		l.flushing = nil
	}
	if len(l.buf) == 0 {
		return nil
	}
	_, err := l.f.Write(l.buf)
	l.buf = l.buf[:0]
	if cap(l.buf) > 4*FlushBytes {
		l.buf = nil // do not pin a buffer grown by one huge entry
	}
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// timedFlush runs FlushInterval after the first line of a batch; Close
// stops it, or waits for it through l.mu.
func (l *Log) timedFlush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return
	}
	if err := l.flush(); err != nil {
		l.err = err
	}
}

// rotate shifts path.N-1 -> path.N ... path -> path.1 and reopens path.
func (l *Log) rotate() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	l.f = nil
	_ = os.Remove(fmt.Sprintf("%s.%d", l.path, l.keep))
	for i := l.keep - 1; i >= 1; i-- {
		_ = os.Rename(fmt.Sprintf("%s.%d", l.path, i), fmt.Sprintf("%s.%d", l.path, i+1))
	}
	if err := os.Rename(l.path, l.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("audit log: %w", err)
	}
	return l.open()
}

// Close writes the gathered lines and closes the file. It is idempotent.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := errors.Join(l.err, l.flush(), l.f.Close())
	l.f, l.err = nil, nil
	return err
}
