// Package cutproxy is for tests only: a TCP proxy on loopback that cuts its first connection after a number
// of bytes, the way a network failure breaks an upload or a download half way.
package cutproxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards connections to a target. Up and Down count the bytes it forwarded from clients and to them;
// Cut is set once it cut a connection.
type Proxy struct {
	URL      string // http://its address
	Up, Down atomic.Int64
	Cut      atomic.Bool

	target         string
	cutUp, cutDown int64
	mu             sync.Mutex
	conns          []net.Conn
}

// Start starts a proxy to target (host:port) until the test ends. Its first connection is cut once it carried
// cutUp bytes from the client, or cutDown bytes to it (0: no limit that way).
func Start(tb testing.TB, target string, cutUp, cutDown int64) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{URL: "http://" + ln.Addr().String(), target: target, cutUp: cutUp, cutDown: cutDown}
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close() // idle keep-alive connections would hold the proxy open
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { p.serve(c) })
		}
	})
	return p
}

func (p *Proxy) serve(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, s)
	p.mu.Unlock()
	first := p.Cut.CompareAndSwap(false, true)
	up, down := int64(-1), int64(-1)
	if first {
		up, down = p.cutUp, p.cutDown
	}
	var wg sync.WaitGroup
	wg.Go(func() { copyCut(s, c, up, &p.Up); s.Close(); c.Close() })
	copyCut(c, s, down, &p.Down)
	c.Close()
	s.Close()
	wg.Wait()
}

// copyCut copies src to dst until either fails or limit bytes (when positive) went through.
func copyCut(dst, src net.Conn, limit int64, count *atomic.Int64) {
	if limit <= 0 {
		limit = 1 << 62
	}
	n, _ := io.Copy(dst, io.LimitReader(src, limit))
	count.Add(n)
}
