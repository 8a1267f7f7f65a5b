package protocol_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/postern/postern/protocol"
	"github.com/postern/postern/protocol/tunnel"
)

// These tests hold spec.md against code that lives beside the protocol
// package: the constants of section 2, some of which belong to the
// transport. See spec.md, section 14.

func TestSpecConstants(t *testing.T) {
	want := map[string]string{
		"Subprotocol":       protocol.Subprotocol,
		"TunnelPath":        protocol.TunnelPath,
		"Version":           fmt.Sprint(protocol.Version),
		"MaxControlFrame":   fmt.Sprint(protocol.MaxControlFrame),
		"MaxStreamFrame":    fmt.Sprint(protocol.MaxStreamFrame),
		"MaxRequestIDLen":   fmt.Sprint(protocol.MaxRequestIDLen),
		"MaxHostLen":        fmt.Sprint(protocol.MaxHostLen),
		"MaxBaseURLLen":     fmt.Sprint(protocol.MaxBaseURLLen),
		"tunnel.MaxMessage": fmt.Sprint(tunnel.MaxMessage),
	}
	got := map[string]string{}
	for _, row := range protocol.SpecTable(t, protocol.ReadSpec(t), "Constant") {
		got[protocol.CodeCell(t, row["Constant"])] = protocol.CodeCell(t, row["Value"])
	}
	assert.Equal(t, want, got)
}
