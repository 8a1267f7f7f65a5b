package rootcmd

import "runtime/debug"

// Placeholders the programs' stamp variables hold when the build did not
// set them with -ldflags -X (the Makefile does).
const (
	unstampedVersion = "dev"
	unstampedCommit  = "none"
	unstampedDate    = "unknown"
)

// stamp fills what -ldflags left unset from the Go toolchain's build
// info: `go install module@version` records the module's version, and
// `go build` in a checkout a version derived from the VCS (a tag, or a
// pseudo-version naming the commit) with the revision and its time. What
// the build stamped always wins.
func stamp(version, commit, date string, info *debug.BuildInfo) (string, string, string) {
	if info == nil {
		return version, commit, date
	}
	if version == unstampedVersion && info.Main.Version != "" && info.Main.Version != "(devel)" {
		version = info.Main.Version
	}
	var revision, vcsTime string
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.time":
			vcsTime = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if commit == unstampedCommit && revision != "" {
		commit = revision[:min(12, len(revision))]
		if modified {
			commit += "-dirty"
		}
	}
	if date == unstampedDate && vcsTime != "" {
		date = vcsTime
	}
	return version, commit, date
}

// readBuildInfo is debug.ReadBuildInfo's answer, nil without one.
func readBuildInfo() *debug.BuildInfo {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	return info
}
