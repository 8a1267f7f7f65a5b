package installer

import (
	"encoding/xml"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// parseUnit reads a systemd unit into section -> key -> values, in order.
func parseUnit(t *testing.T, text string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			require.True(t, ok, "line %d is not key=value: %q", i+1, line)
			require.NotEmpty(t, section, "line %d outside a section", i+1)
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func agentSpec() Spec {
	p := DefaultPaths("linux")
	return Spec{
		Binary:     p.Binary,
		ConfigFile: p.ConfigFile,
		EnvFile:    p.EnvFile,
		User:       DefaultUser,
		StateDir:   p.StateDir,
		AuditDir:   "/var/log/postern",
	}
}

func TestSystemdUnit(t *testing.T) {
	text, err := SystemdUnit(agentSpec())
	require.NoError(t, err)
	unit := parseUnit(t, text)
	tests := map[string]struct {
		section, key string
		want         []string
	}{
		"waits for the network (wants)": {"Unit", "Wants", []string{"network-online.target"}},
		"waits for the network (after)": {"Unit", "After", []string{"network-online.target"}},
		"never stops restarting":        {"Unit", "StartLimitIntervalSec", []string{"0"}},
		"restarts always":               {"Service", "Restart", []string{"always"}},
		"restarts quickly":              {"Service", "RestartSec", []string{"2s"}},
		"dedicated user":                {"Service", "User", []string{"postern"}},
		"dedicated group":               {"Service", "Group", []string{"postern"}},
		"runs the installed config":     {"Service", "ExecStart", []string{"/usr/local/bin/postern-agent run --config /etc/postern/agent.yaml"}},
		"reload is SIGHUP":              {"Service", "ExecReload", []string{"/bin/kill -HUP $MAINPID"}},
		"optional environment file":     {"Service", "EnvironmentFile", []string{"-/etc/postern/agent.env"}},
		"no new privileges":             {"Service", "NoNewPrivileges", []string{"yes"}},
		"read-only system":              {"Service", "ProtectSystem", []string{"strict"}},
		"no home directories":           {"Service", "ProtectHome", []string{"yes"}},
		"private /tmp":                  {"Service", "PrivateTmp", []string{"yes"}},
		"writes state and audit only":   {"Service", "ReadWritePaths", []string{"/var/lib/postern-agent /var/log/postern"}},
		"state directory":               {"Service", "StateDirectory", []string{"postern-agent"}},
		"no capabilities":               {"Service", "CapabilityBoundingSet", []string{""}},
		"no inline environment":         {"Service", "Environment", nil},
		"enabled at boot":               {"Install", "WantedBy", []string{"multi-user.target"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, unit[tc.section][tc.key])
		})
	}
	assert.NotContains(t, text, "120", "not the service library's 120 s restart delay")
	assert.NotContains(t, strings.ToLower(text), "token=", "no secret in the unit")
}

func TestSystemdUnitWithoutAuditLog(t *testing.T) {
	s := agentSpec()
	s.AuditDir = ""
	text, err := SystemdUnit(s)
	require.NoError(t, err)
	assert.Equal(t, []string{"/var/lib/postern-agent"}, parseUnit(t, text)["Service"]["ReadWritePaths"])
}

func TestSystemdUnitRefusesUnsafeValues(t *testing.T) {
	tests := map[string]func(*Spec){
		"space in the config path":    func(s *Spec) { s.ConfigFile = "/etc/my postern/agent.yaml" },
		"specifier in the audit dir":  func(s *Spec) { s.AuditDir = "/var/log/%h" },
		"variable in the binary":      func(s *Spec) { s.Binary = "/usr/local/bin/$AGENT" },
		"relative binary":             func(s *Spec) { s.Binary = "postern-agent" },
		"quote in the env file":       func(s *Spec) { s.EnvFile = `/etc/postern/"agent".env` },
		"state outside /var/lib":      func(s *Spec) { s.StateDir = "/srv/postern" },
		"user with a space":           func(s *Spec) { s.User = "post ern" },
		"newline smuggling directive": func(s *Spec) { s.AuditDir = "/var/log\nExecStartPre=/bin/sh" },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			s := agentSpec()
			mutate(&s)
			_, err := SystemdUnit(s)
			require.Error(t, err)
		})
	}
	_, err := SystemdUnit(func() Spec { s := agentSpec(); s.Binary = "/opt/a;b"; return s }())
	assert.True(t, errors.Is(err, ErrUnsafePath))
}

