package installer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeManager is a service manager that records what it was asked.
type fakeManager struct {
	mu    sync.Mutex
	state State
	calls []string
}

func newFakeManager() *fakeManager { return &fakeManager{state: StateNotInstalled} }

func (f *fakeManager) Register(_ context.Context, _ Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "register")
	if f.state == StateNotInstalled {
		f.state = StateStopped
	}
	return nil
}

func (f *fakeManager) Unregister(_ context.Context, remove func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "unregister")
	f.state = StateNotInstalled
	return remove()
}

func (f *fakeManager) Control(_ context.Context, a Action) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, string(a))
	if a == ActionStop {
		f.state = StateStopped
	} else {
		f.state = StateRunning
	}
	return nil
}

func (f *fakeManager) State(context.Context) (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state, nil
}

func (f *fakeManager) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// Service account of the temp-root tests: numbers no real user has.
const (
	testUID = 4242
	testGID = 4343
)

// systemdHost is a Linux host whose PID 1 is systemd, run by root.
func systemdHost() *Host {
	return &Host{
		GOOS:       "linux",
		FS:         fstest.MapFS{"proc/1/comm": {Data: []byte("systemd\n")}},
		Privileged: func() bool { return true },
	}
}

// testRoot is a temporary system root with the directories every Linux
// system has, so that an install and a purge can be compared with it.
type testRoot struct {
	dir string
	mgr *fakeManager
	env map[string]string
	exe string
}

func newTestRoot(t *testing.T) *testRoot {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the install tests set file owners, which needs root")
	}
	dir := t.TempDir()
	for _, d := range []string{"etc/systemd/system", "usr/local/bin", "var/lib", "var/log"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	exe := filepath.Join(t.TempDir(), "postern-agent")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\necho agent binary\n"), 0o755))
	return &testRoot{dir: dir, mgr: newFakeManager(), env: map[string]string{}, exe: exe}
}

func (r *testRoot) installer() *Installer {
	return New(Options{
		Root:  r.dir,
		Paths: DefaultPaths("linux"),
		Host:  systemdHost(),
		EnsureUser: func(_ context.Context, name string) (Account, error) {
			return Account{Name: name, UID: testUID, GID: testGID}, nil
		},
		Manager:    r.mgr,
		Executable: r.exe,
		Getenv: func(k string) (string, bool) {
			v, ok := r.env[k]
			return v, ok
		},
	})
}

func (r *testRoot) path(p string) string { return filepath.Join(r.dir, p) }

// entry is one file or directory of a snapshot.
type entry struct {
	Mode     fs.FileMode
	UID, GID int
	SHA256   string
}

// snapshot records every path under dir with mode, owner and content.
func snapshot(t *testing.T, dir string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{Mode: fi.Mode()}
		e.UID, e.GID, _ = fileOwner(fi)
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			e.SHA256 = hex.EncodeToString(sum[:])
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = e
		return nil
	}))
	return out
}

// writeSource writes an admin's config (and token, when token is not
// empty) to a fresh directory and returns the config's path.
func writeSource(t *testing.T, config, token string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte(config), 0o644))
	if token != "" {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "agent.token"), []byte(token+"\n"), 0o600))
	}
	return p
}
