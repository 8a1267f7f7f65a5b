package installer

import "errors"

var (
	// ErrNotPrivileged reports a caller without the rights to change the
	// system's services (not root, or not an elevated prompt on Windows).
	ErrNotPrivileged = errors.New("not privileged")

	// ErrNoServiceManager reports a host where no supported service manager
	// runs: a container, or a Linux host whose PID 1 is not systemd. The agent
	// can still run there in the foreground.
	ErrNoServiceManager = errors.New("no service manager")

	// ErrNotInstalled reports that the agent service is not registered.
	ErrNotInstalled = errors.New("the postern-agent service is not installed")

	// ErrNoToken reports an install without an agent token from any source.
	ErrNoToken = errors.New("no agent token")

	// ErrUnsafePath reports a path that cannot be written safely into a
	// service definition (whitespace, quotes, control or specifier characters).
	ErrUnsafePath = errors.New("path not usable in a service definition")
)
