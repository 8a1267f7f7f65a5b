package installer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/postern/postern/agent/config"
)

const (
	// Tokens of the issued shape; their parts are made up.
	fromEnvToken  = "pat_installerenvaaaa_ZnJvbS10aGUtZW52aXJvbm1lbnQtLS0tLS0tLS0tLS0"
	fromFlagToken = "pat_installerflagaaa_ZnJvbS10aGUtZmxhZy1maWxlLS0tLS0tLS0tLS0tLS0"
	testToken     = "pat_installertestaaa_czNjcjN0VG9rZW5WYWx1ZVRoYXRNdXN0TmV2ZXJMay0"
	goodConfig    = `# the admin's comment
relay_url: wss://relay.example.com
token_file: agent.token
allow:
  - host: gitlab.corp.example
    ports: [443]
`
)

func reportText(r *Report) string {
	if r == nil {
		return ""
	}
	return strings.Join(append(append([]string{}, r.Changed...), r.Kept...), "\n")
}

func TestInstallPlacesEverything(t *testing.T) {
	tr := newTestRoot(t)
	src := writeSource(t, goodConfig, testToken)
	r, err := tr.installer().Install(context.Background(), InstallRequest{Config: src})
	require.NoError(t, err)
	assert.NotContains(t, reportText(r), testToken)
	assert.Equal(t, []string{"register"}, tr.mgr.takeCalls())

	files := map[string]struct {
		mode     os.FileMode
		uid, gid int
	}{
		"etc/postern":                              {os.ModeDir | 0o750, 0, testGID},
		"etc/postern/agent.yaml":                   {0o640, 0, testGID},
		"etc/postern/agent.token":                  {0o600, testUID, testGID},
		"etc/postern/agent.env":                    {0o640, 0, testGID},
		"var/lib/postern-agent":                    {os.ModeDir | 0o750, testUID, testGID},
		"usr/local/bin/postern-agent":              {0o755, 0, 0},
		"etc/systemd/system/postern-agent.service": {0o644, 0, 0},
	}
	for name, want := range files {
		t.Run(name, func(t *testing.T) {
			fi, err := os.Stat(tr.path(name))
			require.NoError(t, err)
			assert.Equal(t, want.mode, fi.Mode(), "mode")
			uid, gid, _ := fileOwner(fi)
			assert.Equal(t, want.uid, uid, "owner")
			assert.Equal(t, want.gid, gid, "group")
		})
	}

	tok, err := os.ReadFile(tr.path("etc/postern/agent.token"))
	require.NoError(t, err)
	assert.Equal(t, testToken+"\n", string(tok))

	// The source says token_file: agent.token, which means the same file
	// next to the installed config, so the admin's file is kept verbatim.
	cfg, err := os.ReadFile(tr.path("etc/postern/agent.yaml"))
	require.NoError(t, err)
	assert.Equal(t, goodConfig, string(cfg))

	bin, err := os.ReadFile(tr.path("usr/local/bin/postern-agent"))
	require.NoError(t, err)
	want, _ := os.ReadFile(tr.exe)
	assert.Equal(t, want, bin)

	unit, err := os.ReadFile(tr.path("etc/systemd/system/postern-agent.service"))
	require.NoError(t, err)
	wantUnit, err := SystemdUnit(tr.installer().spec(""))
	require.NoError(t, err)
	assert.Equal(t, wantUnit, string(unit))

	env, err := os.ReadFile(tr.path("etc/postern/agent.env"))
	require.NoError(t, err)
	assert.Contains(t, string(env), "HTTPS_PROXY")
	for _, f := range []string{"etc/systemd/system/postern-agent.service", "etc/postern/agent.env", "etc/postern/agent.yaml"} {
		data, err := os.ReadFile(tr.path(f))
		require.NoError(t, err)
		assert.NotContains(t, string(data), testToken, f)
	}
}

