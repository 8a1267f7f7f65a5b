package config

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
)

var (
	// ErrInvalid is matched (via errors.Is) by every problem found in a
	// configuration's content, as opposed to an I/O error reading it. A
	// reload that sees ErrInvalid keeps the old rules and reports "invalid".
	ErrInvalid = errors.New("invalid configuration")

	// ErrNoToken reports that neither POSTERN_AGENT_TOKEN nor token_file
	// yields a usable agent token.
	ErrNoToken = errors.New("no agent token")

	// ErrTokenPermissions reports a token file that users other than its
	// owner can read.
	ErrTokenPermissions = errors.New("token file readable by other users")
)

// Error is one problem in a configuration. It is located by file and line, or
// by the environment variable that supplied the bad value. Load and Parse
// return every Error they find joined with errors.Join.
type Error struct {
	File string // the config file name as given to Load or Parse
	Line int    // 1-based; 0 when the problem has no single line, such as a missing key
	Env  string // the POSTERN_* variable that supplied the value, if it came from the environment
	Msg  string

	err error // the cause, when another package found the problem
}

func (e *Error) Error() string {
	switch {
	case e.Env != "":
		return fmt.Sprintf("environment %s: %s", e.Env, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	default:
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
}

// Is makes every Error match ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Unwrap returns the cause, such as an allowlist error wrapping
// allowlist.ErrBadRule, or nil.
func (e *Error) Unwrap() error { return e.err }

func rank(err error) int {
	e := err.(*Error)
	if e.Env != "" {
		return math.MaxInt
	}
	return e.Line
}

// Problems unpacks an error of Load or Parse, which joins every problem
// found, into those problems in reading order, so that a report can list
// them one by one. Any error that joins nothing is its own one problem.
func Problems(err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, Problems(e)...)
	}
	return out
}

// maxProblems bounds how many problems one load reports, so a garbage file
// yields a readable answer rather than thousands of lines.
const maxProblems = 50

// origin says where a value came from: a line of the file or a variable of the
// environment. The zero origin means "not set anywhere".
type origin struct {
	line int
	env  string
}

// problems collects every problem found while loading one configuration.
type problems struct {
	file    string
	errs    []error
	dropped int
}

func (p *problems) add(o origin, format string, args ...any) {
	p.addCause(o, nil, format, args...)
}

func (p *problems) addCause(o origin, cause error, format string, args ...any) {
	if len(p.errs) >= maxProblems {
		p.dropped++
		return
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: o.line, Env: o.env, Msg: fmt.Sprintf(format, args...), err: cause})
}

func (p *problems) count() int { return len(p.errs) + p.dropped }

// err joins the problems in reading order: those about the whole file
// first, then by line, then those from the environment.
func (p *problems) err() error {
	errs := slices.Clone(p.errs)
	slices.SortStableFunc(errs, func(a, b error) int {
		return cmp.Compare(rank(a), rank(b))
	})
	if p.dropped > 0 {
		errs = append(errs, &Error{File: p.file, Msg: fmt.Sprintf("%d more problems not shown", p.dropped)})
	}
	return errors.Join(errs...)
}
