package main

import (
	"context"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/relay/api"
	"github.com/postern/postern/relay/client"
)

func newNodesCmd() *cobra.Command { return adminEnv{getenv: os.Getenv}.nodesCmd() }

func (e adminEnv) nodesCmd() *cobra.Command {
	cmd, f := adminGroup("nodes", "List the relay nodes that share the store")
	cmd.AddCommand(apiCall[api.NodeList]{
		call: func(ctx context.Context, c *client.Client, _ []string) (api.NodeList, error) {
			return c.Nodes(ctx)
		},
		text: func(w io.Writer, list api.NodeList) error { return printNodes(w, list, time.Now()) },
	}.command(e, f, &cobra.Command{
		Use:   "list",
		Short: "List the nodes with a live lease: peer address, agent tunnels, draining, and how long ago each renewed its lease",
		Args:  cobra.NoArgs,
	}))
	return cmd
}

// printNodes writes one line per node; the node that answered is marked.
func printNodes(w io.Writer, list api.NodeList, now time.Time) error {
	rows := make([][]string, len(list.Nodes))
	for i, n := range list.Nodes {
		id := clean(n.ID)
		if n.Self {
			id += " (this node)"
		}
		peer, age, started := "-", "-", "-"
		if n.PeerURL != "" {
			peer = clean(n.PeerURL)
		}
		if !n.RenewedAt.IsZero() {
			age = now.Sub(n.RenewedAt).Round(100 * time.Millisecond).String()
		}
		if !n.StartedAt.IsZero() {
			started = formatTime(n.StartedAt)
		}
		rows[i] = []string{id, peer, strconv.Itoa(n.Sessions), yesNo(n.Draining), age, started}
	}
	return printTable(w, "", "NODE\tPEER\tSESSIONS\tDRAINING\tLEASE AGE\tSTARTED", rows)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
