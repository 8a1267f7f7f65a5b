package e2e

import (
	"os"
	"testing"

	"github.com/postern/postern/cmd/internal/testkit"
)

// TestMain removes the binaries the tests built, and stops the browser
// the status page's tests started, once they have run.
func TestMain(m *testing.M) {
	code := testkit.Main(m).Run()
	stopBrowser()
	os.Exit(code)
}
