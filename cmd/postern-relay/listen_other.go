//go:build !linux

package main

import "net"

// listenTCP opens addr; Go sets keep-alive on each accepted connection.
func listenTCP(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