func TestInstallIsIdempotentAndUpdates(t *testing.T) {
	tr := newTestRoot(t)
	src := writeSource(t, goodConfig, testToken)
	in := tr.installer()
	ctx := context.Background()
	_, err := in.Install(ctx, InstallRequest{Config: src})
	require.NoError(t, err)
	first := snapshot(t, tr.dir)
	tr.mgr.takeCalls()

	r, err := in.Install(ctx, InstallRequest{Config: src})
	require.NoError(t, err)
	assert.Empty(t, r.Changed, "a second identical install changes nothing")
	assert.False(t, r.Restarted)
	assert.Equal(t, first, snapshot(t, tr.dir))
	assert.Equal(t, []string{"register"}, tr.mgr.takeCalls())

	// Without --config and --token-file, the installed files are reused.
	r, err = in.Install(ctx, InstallRequest{})
	require.NoError(t, err)
	assert.Empty(t, r.Changed)

	// A running service picks up a changed config through a restart.
	require.NoError(t, in.Control(ctx, ActionStart))
	tr.mgr.takeCalls()
	updated := strings.Replace(goodConfig, "443]", "443, 8443]", 1)
	require.NoError(t, os.WriteFile(src, []byte(updated), 0o644))
	r, err = in.Install(ctx, InstallRequest{Config: src})
	require.NoError(t, err)
	assert.True(t, r.Restarted)
	assert.Equal(t, []string{"register", "restart"}, tr.mgr.takeCalls())
	cfg, _ := os.ReadFile(tr.path("etc/postern/agent.yaml"))
	assert.Equal(t, updated, string(cfg))

	// Modes drifted by hand are put back.
	require.NoError(t, os.Chmod(tr.path("etc/postern/agent.token"), 0o644))
	_, err = in.Install(ctx, InstallRequest{})
	require.NoError(t, err)
	fi, _ := os.Stat(tr.path("etc/postern/agent.token"))
	assert.Equal(t, os.FileMode(0o600), fi.Mode())
}

func TestInstallRefusesWithoutWriting(t *testing.T) {
	tests := map[string]struct {
		config, token string
		env           map[string]string
		tokenFile     func(t *testing.T) string
		host          *Host
		wantIs        error
		wantMsg       []string
	}{
		"invalid config lists every problem": {
			config:  "relay_url: http://relay.example.com\ntoken_file: agent.token\nallow:\n  - host: gitlab.corp.example\n    portz: [443]\n",
			token:   testToken,
			wantIs:  config.ErrInvalid,
			wantMsg: []string{"nothing was installed", "agent.yaml:1:", "agent.yaml:5:"},
		},
		"no token anywhere": {
			config:  "relay_url: wss://relay.example.com\nallow:\n  - host: a.example\n    ports: [443]\n",
			wantIs:  ErrNoToken,
			wantMsg: []string{"--token-file", "POSTERN_AGENT_TOKEN"},
		},
		"token file readable by others": {
			config: goodConfig,
			tokenFile: func(t *testing.T) string {
				p := filepath.Join(t.TempDir(), "tok")
				require.NoError(t, os.WriteFile(p, []byte(testToken), 0o644))
				return p
			},
			wantIs:  config.ErrTokenPermissions,
			wantMsg: []string{"chmod 600"},
		},
		"empty token in the environment": {
			config: goodConfig,
			env:    map[string]string{"POSTERN_AGENT_TOKEN": "  "},
			wantIs: config.ErrNoToken,
		},
		"not root": {
			config:  goodConfig,
			token:   testToken,
			host:    &Host{GOOS: "linux", FS: fstest.MapFS{"proc/1/comm": {Data: []byte("systemd")}}, Privileged: func() bool { return false }},
			wantIs:  ErrNotPrivileged,
			wantMsg: []string{"install needs root: run with sudo"},
		},
		"container": {
			config:  goodConfig,
			token:   testToken,
			host:    &Host{GOOS: "linux", FS: fstest.MapFS{".dockerenv": {}, "proc/1/comm": {Data: []byte("sh")}}, Privileged: func() bool { return true }},
			wantIs:  ErrNoServiceManager,
			wantMsg: []string{"container", "postern-agent run --config FILE", "foreground"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tr := newTestRoot(t)
			for k, v := range tc.env {
				tr.env[k] = v
			}
			before := snapshot(t, tr.dir)
			in := tr.installer()
			if tc.host != nil {
				in.o.Host = tc.host
			}
			req := InstallRequest{Config: writeSource(t, tc.config, tc.token)}
			if tc.tokenFile != nil {
				req.TokenFile = tc.tokenFile(t)
			}
			_, err := in.Install(context.Background(), req)
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.wantIs)
			for _, m := range tc.wantMsg {
				assert.Contains(t, err.Error(), m)
			}
			assert.NotContains(t, err.Error(), testToken)
			assert.Equal(t, before, snapshot(t, tr.dir), "nothing may be written")
			assert.Empty(t, tr.mgr.takeCalls())
		})
	}
}

