package faults

import (
	"fmt"
	"os"
	"testing"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/postern/postern/cmd/internal/testkit"
)

func TestMain(m *testing.M) {
	// toxiproxy's toxics log through zerolog's global logger; what they
	// say is not about Postern.
	zerolog.SetGlobalLevel(zerolog.Disabled)
	code := testkit.Main(m).Run()
	if code == 0 {
		// Every process, proxy and server a test started is stopped by
		// its cleanup; what is left running here leaked.
		if err := goleak.Find(toxiproxyInternals...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// soak skips a long test unless POSTERN_SOAK is set (`make soak`).
func soak(t *testing.T) {
	t.Helper()
	if os.Getenv("POSTERN_SOAK") == "" {
		t.Skip("soak test: set POSTERN_SOAK=1 (make soak)")
	}
}

// toxiproxyInternals are goroutines of the fault injector itself: a
// toxic's stub can stay blocked on its channel after toxiproxy closed the
// link it served. They hold no socket (Stop closes every connection) and
// are not Postern's.
var toxiproxyInternals = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"),
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read"),
	goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).write"),
}
