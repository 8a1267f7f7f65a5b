package installer

import "golang.org/x/sys/windows"

func privileged() bool { return windows.GetCurrentProcessToken().IsElevated() }
