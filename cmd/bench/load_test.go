package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Bounds of one HTTP load run: it stops at whichever comes first.
const (
	httpDuration    = 2 * time.Second
	httpMaxRequests = 200_000
	requestTimeout  = 15 * time.Second
)

// bulk runs streams concurrent transfers of total/streams bytes each in
// direction op and returns the aggregate rate in MB/s (10^6 bytes). The
// clock covers the transfers only: every stream is opened first.
func bulk(ctx context.Context, dial dialFunc, addr string, op byte, streams int, total int64, pattern []byte) (float64, error) {
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range streams {
		c, err := dial(ctx, addr)
		if err != nil {
			return 0, err
		}
		_ = c.SetDeadline(time.Now().Add(connDeadline))
		conns = append(conns, c)
	}
	per := total / int64(streams)
	var g errgroup.Group
	start := time.Now()
	for _, c := range conns {
		g.Go(func() error { return transfer(c, op, per, pattern) })
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return float64(per*int64(streams)) / time.Since(start).Seconds() / 1e6, nil
}

// transfer runs one sink/source exchange of n bytes on c and checks that
// every byte arrived.
func transfer(c net.Conn, op byte, n int64, pattern []byte) error {
	var hdr [headerLen]byte
	hdr[0] = op
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return fmt.Errorf("send header: %w", err)
	}
	switch op {
	case opUpload:
		if err := writeN(c, pattern, n); err != nil {
			return fmt.Errorf("upload: %w", err)
		}
		var ack [8]byte
		if _, err := io.ReadFull(c, ack[:]); err != nil {
			return fmt.Errorf("upload ack: %w", err)
		}
		if got := int64(binary.BigEndian.Uint64(ack[:])); got != n {
			return fmt.Errorf("upload: target counted %d of %d bytes", got, n)
		}
	case opDownload:
		if got, err := readN(c, n); err != nil {
			return fmt.Errorf("download after %d of %d bytes: %w", got, n, err)
		}
	default:
		return fmt.Errorf("transfer: unsupported op %q", op)
	}
	return nil
}

// httpResult is one HTTP load run.
type httpResult struct {
	requests int
	rps      float64
	p50, p99 time.Duration
}

// httpLoad sends GET url from conc workers for httpDuration (at most
// httpMaxRequests in all). With keepAlive each worker reuses its
// connection and the connections are opened before the clock starts;
// without it every request dials anew (a CONNECT each, through the
// tunnel) and pays for it. A non-nil via sends the requests to that
// proxy as plain http:// proxy requests, and dial is not used.
func httpLoad(ctx context.Context, dial dialFunc, via *neturl.URL, url string, conc int, keepAlive bool) (httpResult, error) {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dial(ctx, addr)
		},
		DisableKeepAlives:     !keepAlive,
		DisableCompression:    true,
		MaxIdleConns:          conc,
		MaxIdleConnsPerHost:   conc,
		ResponseHeaderTimeout: requestTimeout,
	}
	if via != nil {
		tr.Proxy, tr.DialContext = http.ProxyURL(via), nil
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: requestTimeout}

	g, gctx := errgroup.WithContext(ctx)
	var (
		ready   sync.WaitGroup
		start   = make(chan struct{})
		issued  atomic.Int64
		mu      sync.Mutex
		all     []time.Duration
		stopAt  time.Time // written before start is closed
		started time.Time
	)
	ready.Add(conc)
	for range conc {
		g.Go(func() error {
			if keepAlive {
				if err := get(gctx, hc, url); err != nil {
					ready.Done()
					return fmt.Errorf("warm-up: %w", err)
				}
			}
			ready.Done()
			select {
			case <-start:
			case <-gctx.Done():
				return nil
			}
			lat := make([]time.Duration, 0, 1024)
			defer func() {
				mu.Lock()
				all = append(all, lat...)
				mu.Unlock()
			}()
			for gctx.Err() == nil && time.Now().Before(stopAt) && issued.Add(1) <= httpMaxRequests {
				t0 := time.Now()
				if err := get(gctx, hc, url); err != nil {
					return err
				}
				lat = append(lat, time.Since(t0))
			}
			return nil
		})
	}
	ready.Wait()
	started = time.Now()
	stopAt = started.Add(httpDuration)
	close(start)
	if err := g.Wait(); err != nil {
		return httpResult{}, err
	}
	elapsed := time.Since(started)
	if len(all) == 0 {
		return httpResult{}, fmt.Errorf("no request completed")
	}
	slices.Sort(all)
	return httpResult{
		requests: len(all),
		rps:      float64(len(all)) / elapsed.Seconds(),
		p50:      all[len(all)*50/100],
		p99:      all[min(len(all)-1, len(all)*99/100)],
	}, nil
}

func get(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || len(body) != len(httpBody) {
		return fmt.Errorf("target answered %s with %d bytes", resp.Status, len(body))
	}
	return nil
}