// plistDict decodes the top-level dict of a launchd plist into key -> value,
// where a value is a string, "true"/"false", or a []string for an array.
func plistDict(t *testing.T, text string) map[string]any {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(text))
	out := map[string]any{}
	var key string
	var array []string
	inArray := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "the plist is well-formed XML")
		se, ok := tok.(xml.StartElement)
		if !ok {
			if ee, ok := tok.(xml.EndElement); ok && ee.Name.Local == "array" {
				out[key] = array
				inArray = false
			}
			continue
		}
		switch se.Name.Local {
		case "key":
			require.NoError(t, dec.DecodeElement(&key, &se))
		case "string", "integer":
			var v string
			require.NoError(t, dec.DecodeElement(&v, &se))
			if inArray {
				array = append(array, v)
			} else {
				out[key] = v
			}
		case "true", "false":
			out[key] = se.Name.Local
		case "array":
			inArray, array = true, nil
		}
	}
	return out
}

func TestLaunchdPlist(t *testing.T) {
	p := DefaultPaths("darwin")
	spec := Spec{Binary: "/opt/a&b/postern-agent", ConfigFile: p.ConfigFile, StateDir: p.StateDir, LogFile: p.LogFile}
	text, err := LaunchdPlist(spec)
	require.NoError(t, err)
	d := plistDict(t, text)
	tests := map[string]struct {
		key  string
		want any
	}{
		"label is the service name":  {"Label", "postern-agent"},
		"runs the installed config":  {"ProgramArguments", []string{"/opt/a&b/postern-agent", "run", "--config", "/etc/postern/agent.yaml"}},
		"starts at boot":             {"RunAtLoad", "true"},
		"restarted when it exits":    {"KeepAlive", "true"},
		"restarts quickly":           {"ThrottleInterval", "2"},
		"logs to a file":             {"StandardErrorPath", "/var/log/postern-agent.log"},
		"no environment in the job":  {"EnvironmentVariables", nil},
		"umask keeps files private":  {"Umask", "23"},
		"works in its own directory": {"WorkingDirectory", "/var/lib/postern-agent"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if tc.want == nil {
				assert.NotContains(t, d, tc.key)
				return
			}
			assert.Equal(t, tc.want, d[tc.key])
		})
	}
	assert.Contains(t, text, "/opt/a&amp;b/postern-agent", "XML-escaped")
}

func TestLibraryConfigUsesOurDefinitionsAndRecovery(t *testing.T) {
	c := libraryConfig(agentSpec(), "UNIT", "PLIST")
	assert.Equal(t, ServiceName, c.Name)
	assert.Equal(t, "/usr/local/bin/postern-agent", c.Executable)
	assert.Equal(t, []string{"run", "--config", "/etc/postern/agent.yaml"}, c.Arguments)
	assert.Empty(t, c.EnvVars, "no secret travels through the environment")
	for k, want := range map[string]any{
		"SystemdScript":          "UNIT",
		"LaunchdConfig":          "PLIST",
		"OnFailure":              "restart",
		"OnFailureDelayDuration": "5s",
		"OnFailureResetPeriod":   86400,
		"StartType":              "automatic",
		"KeepAlive":              true,
		"RunAtLoad":              true,
	} {
		assert.Equal(t, want, c.Option[k], k)
	}
}

func TestRelayUnit(t *testing.T) {
	data, err := os.ReadFile("systemd/postern-relay.service")
	require.NoError(t, err)
	unit := parseUnit(t, string(data))
	svc := unit["Service"]
	tests := map[string]struct {
		key  string
		want []string
	}{
		"dedicated user":        {"User", []string{"postern-relay"}},
		"data directory":        {"StateDirectory", []string{"postern-relay"}},
		"restarts always":       {"Restart", []string{"always"}},
		"restarts quickly":      {"RestartSec", []string{"2s"}},
		"no new privileges":     {"NoNewPrivileges", []string{"yes"}},
		"read-only system":      {"ProtectSystem", []string{"strict"}},
		"no home directories":   {"ProtectHome", []string{"yes"}},
		"private /tmp":          {"PrivateTmp", []string{"yes"}},
		"only binds low ports":  {"CapabilityBoundingSet", []string{"CAP_NET_BIND_SERVICE"}},
		"no inline environment": {"Environment", nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tc.want, svc[tc.key])
		})
	}
	require.Len(t, svc["ExecStart"], 1)
	exec := svc["ExecStart"][0]
	for _, flag := range []string{"serve", "--data /var/lib/postern-relay", "--tls-cert /etc/postern-relay/tls/fullchain.pem", "--tls-key /etc/postern-relay/tls/privkey.pem"} {
		assert.Contains(t, exec, flag)
	}
	assert.NotContains(t, exec, "--database", "the unit keeps the default SQLite store in the state directory")
	assert.Equal(t, []string{"network-online.target"}, unit["Unit"]["Wants"])
}
