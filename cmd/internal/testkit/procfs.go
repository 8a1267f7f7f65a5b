package testkit

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Usage is what /proc says about a process at one moment.
type Usage struct {
	RSSKiB  int64 // VmRSS
	HWMKiB  int64 // VmHWM, the peak RSS so far
	Threads int64
	FDs     int
}

func (u Usage) String() string {
	return fmt.Sprintf("rss=%.1fMiB peak=%.1fMiB threads=%d fds=%d", float64(u.RSSKiB)/1024, float64(u.HWMKiB)/1024, u.Threads, u.FDs)
}

// ReadUsage reads /proc/PID/status and counts /proc/PID/fd. A process that
// has exited (a zombie has no memory lines) is an error.
func ReadUsage(pid int) (Usage, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Usage{}, err
	}
	u, err := parseUsage(string(data))
	if err != nil {
		return u, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return u, err
	}
	u.FDs = len(fds)
	return u, nil
}

// Usage reads the process's /proc numbers; see ReadUsage.
func (p *Process) Usage() (Usage, error) { return ReadUsage(p.Pid()) }

// PeakRSS reads the process's resident-set high-water mark (VmHWM) in
// bytes.
func (p *Process) PeakRSS() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0, fmt.Errorf("%s peak rss: %w", p.name, err)
	}
	return parseVmHWM(string(data))
}

// CPUTime reads the CPU time (user + system) the process has used so far.
func (p *Process) CPUTime() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		return 0, fmt.Errorf("%s cpu time: %w", p.name, err)
	}
	return parseCPUTime(string(data))
}

// parseUsage reads the memory and thread lines of a /proc/PID/status text.
func parseUsage(status string) (Usage, error) {
	var u Usage
	var rssErr, hwmErr, threadsErr error
	u.RSSKiB, rssErr = statusNumber(status, "VmRSS", "kB")
	u.HWMKiB, hwmErr = statusNumber(status, "VmHWM", "kB")
	u.Threads, threadsErr = statusNumber(status, "Threads", "")
	return u, errors.Join(rssErr, hwmErr, threadsErr)
}

// parseVmHWM returns the VmHWM value of a /proc/PID/status text in bytes.
func parseVmHWM(status string) (int64, error) {
	kb, err := statusNumber(status, "VmHWM", "kB")
	return kb << 10, err
}

// statusNumber returns the number of a "Key:  N unit" line of a
// /proc/PID/status text; unit is "" for a bare count.
func statusNumber(status, key, unit string) (int64, error) {
	val, ok := statusField(status, key)
	if !ok {
		return 0, fmt.Errorf("no %s line in /proc status", key)
	}
	fields := strings.Fields(val)
	if len(fields) == 0 || strings.Join(fields[1:], " ") != unit {
		return 0, fmt.Errorf("%s line %q: unexpected format", key, val)
	}
	n, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s line %q: %w", key, val, err)
	}
	return n, nil
}

// statusField returns the trimmed value of the first "Key:" line.
func statusField(status, key string) (string, bool) {
	for line := range strings.Lines(status) {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(rest), true
		}
	}
	return "", false
}

// clockTick is the unit of utime and stime in /proc/PID/stat. USER_HZ is
// 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// parseCPUTime returns utime + stime of a /proc/PID/stat line. The
// command name in parentheses may hold spaces and parentheses, so fields
// are counted from the last ')'.
func parseCPUTime(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("/proc stat: no command name")
	}
	// After the name: state (field 3) ... utime (14), stime (15).
	fields := strings.Fields(stat[i+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the name, want at least 13", len(fields))
	}
	var total int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("/proc stat: cpu field %q is not a tick count", f)
		}
		total += n
	}
	return time.Duration(total) * clockTick, nil
}