func TestInstallTokenSources(t *testing.T) {
	tests := map[string]struct {
		env       map[string]string
		tokenFile bool
		want      string
	}{
		"--token-file wins over everything": {tokenFile: true, env: map[string]string{"POSTERN_AGENT_TOKEN": fromEnvToken}, want: fromFlagToken},
		"environment wins over the config":  {env: map[string]string{"POSTERN_AGENT_TOKEN": " " + fromEnvToken + " \n"}, want: fromEnvToken},
		"the config's token_file":           {want: testToken},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tr := newTestRoot(t)
			tr.env = tc.env
			req := InstallRequest{Config: writeSource(t, goodConfig, testToken)}
			if tc.tokenFile {
				req.TokenFile = filepath.Join(t.TempDir(), "token")
				require.NoError(t, os.WriteFile(req.TokenFile, []byte(fromFlagToken), 0o600))
			}
			_, err := tr.installer().Install(context.Background(), req)
			require.NoError(t, err)
			got, err := os.ReadFile(tr.path("etc/postern/agent.token"))
			require.NoError(t, err)
			assert.Equal(t, tc.want+"\n", string(got))
		})
	}
}

func TestInstallRewritesPathsForTheInstalledCopy(t *testing.T) {
	tr := newTestRoot(t)
	cfg := "relay_url: wss://relay.example.com # where the relay is\naudit_log: /var/log/postern/audit.jsonl\nca_file: relay-ca.pem\nallow: []\n"
	src := writeSource(t, cfg, "")
	tr.env["POSTERN_AGENT_TOKEN"] = testToken
	r, err := tr.installer().Install(context.Background(), InstallRequest{Config: src})
	require.NoError(t, err)
	assert.Contains(t, reportText(r), "audit log directory /var/log/postern")

	data, err := os.ReadFile(tr.path("etc/postern/agent.yaml"))
	require.NoError(t, err)
	installed, err := config.Parse("/etc/postern/agent.yaml", data, nil)
	require.NoError(t, err)
	assert.Equal(t, "/etc/postern/agent.token", installed.TokenFile)
	assert.Equal(t, filepath.Join(filepath.Dir(src), "relay-ca.pem"), installed.CAFile, "relative to where the admin wrote it")
	assert.Contains(t, string(data), "# where the relay is", "comments survive the rewrite")

	fi, err := os.Stat(tr.path("var/log/postern"))
	require.NoError(t, err)
	uid, _, _ := fileOwner(fi)
	assert.Equal(t, testUID, uid, "the service user writes the audit log")
	unit, _ := os.ReadFile(tr.path("etc/systemd/system/postern-agent.service"))
	assert.Contains(t, string(unit), "ReadWritePaths=/var/lib/postern-agent /var/log/postern\n")
}

