// Package protocol is the wire contract between postern-agent and
// postern-relay: the WebSocket subprotocol name, the frames on the control
// stream and on each data stream, their length-prefixed codec, and the one
// table of reason codes that every hop reports.
//
// It imports only the standard library, so both ends and any third-party
// client can depend on it without pulling in either side. spec.md in this
// directory is the normative description; the code matches it and the
// golden vectors in testdata/ pin the bytes.
package protocol
