package installer

import (
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strings"
)

// foreground is the advice wherever no service can be installed.
const foreground = "run `postern-agent run --config FILE` in the foreground instead (as the container's main process, or under your own supervisor)"

// Host is what the pre-install checks look at. RealHost reads this machine;
// tests substitute a file tree and a privilege answer.
type Host struct {
	GOOS       string
	FS         fs.FS       // the root filesystem ("/" on Unix)
	Privileged func() bool // root, or an elevated token on Windows
}

// RealHost is the machine this process runs on.
func RealHost() Host {
	return Host{GOOS: runtime.GOOS, FS: os.DirFS("/"), Privileged: privileged}
}

// Check refuses to go on where a service cannot be installed or controlled:
// a Linux host whose PID 1 is not systemd (a container, most often), or a
// caller without the privileges. what names the command for the message.
func (h Host) Check(what string) error {
	if err := h.CheckServiceManager(); err != nil {
		return err
	}
	if h.Privileged != nil && !h.Privileged() {
		if h.GOOS == "windows" {
			return fmt.Errorf("%w: %s needs an elevated prompt: run it as Administrator", ErrNotPrivileged, what)
		}
		return fmt.Errorf("%w: %s needs root: run with sudo", ErrNotPrivileged, what)
	}
	return nil
}

// CheckServiceManager reports ErrNoServiceManager on Linux unless systemd
// is PID 1. A container running systemd as PID 1 is fine; any other
// container gets a message that says it is one.
func (h Host) CheckServiceManager() error {
	if h.GOOS != "linux" {
		return nil
	}
	pid1 := h.read("proc/1/comm")
	if pid1 == "systemd" {
		return nil
	}
	if pid1 == "" {
		// /proc hidden: fall back to systemd's own marker (sd_booted).
		if fi, err := fs.Stat(h.FS, "run/systemd/system"); err == nil && fi.IsDir() {
			return nil
		}
	}
	if why := h.container(); why != "" {
		return fmt.Errorf("%w: this is a container (%s), where no service manager runs; %s", ErrNoServiceManager, why, foreground)
	}
	if pid1 == "" {
		pid1 = "unknown"
	}
	return fmt.Errorf("%w: systemd is not running as PID 1 here (PID 1 is %s); %s", ErrNoServiceManager, pid1, foreground)
}

// container names the first sign that this is a container, or "".
func (h Host) container() string {
	for _, marker := range []string{".dockerenv", "run/.containerenv"} {
		if _, err := fs.Stat(h.FS, marker); err == nil {
			return "/" + marker + " exists"
		}
	}
	cgroup := h.read("proc/1/cgroup")
	for _, rt := range []string{"docker", "kubepods", "containerd", "libpod", "lxc"} {
		if strings.Contains(cgroup, rt) {
			return "/proc/1/cgroup mentions " + rt
		}
	}
	return ""
}

func (h Host) read(name string) string {
	if h.FS == nil {
		return ""
	}
	data, err := fs.ReadFile(h.FS, name)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}
