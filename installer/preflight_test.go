package installer

import (
	"io/fs"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHostCheck(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	root := func() bool { return true }
	user := func() bool { return false }
	tests := map[string]struct {
		host    Host
		wantIs  error
		wantMsg []string
	}{
		"systemd as PID 1, root": {
			host: Host{GOOS: "linux", FS: fstest.MapFS{"proc/1/comm": file("systemd\n")}, Privileged: root},
		},
		"systemd in a container is a service manager": {
			host: Host{GOOS: "linux", FS: fstest.MapFS{"proc/1/comm": file("systemd\n"), ".dockerenv": file("")}, Privileged: root},
		},
		"/proc hidden but systemd booted": {
			host: Host{GOOS: "linux", FS: fstest.MapFS{"run/systemd/system": &fstest.MapFile{Mode: fs.ModeDir | 0o755}}, Privileged: root},
		},
		"docker": {
			host:    Host{GOOS: "linux", FS: fstest.MapFS{"proc/1/comm": file("sh\n"), ".dockerenv": file("")}, Privileged: root},
			wantIs:  ErrNoServiceManager,
			wantMsg: []string{"container", "/.dockerenv", "run `postern-agent run --config FILE` in the foreground"},
		},
		"podman": {
			host:    Host{GOOS: "linux", FS: fstest.MapFS{"proc/1/comm": file("conmon"), "run/.containerenv": file("")}, Privileged: user},
			wantIs:  ErrNoServiceManager,
			wantMsg: []string{"/run/.containerenv", "foreground"},
		},
		"kubernetes": {
			host:    Host{GOOS: "linux", FS: fstest.MapFS{"proc/1/comm": file("postern-agent"), "proc/1/cgroup": file("0::/kubepods/besteffort/pod1234\n")}, Privileged: root},
			wantIs:  ErrNoServiceManager,
			wantMsg: []string{"cgroup mentions kubepods", "foreground"},
		},
		"containerd": {
			host:    Host{GOOS: "linux", FS: fstest.MapFS{"proc/1/comm": file("pause"), "proc/1/cgroup": file("1:name=systemd:/system.slice/containerd.service/x\n")}, Privileged: root},
			wantIs:  ErrNoServiceManager,
			wantMsg: []string{"containerd"},
		},
		"another init": {
			host:    Host{GOOS: "linux", FS: fstest.MapFS{"proc/1/comm": file("init\n"), "proc/1/cgroup": file("0::/\n")}, Privileged: root},
			wantIs:  ErrNoServiceManager,
			wantMsg: []string{"systemd is not running as PID 1 here (PID 1 is init)", "foreground"},
		},
		"not root": {
			host:    Host{GOOS: "linux", FS: fstest.MapFS{"proc/1/comm": file("systemd")}, Privileged: user},
			wantIs:  ErrNotPrivileged,
			wantMsg: []string{"install needs root: run with sudo"},
		},
		"macOS, not root": {
			host:    Host{GOOS: "darwin", FS: fstest.MapFS{}, Privileged: user},
			wantIs:  ErrNotPrivileged,
			wantMsg: []string{"sudo"},
		},
		"Windows, not elevated": {
			host:    Host{GOOS: "windows", FS: fstest.MapFS{}, Privileged: user},
			wantIs:  ErrNotPrivileged,
			wantMsg: []string{"Administrator"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.host.Check("install")
			if tc.wantIs == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.wantIs)
			for _, m := range tc.wantMsg {
				assert.Contains(t, err.Error(), m)
			}
		})
	}
}
