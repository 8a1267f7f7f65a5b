//go:build !linux && !darwin && !windows

package installer

import (
	"fmt"
	"runtime"
)

func newManager(Spec, string, string) (Manager, error) {
	return nil, fmt.Errorf("%w: %s is not supported; run `postern-agent run --config FILE` under your own supervisor", ErrNoServiceManager, runtime.GOOS)
}
