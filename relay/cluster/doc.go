// Package cluster makes relay nodes that share one PostgreSQL database
// act as one relay: any node serves any connection, and a rolling restart
// fails nothing.
//
// Each node registers itself and every live agent session under leases
// renewed on the heartbeat (presence); a session's writes carry a
// sequence number and its end leaves a tombstone, so a late write cannot
// bring a closed session back. A node that gets a request for a
// connection whose tunnels are elsewhere forwards it, one hop only, over a
// persistent authenticated peer link (the same transport as agent
// tunnels) to a node that holds one; that node serves it from its own
// tunnels or answers at once that it no longer can. Revocations, token
// expiry and status events fan out with LISTEN/NOTIFY; a connection's
// status is computed from every node's sessions and each transition is
// published once, with cluster-ordered event ids; each webhook delivery is
// claimed by one node.
//
// It owns the cluster's shared state through store.Cluster and the peer
// links. Tunnels stay the broker's, and what a status is stays package
// status's.
package cluster
