// wsload: WebSocket load for ringmesh's gateway benchmarks (bench/gateway.py).
//
// Python clients cannot read 10,000 sockets fast enough to time a broadcast
// (they measured themselves, not the proxy): this holds and reads thousands of
// connections with one goroutine each.
//
//	wsload hold -url ws://127.0.0.1:P/ws -n 9900
//	    Opens n connections (answering pings), prints "ready N" on stdout,
//	    holds them until stdin closes, then prints "received M".
//
//	wsload broadcast -url ws://127.0.0.1:P/ws -api http://127.0.0.1:A -n 9900 -rounds 20 -size 100
//	    Opens n connections, then per round POSTs {"all": true, "text": ...}
//	    to /api/publish and times, on this process's monotonic clock, the POST
//	    to the last connection's receipt of that round's message. Prints one
//	    JSON object: p50/p99/max of that latency and of the API's answer (ms).
//	    The clients are raw sockets read by -loops epoll loops (raw.go);
//	    -client lib reads with a coder/websocket goroutine per connection
//	    (several times the client CPU: it timed itself as much as the proxy).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: wsload hold|broadcast [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	url := fs.String("url", "", "WebSocket URL (ws://...)")
	api := fs.String("api", "", "ringmesh API base URL (broadcast)")
	n := fs.Int("n", 1000, "connections")
	rounds := fs.Int("rounds", 20, "broadcasts (broadcast)")
	size := fs.Int("size", 100, "message bytes (broadcast)")
	conc := fs.Int("concurrency", 200, "handshakes in flight while opening")
	timeout := fs.Duration("timeout", 30*time.Second, "bound on every wait")
	client := fs.String("client", "raw", "broadcast clients: raw (epoll loops, see raw.go) or lib (a coder/websocket reader goroutine per connection)")
	loops := fs.Int("loops", 1, "epoll loops (OS threads) of the raw clients")
	proxyPid := fs.Int("pid", 0, "the proxy's pid: its CPU over the rounds is reported (raw clients)")
	_ = fs.Parse(os.Args[2:])
	if *url == "" {
		fail("-url is required")
	}
	switch os.Args[1] {
	case "hold":
		hold(*url, *n, *conc, *timeout)
	case "broadcast":
		if *api == "" {
			fail("-api is required")
		}
		if *client == "raw" {
			broadcastRaw(*url, *api, *n, *rounds, *size, *conc, *loops, *proxyPid, *timeout)
		} else {
			broadcast(*url, *api, *n, *rounds, *size, *conc, *timeout)
		}
	default:
		fail("unknown mode " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "wsload:", msg)
	os.Exit(1)
}

// receipt is called for every text message a connection reads.
type receipt func(conn int, data []byte)

// openAll dials n connections (at most conc handshakes at once) and starts a
// reader per connection; readers stop when ctx ends.
func openAll(ctx context.Context, url string, n, conc int, timeout time.Duration, on receipt) []*websocket.Conn {
	conns := make([]*websocket.Conn, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			c, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{
				CompressionMode: websocket.CompressionDisabled,
			})
			if err != nil {
				errs <- fmt.Errorf("dial %d: %w", i, err)
				return
			}
			c.SetReadLimit(1 << 20)
			conns[i] = c
			go func() {
				for {
					typ, data, err := c.Read(ctx)
					if err != nil {
						return
					}
					if typ == websocket.MessageText {
						on(i, data)
					}
				}
			}()
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fail(err.Error())
	}
	return conns
}

func hold(url string, n, conc int, timeout time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	var got atomic.Int64
	conns := openAll(ctx, url, n, conc, timeout, func(int, []byte) { got.Add(1) })
	fmt.Printf("ready %d\n", len(conns))
	_, _ = io.Copy(io.Discard, os.Stdin)
	fmt.Printf("received %d\n", got.Load())
	cancel()
	for _, c := range conns {
		_ = c.CloseNow()
	}
}

