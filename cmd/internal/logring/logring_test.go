package logring

import (
	"bytes"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRingKeepsTheNewestLines(t *testing.T) {
	r := New(3)
	assert.Empty(t, r.Lines())
	for i := range 5 {
		r.add(fmt.Sprint(i))
	}
	assert.Equal(t, []string{"2", "3", "4"}, r.Lines())
}

func TestTee(t *testing.T) {
	var out bytes.Buffer
	all, audit := New(10), New(10)
	log := slog.New(Tee(slog.NewTextHandler(&out, nil), all, audit, "by_key")).With("node", "n1")
	log.Debug("below the program's level")
	log.Info("connection revoked", "connection", "c1", "by_key", "k1")
	log.Warn("store slow", "ms", 900)
	assert.Contains(t, out.String(), "connection revoked", "the program's own handler still gets everything")
	lines := all.Lines()
	if assert.Len(t, lines, 2, "only what the program logs") {
		assert.Contains(t, lines[0], `msg="connection revoked" node=n1 connection=c1 by_key=k1`)
		assert.Contains(t, lines[1], "level=WARN")
	}
	if assert.Len(t, audit.Lines(), 1) {
		assert.Contains(t, audit.Lines()[0], "by_key=k1")
	}
}
