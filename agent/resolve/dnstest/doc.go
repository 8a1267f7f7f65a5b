// Package dnstest runs real DNS servers on loopback for tests: a miekg/dns server on
// 127.0.0.1, UDP and TCP on one port, stopped when the test ends. It owns the fakes every
// test of the agent asks instead of the customer's DNS: a zone of records answered like a
// recursive server would, per-question reply functions for the failures a resolver must
// classify (SERVFAIL, NXDOMAIN, truncation, silence, forged replies), and a log of the
// questions asked, so a test can say how often a name was looked up.
//
// It is for tests only and imports nothing of the project, so agent/resolve's own tests can
// use it without an import cycle.
package dnstest