func broadcast(url, api string, n, rounds, size, conc int, timeout time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Per round: how many connections got its message, and when the last did.
	var mu sync.Mutex
	count := make([]int, rounds)
	last := make([]time.Time, rounds)
	done := make([]chan struct{}, rounds)
	for r := range done {
		done[r] = make(chan struct{})
	}
	conns := openAll(ctx, url, n, conc, timeout, func(_ int, data []byte) {
		now := time.Now()
		// Messages are "R<round>:" then padding.
		end := bytes.IndexByte(data, ':')
		if len(data) < 2 || data[0] != 'R' || end < 0 {
			return
		}
		r, err := strconv.Atoi(string(data[1:end]))
		if err != nil || r < 0 || r >= rounds {
			return
		}
		mu.Lock()
		count[r]++
		if now.After(last[r]) {
			last[r] = now
		}
		if count[r] == n {
			close(done[r])
		}
		mu.Unlock()
	})
	time.Sleep(time.Second)
	client := &http.Client{Timeout: timeout}
	lat := make([]float64, 0, rounds)
	answers := make([]float64, 0, rounds)
	for r := 0; r < rounds; r++ {
		text := fmt.Sprintf("R%d:", r)
		if len(text) < size {
			text += strings.Repeat("x", size-len(text))
		}
		body, _ := json.Marshal(map[string]any{"all": true, "text": text})
		t0 := time.Now()
		resp, err := client.Post(api+"/api/publish", "application/json", bytes.NewReader(body))
		if err != nil {
			fail("publish: " + err.Error())
		}
		var res struct {
			Delivered int `json:"delivered"`
			Dropped   int `json:"dropped"`
		}
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		answered := time.Since(t0)
		if err != nil || resp.StatusCode != 200 {
			fail(fmt.Sprintf("publish: status %d, %v", resp.StatusCode, err))
		}
		if res.Delivered < n {
			fail(fmt.Sprintf("publish delivered %d of %d (dropped %d)", res.Delivered, n, res.Dropped))
		}
		select {
		case <-done[r]:
		case <-time.After(timeout):
			mu.Lock()
			c := count[r]
			mu.Unlock()
			fail(fmt.Sprintf("round %d: %d of %d received", r, c, n))
		}
		mu.Lock()
		lat = append(lat, ms(last[r].Sub(t0)))
		mu.Unlock()
		answers = append(answers, ms(answered))
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	for _, c := range conns {
		_ = c.CloseNow()
	}
	out := map[string]any{
		"sessions":   n,
		"rounds":     rounds,
		"size":       size,
		"p50_ms":     pct(lat, 0.50),
		"p99_ms":     pct(lat, 0.99),
		"max_ms":     pct(lat, 1),
		"api_p50_ms": pct(answers, 0.50),
		"api_p99_ms": pct(answers, 0.99),
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pct is the nearest-rank percentile q of v (q = 1: the maximum).
func pct(v []float64, q float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	i := int(q*float64(len(s))+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

func broadcastRaw(url, api string, n, rounds, size, conc, loops, pid int, timeout time.Duration) {
	conns := rawOpen(url, n, conc)
	st := &roundStats{
		count: make([]atomic.Int64, rounds),
		last:  make([]atomic.Int64, rounds),
		done:  make([]chan struct{}, rounds),
		n:     int64(n),
		start: time.Now(),
	}
	for r := range st.done {
		st.done[r] = make(chan struct{})
	}
	stop := make(chan struct{})
	rawRead(conns, loops, st.receipt, stop)
	time.Sleep(time.Second)
	cpu0, pcpu0 := cpuSelf(), cpuOf(pid)
	client := &http.Client{Timeout: timeout}
	lat := make([]float64, 0, rounds)
	answers := make([]float64, 0, rounds)
	for r := 0; r < rounds; r++ {
		text := fmt.Sprintf("R%d:", r)
		if len(text) < size {
			text += strings.Repeat("x", size-len(text))
		}
		body, _ := json.Marshal(map[string]any{"all": true, "text": text})
		t0 := time.Since(st.start)
		resp, err := client.Post(api+"/api/publish", "application/json", bytes.NewReader(body))
		if err != nil {
			fail("publish: " + err.Error())
		}
		var res struct {
			Delivered int `json:"delivered"`
			Dropped   int `json:"dropped"`
		}
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		answered := time.Since(st.start) - t0
		if err != nil || resp.StatusCode != 200 {
			fail(fmt.Sprintf("publish: status %d, %v", resp.StatusCode, err))
		}
		if res.Delivered < n {
			fail(fmt.Sprintf("publish delivered %d of %d (dropped %d)", res.Delivered, n, res.Dropped))
		}
		select {
		case <-st.done[r]:
		case <-time.After(timeout):
			fail(fmt.Sprintf("round %d: %d of %d received", r, st.count[r].Load(), n))
		}
		lat = append(lat, ms(time.Duration(st.last[r].Load())-t0))
		answers = append(answers, ms(answered))
		time.Sleep(200 * time.Millisecond)
	}
	// Over the rounds only (not the set-up), the 200 ms pauses included.
	cpuRounds := (cpuSelf() - cpu0) / float64(rounds)
	proxyRounds := (cpuOf(pid) - pcpu0) / float64(rounds)
	close(stop)
	for _, c := range conns {
		_ = syscall.Close(c.fd)
	}
	out := map[string]any{
		"sessions":                n,
		"rounds":                  rounds,
		"size":                    size,
		"client":                  "raw",
		"client_cpu_ms_per_round": cpuRounds,
		"proxy_cpu_ms_per_round":  proxyRounds,
		"p50_ms":                  pct(lat, 0.50),
		"p99_ms":                  pct(lat, 0.99),
		"max_ms":                  pct(lat, 1),
		"api_p50_ms":              pct(answers, 0.50),
		"api_p99_ms":              pct(answers, 0.99),
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}

// cpuSelf is this process's user+system CPU time so far, in ms.
func cpuSelf() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec)*1000 + float64(t.Usec)/1000 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// cpuOf is process pid's user+system CPU time so far, in ms (0 without a pid).
func cpuOf(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) * 10 // clock ticks of 10 ms
}
