// grpcload: a gRPC unary server and an open-loop load client for
// bench/grpc_p99.py (issue 13: the p99 ringmesh adds to a gRPC unary call
// at 1,000 requests/s). Raw-bytes codec and a hand-registered service, so
// no protoc is needed.
//
//	grpcload serve -addr 127.0.0.1:PORT
//	grpcload load -addr 127.0.0.1:PORT [-tls] [-rate 1000] [-duration 5s] [-warmup 500]
//
// The client schedules call i at start + i/rate and runs each call in its
// own goroutine (open loop: a slow call does not delay the next one, so a
// proxy stall is not hidden by the calls it would have held back). A call's
// latency is measured from when its goroutine starts it (p50_us ...); the
// same from its scheduled time (sched_p50_us ...) adds the client's own
// wake-up lateness (time.Sleep overshoot, goroutine start), which on a busy
// 2-core machine is of the order of the figure measured. It prints one JSON
// line; times in microseconds.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// rawCodec passes []byte messages through unchanged.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case *[]byte:
		return *m, nil
	}
	return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*m = append((*m)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

const method = "/t.T/Unary"

func unary(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	return append([]byte("u:"), in...), nil
}

var desc = grpc.ServiceDesc{
	ServiceName: "t.T",
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: unary}},
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	s.RegisterService(&desc, nil)
	fmt.Println("ready", ln.Addr().String())
	if err := s.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func pct(xs []time.Duration, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(float64(len(xs)) * p)
	if i >= len(xs) {
		i = len(xs) - 1
	}
	return float64(xs[i].Nanoseconds()) / 1e3
}

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	addr := fs.String("addr", "", "server address host:port")
	useTLS := fs.Bool("tls", false, "TLS (h2 by ALPN), certificate not verified")
	rate := fs.Float64("rate", 1000, "calls per second")
	duration := fs.Duration("duration", 5*time.Second, "how long to send")
	warmup := fs.Int("warmup", 500, "sequential calls before measuring")
	size := fs.Int("size", 16, "request message bytes")
	slow := fs.Duration("slow", 0, "print the calls slower than this to stderr (diagnosis)")
	fs.Parse(args)
	creds := insecure.NewCredentials()
	if *useTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	}
	cc, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer cc.Close()
	req := make([]byte, *size)
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var out []byte
		return cc.Invoke(ctx, method, req, &out)
	}
	for i := 0; i < *warmup; i++ {
		if err := call(); err != nil {
			fmt.Fprintln(os.Stderr, "warm-up call failed:", err)
			os.Exit(1)
		}
	}
	n := int(*rate * duration.Seconds())
	lat := make([]time.Duration, n)
	late := make([]time.Duration, n)
	failed := make([]bool, n)
	var firstErr error
	var errMu sync.Mutex
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / *rate)
	start := time.Now().Add(10 * time.Millisecond)
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func(i int, due time.Time) {
			defer wg.Done()
			t0 := time.Now()
			err := call()
			lat[i] = time.Since(t0)
			late[i] = time.Since(due)
			failed[i] = err != nil
			if err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			}
		}(i, due)
	}
	wg.Wait()
	if *slow > 0 {
		for i := range lat {
			if lat[i] > *slow {
				fmt.Fprintf(os.Stderr, "slow call %d at +%v: %v\n", i, time.Duration(i)*interval, lat[i])
			}
		}
	}
	ok := lat[:0:0]
	sched := lat[:0:0]
	errors := 0
	for i := range lat {
		if failed[i] {
			errors++
		} else {
			ok = append(ok, lat[i])
			sched = append(sched, late[i])
		}
	}
	sort.Slice(ok, func(a, b int) bool { return ok[a] < ok[b] })
	sort.Slice(sched, func(a, b int) bool { return sched[a] < sched[b] })
	out := map[string]any{
		"calls": len(ok), "errors": errors,
		"p50_us": pct(ok, 0.5), "p90_us": pct(ok, 0.9), "p99_us": pct(ok, 0.99),
		"p999_us": pct(ok, 0.999), "max_us": pct(ok, 1),
		"sched_p50_us": pct(sched, 0.5), "sched_p99_us": pct(sched, 0.99),
	}
	if firstErr != nil {
		out["first_error"] = firstErr.Error()
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: grpcload serve|load [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "load":
		load(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "usage: grpcload serve|load [flags]")
		os.Exit(2)
	}
}
