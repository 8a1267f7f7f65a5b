package cluster

import (
	"os"
	"testing"

	"github.com/postern/postern/cmd/internal/testkit"
)

func TestMain(m *testing.M) { os.Exit(testkit.Main(m).Run()) }
