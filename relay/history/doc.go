// Package history keeps every connection's status transitions (tunnel,
// auth, allowlist) with their time, node and reason, and reads them back
// for people: how long each state lasted, and the share of time a tunnel
// was up over the last day and week.
//
// A single node writes its transitions through a Recorder, a bounded queue
// drained by one goroutine so that a slow store never holds up the status
// book; a cluster's transitions are stored once, by the publishing node,
// in the same table (package cluster), so the Recorder is not used there.
// A Pruner ages the history out after the retention period. The package
// decides no status: that is package status's, whose events it keeps.
package history
