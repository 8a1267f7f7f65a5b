package rootcmd

import (
	"bytes"
	"errors"
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
