// Package logring keeps a program's newest log lines in memory, so that a
// support bundle can carry them when the logs themselves went to a
// terminal, a journal or nowhere. It tees a slog handler: every record the
// program logs is also formatted as a text line into a ring of fixed size.
// It keeps only what the program already logs, and the programs never log
// a secret.
package logring

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

// Ring is the newest lines written to it, up to its size.
type Ring struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

// New returns a ring of size lines.
func New(size int) *Ring { return &Ring{lines: make([]string, max(size, 1))} }

// add keeps line, dropping the oldest when the ring is full.
func (r *Ring) add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines[r.next] = line
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
}

// Lines returns the lines kept, oldest first.
func (r *Ring) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return append([]string(nil), r.lines[:r.next]...)
	}
	return append(append([]string(nil), r.lines[r.next:]...), r.lines[:r.next]...)
}

// writer turns the text handler's writes, one per record, into lines.
type writer struct{ r *Ring }

func (w writer) Write(p []byte) (int, error) {
	w.r.add(strings.TrimRight(string(bytes.ToValidUTF8(p, []byte("?"))), "\n"))
	return len(p), nil
}

// Tee returns a handler that passes every record to next and writes it,
// as a text line, to all; a record with an attribute named auditKey (an
// admin's action, such as by_key) goes to audit too. audit may be nil.
func Tee(next slog.Handler, all, audit *Ring, auditKey string) slog.Handler {
	t := &tee{next: next, text: slog.NewTextHandler(writer{all}, &slog.HandlerOptions{Level: slog.LevelDebug}), auditKey: auditKey}
	if audit != nil {
		t.audit = slog.NewTextHandler(writer{audit}, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	return t
}

type tee struct {
	next, text, audit slog.Handler
	auditKey          string
}

func (t *tee) Enabled(ctx context.Context, l slog.Level) bool { return t.next.Enabled(ctx, l) }

func (t *tee) Handle(ctx context.Context, r slog.Record) error {
	_ = t.text.Handle(ctx, r)
	if t.audit != nil && hasAttr(r, t.auditKey) {
		_ = t.audit.Handle(ctx, r)
	}
	return t.next.Handle(ctx, r)
}

func hasAttr(r slog.Record, key string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == key
		return !found
	})
	return found
}

func (t *tee) WithAttrs(as []slog.Attr) slog.Handler {
	c := *t
	c.next, c.text = t.next.WithAttrs(as), t.text.WithAttrs(as)
	if t.audit != nil {
		c.audit = t.audit.WithAttrs(as)
	}
	return &c
}

func (t *tee) WithGroup(name string) slog.Handler {
	c := *t
	c.next, c.text = t.next.WithGroup(name), t.text.WithGroup(name)
	if t.audit != nil {
		c.audit = t.audit.WithGroup(name)
	}
	return &c
}
