//go:build !windows

package installer

import "os"

func privileged() bool { return os.Geteuid() == 0 }
