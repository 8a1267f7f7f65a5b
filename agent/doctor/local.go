package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/agent/config"
	"github.com/postern/postern/protocol"
)

// checkConfig loads the config file. ok is false when there is no usable
// Config, and every later layer must be skipped. A bad ca_file fails the
// check (the agent refuses to start with it) but leaves ok true: the other
// layers still tell the admin something, with the system roots alone.
func (r *runner) checkConfig() (cfg *config.Config, tr *trust, ok bool) {
	path := r.opts.ConfigPath
	start := time.Now()
	cfg, err := config.Load(path, r.opts.Getenv)
	c := Check{Layer: LayerConfig, Target: path}
	defer func() {
		c.Duration = time.Since(start)
		r.add(c)
	}()
	if err != nil {
		c.Status = Fail
		switch {
		case errors.Is(err, fs.ErrNotExist):
			c.Detail = "no such file"
			c.Remediation = "pass --config FILE, or write the agent's config to " + shellQuote(path)
		case errors.Is(err, fs.ErrPermission):
			c.Detail = "cannot read the file: permission denied"
			c.Remediation = "run doctor as the user the agent service runs as (or with sudo)"
		case errors.Is(err, config.ErrInvalid):
			problems := config.Problems(err)
			noun := "problems"
			if len(problems) == 1 {
				noun = "problem"
			}
			lines := make([]string, 0, len(problems)+1)
			lines = append(lines, fmt.Sprintf("%d %s:", len(problems), noun))
			for _, p := range problems {
				lines = append(lines, "  "+p.Error())
			}
			c.Detail = strings.Join(lines, "\n")
			c.Remediation = "fix the lines above; `postern-agent validate --config " + shellQuote(path) + "` checks the file alone"
		default:
			c.Detail = err.Error()
			c.Remediation = "make " + shellQuote(path) + " a readable agent config file"
		}
		return nil, newTrust(""), false
	}

	allow, deny := cfg.Rules.Specs()
	c.Status = Pass
	c.Detail = fmt.Sprintf("%s, mode %s", plural(len(allow), "allow rule"), cfg.Mode)
	if len(deny) > 0 {
		c.Detail = fmt.Sprintf("%s, %s, mode %s", plural(len(allow), "allow rule"), plural(len(deny), "deny rule"), cfg.Mode)
	}
	tr = newTrust(cfg.CAFile)
	switch {
	case tr.err != nil:
		c.Status = Fail
		c.Detail += "; " + tr.err.Error()
		c.Remediation = "point ca_file at a readable PEM bundle; the agent will not start until it can read it"
	case len(allow) == 0:
		c.Status = Warn
		c.Detail += "; no allow rules, so every target will be refused"
		c.Remediation = "add allow rules for the services the cloud product must reach"
	}
	return cfg, tr, true
}

// checkToken finds the agent token the way the agent does and checks that
// it is private and not empty. The token itself never appears in a Check.
func (r *runner) checkToken(cfg *config.Config) (token string, ok bool) {
	start := time.Now()
	c := Check{Layer: LayerToken}
	defer func() {
		c.Duration = time.Since(start)
		r.add(c)
	}()

	if _, set := r.opts.Getenv(config.EnvAgentToken); set {
		c.Target = "env " + config.EnvAgentToken
		tok, err := cfg.LoadToken(r.opts.Getenv)
		if err != nil {
			c.Status, c.Detail = Fail, err.Error()
			c.Remediation = "set " + config.EnvAgentToken + " to the agent token (one word), or unset it to use token_file"
			return "", false
		}
		c.Status, c.Detail = Pass, "token set (not shown)"
		if cfg.TokenFile != "" {
			c.Detail += "; it overrides token_file " + cfg.TokenFile
		}
		return tok, true
	}

	if cfg.TokenFile == "" {
		c.Target = cfg.Path
		c.Status = Fail
		c.Detail = "no token: token_file is not set and " + config.EnvAgentToken + " is unset"
		c.Remediation = "set token_file in " + shellQuote(cfg.Path) + " to a file holding the agent token (mode 0600)"
		return "", false
	}
	path := cfg.TokenFile
	c.Target = path
	write := "write the agent token (shown once by `postern-relay connections create`) to " + shellQuote(path) +
		", then chmod 600 " + shellQuote(path)
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.Status, c.Detail, c.Remediation = Fail, "no such file", write
		return "", false
	case err != nil:
		c.Status, c.Detail = Fail, err.Error()
		c.Remediation = "run doctor as the user the agent service runs as (or with sudo)"
		return "", false
	case !fi.Mode().IsRegular():
		c.Status, c.Detail, c.Remediation = Fail, "not a regular file", write
		return "", false
	case runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0:
		c.Status = Fail
		c.Detail = fmt.Sprintf("mode %04o: other users can read the agent token", fi.Mode().Perm())
		c.Remediation = "chmod 600 " + shellQuote(path)
		return "", false
	case fi.Size() == 0:
		c.Status, c.Detail, c.Remediation = Fail, "the file is empty", write
		return "", false
	}
	tok, err := cfg.LoadToken(r.opts.Getenv)
	var shape *protocol.TokenShapeError
	switch {
	case errors.Is(err, fs.ErrPermission):
		c.Status, c.Detail = Fail, "cannot read the file: permission denied"
		c.Remediation = "run doctor as the user the agent service runs as (or with sudo)"
		return "", false
	case errors.Is(err, config.ErrNoToken):
		c.Status, c.Detail, c.Remediation = Fail, "the file holds only white space", write
		return "", false
	case errors.As(err, &shape):
		c.Status, c.Detail = Fail, shape.Error() // without the path, which is the target
		c.Remediation = "replace the content of " + shellQuote(path) + " with the agent token exactly as " +
			"`postern-relay connections create` or `rotate-token` printed it: one line of " + strconv.Itoa(protocol.AgentTokenLen) + " characters"
		return "", false
	case err != nil:
		c.Status, c.Detail, c.Remediation = Fail, err.Error(), write
		return "", false
	}
	c.Status = Pass
	c.Detail = fmt.Sprintf("present, mode %04o, not readable by other users (token not shown)", fi.Mode().Perm())
	return tok, true
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// shellQuote quotes a path for a command the admin will paste, when needed.
func shellQuote(path string) string {
	if path != "" && !strings.ContainsAny(path, " \t\n'\"$`\\;&|<>*?()[]{}!#~") {
		return path
	}
	return "'" + strings.ReplaceAll(path, "'", `'\''`) + "'"
}
