package testkit

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// childEnv, when set, makes the test binary act as a child process for
// the Process tests instead of running tests.
const childEnv = "TESTKIT_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode))
	}
	goleak.VerifyTestMain(Main(m))
}

// child behaves as the mode says and returns its exit code. It prints
// "ready" once its signal handling is in place.
func child(mode string) int {
	terms := make(chan os.Signal, 2)
	switch mode {
	case "exit-on-term", "drain-then-exit":
		signal.Notify(terms, syscall.SIGTERM)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
	case "fail":
		fmt.Println("giving up")
		return 3
	default:
		fmt.Fprintf(os.Stderr, "unknown child mode %q\n", mode)
		return 2
	}
	fmt.Println("ready")
	if mode == "drain-then-exit" {
		<-terms
		fmt.Println("draining")
	}
	select {
	case <-terms:
		return 0
	case <-time.After(time.Minute):
		return 1
	}
}
