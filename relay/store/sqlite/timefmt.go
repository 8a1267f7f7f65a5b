package sqlite

import (
	"cmp"
	"database/sql"
	"fmt"
	"time"
)

// timeLayout is fixed-width and always UTC, so comparing the stored text
// compares the times. It keeps nanoseconds, so times round-trip exactly.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// formatTime renders t for storage. Years outside 0-9999 would break the
// fixed width, so they are refused.
func formatTime(t time.Time) (string, error) {
	t = t.UTC()
	if y := t.Year(); y < 0 || y > 9999 {
		return "", fmt.Errorf("time %s out of storable range", t)
	}
	return t.Format(timeLayout), nil
}

// formatOptTime renders a nullable time.
func formatOptTime(t *time.Time) (sql.NullString, error) {
	if t == nil {
		return sql.NullString{}, nil
	}
	s, err := formatTime(*t)
	if err != nil {
		return sql.NullString{}, err
	}
	return sql.NullString{String: s, Valid: true}, nil
}

// timeArgs renders the times of one statement for storage and keeps the
// first error, so they can be rendered as a group and checked once.
type timeArgs struct{ err error }

func (a *timeArgs) at(t time.Time) string {
	s, err := formatTime(t)
	a.err = cmp.Or(a.err, err)
	return s
}

func (a *timeArgs) opt(t *time.Time) sql.NullString {
	s, err := formatOptTime(t)
	a.err = cmp.Or(a.err, err)
	return s
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("stored time %q: %w", s, err)
	}
	return t, nil
}

func parseOptTime(s sql.NullString) (*time.Time, error) {
	if !s.Valid {
		return nil, nil
	}
	t, err := parseTime(s.String)
	if err != nil {
		return nil, err
	}
	return &t, nil
}
