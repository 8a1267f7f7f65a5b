package agent

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test cancels Agent.Run and waits for it, so any goroutine still
// alive at the end is a leak in the agent or in a test's fake.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