func TestUninstall(t *testing.T) {
	ctx := context.Background()
	t.Run("keeps config, token and binary", func(t *testing.T) {
		tr := newTestRoot(t)
		in := tr.installer()
		_, err := in.Install(ctx, InstallRequest{Config: writeSource(t, goodConfig, testToken)})
		require.NoError(t, err)
		require.NoError(t, in.Control(ctx, ActionStart))
		tr.mgr.takeCalls()

		r, err := in.Uninstall(ctx, false)
		require.NoError(t, err)
		assert.Equal(t, []string{"unregister"}, tr.mgr.takeCalls())
		assert.NoFileExists(t, tr.path("etc/systemd/system/postern-agent.service"))
		for _, f := range []string{"etc/postern/agent.yaml", "etc/postern/agent.token", "etc/postern/agent.env", "usr/local/bin/postern-agent"} {
			assert.FileExists(t, tr.path(f))
		}
		assert.DirExists(t, tr.path("var/lib/postern-agent"))
		assert.Contains(t, reportText(r), "--purge")

		// Installing again from what was kept needs neither --config nor a token.
		_, err = in.Install(ctx, InstallRequest{})
		require.NoError(t, err)
		assert.FileExists(t, tr.path("etc/systemd/system/postern-agent.service"))
	})

	t.Run("purge leaves the root as it was found", func(t *testing.T) {
		tr := newTestRoot(t)
		before := snapshot(t, tr.dir)
		in := tr.installer()
		cfg := goodConfig + "audit_log: /var/log/postern/audit.jsonl\n"
		_, err := in.Install(ctx, InstallRequest{Config: writeSource(t, cfg, testToken)})
		require.NoError(t, err)
		_, err = in.Install(ctx, InstallRequest{})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(tr.path("var/lib/postern-agent/state.json"), []byte("{}"), 0o600))

		_, err = in.Uninstall(ctx, true)
		require.NoError(t, err)
		assert.Equal(t, before, snapshot(t, tr.dir))

		// A second purge of nothing is fine too.
		_, err = in.Uninstall(ctx, true)
		require.NoError(t, err)
		assert.Equal(t, before, snapshot(t, tr.dir))
	})

	t.Run("purge keeps audit logs", func(t *testing.T) {
		tr := newTestRoot(t)
		in := tr.installer()
		cfg := goodConfig + "audit_log: /var/log/postern/audit.jsonl\n"
		_, err := in.Install(ctx, InstallRequest{Config: writeSource(t, cfg, testToken)})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(tr.path("var/log/postern/audit.jsonl"), []byte("{}\n"), 0o640))
		r, err := in.Uninstall(ctx, true)
		require.NoError(t, err)
		assert.FileExists(t, tr.path("var/log/postern/audit.jsonl"))
		assert.NoDirExists(t, tr.path("etc/postern"))
		assert.Contains(t, reportText(r), "audit logs are kept")
	})
}

func TestControl(t *testing.T) {
	ctx := context.Background()
	tr := newTestRoot(t)
	in := tr.installer()
	err := in.Control(ctx, ActionStart)
	require.ErrorIs(t, err, ErrNotInstalled)
	assert.Contains(t, err.Error(), "postern-agent install")

	_, err = in.Install(ctx, InstallRequest{Config: writeSource(t, goodConfig, testToken)})
	require.NoError(t, err)
	tr.mgr.takeCalls()
	for _, a := range []Action{ActionStart, ActionRestart, ActionStop} {
		require.NoError(t, in.Control(ctx, a))
	}
	assert.Equal(t, []string{"start", "restart", "stop"}, tr.mgr.takeCalls())
	st, err := in.State(ctx)
	require.NoError(t, err)
	assert.Equal(t, StateStopped, st)

	in.o.Host = &Host{GOOS: "linux", FS: fstest.MapFS{"proc/1/comm": {Data: []byte("systemd")}}, Privileged: func() bool { return false }}
	err = in.Control(ctx, ActionStop)
	require.ErrorIs(t, err, ErrNotPrivileged)
	assert.Contains(t, err.Error(), "stop needs root: run with sudo")
	_, err = in.State(ctx)
	require.NoError(t, err, "reading the state needs no privileges")
	assert.False(t, errors.Is(err, ErrNotPrivileged))
}
