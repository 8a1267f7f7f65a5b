package main

import (
	"os"
	"testing"

	"github.com/postern/postern/cmd/internal/testkit"
)

// TestMain removes the binaries the tests built once they have run.
func TestMain(m *testing.M) { os.Exit(testkit.Main(m).Run()) }
