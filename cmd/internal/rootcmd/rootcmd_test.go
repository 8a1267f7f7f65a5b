package rootcmd

import (
	"bytes"
	"errors"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestVersionPrintsTheStamp(t *testing.T) {
	root := New("postern-test", "a test program", "1.2.3", "abc123", "2026-12-02")
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	require.NoError(t, root.Execute())
	assert.Equal(t, "postern-test 1.2.3 (commit abc123, built 2026-12-02)\n", out.String())
}

type codedError struct{}

func (codedError) Error() string { return "not ready" }
func (codedError) ExitCode() int { return 3 }

func TestExitCode(t *testing.T) {
	assert.Equal(t, 3, ExitCode(codedError{}), "an error may choose its status")
	assert.Equal(t, 1, ExitCode(errors.New("broke")), "any other error exits 1")
}

func TestStampFromBuildInfo(t *testing.T) {
	info := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/postern/postern", Version: "v0.4.1-0.20261202150000-3a281ef1c0de"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "3a281ef1c0de7c2b5e0b1a6f3d5c9e8f7a6b5c4d"},
			{Key: "vcs.time", Value: "2026-12-02T15:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	v, c, d := stamp("dev", "none", "unknown", info)
	assert.Equal(t, []string{"v0.4.1-0.20261202150000-3a281ef1c0de", "3a281ef1c0de-dirty", "2026-12-02T15:00:00Z"}, []string{v, c, d},
		"a plain go build shows what the toolchain recorded")
	v, c, d = stamp("v1.0.0", "abc1234", "2026-12-01T00:00:00Z", info)
	assert.Equal(t, []string{"v1.0.0", "abc1234", "2026-12-01T00:00:00Z"}, []string{v, c, d}, "the Makefile's stamp wins")
	v, c, d = stamp("dev", "none", "unknown", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}})
	assert.Equal(t, []string{"dev", "none", "unknown"}, []string{v, c, d}, "nothing recorded: the placeholders stay")
}
