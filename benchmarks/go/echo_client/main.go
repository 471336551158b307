// echo_client drives an echo server for the echo benchmark (scripts/bench_echo): N
// connections, each a goroutine that sends a fixed-size message and waits for it to come
// back, for a fixed time. It prints one JSON object: round trips per second and latency
// percentiles over the measured window (after the warm-up).
//
//	echo_client -addr 127.0.0.1:7007 -conns 100 -size 64 -duration 5s -warmup 1s
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	Addr       string  `json:"addr"`
	Conns      int     `json:"conns"`
	Size       int     `json:"size"`
	Seconds    float64 `json:"seconds"`
	RoundTrips int64   `json:"round_trips"`
	RTPerSec   float64 `json:"rt_per_s"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p999_us"`
	MaxUs      float64 `json:"max_us"`
	Errors     int64   `json:"errors"`
	Gomaxprocs int     `json:"gomaxprocs"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:7007", "server address")
	conns := flag.Int("conns", 100, "connections (one goroutine each)")
	size := flag.Int("size", 64, "message size in bytes")
	duration := flag.Duration("duration", 5*time.Second, "measured time")
	warmup := flag.Duration("warmup", time.Second, "time before measuring")
	flag.Parse()

	cs := make([]net.Conn, *conns)
	for i := range cs {
		c, err := net.Dial("tcp", *addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "echo_client: connection %d: %v\n", i, err)
			os.Exit(1)
		}
		cs[i] = c
	}

	var errs int64
	var measuring, stop atomic.Bool
	lat := make([][]time.Duration, *conns)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func(i int, c net.Conn) {
			defer wg.Done()
			defer c.Close()
			msg := bytes.Repeat([]byte{byte('a' + i%26)}, *size)
			got := make([]byte, *size)
			mine := make([]time.Duration, 0, 1<<12)
			for !stop.Load() {
				t0 := time.Now()
				if _, err := c.Write(msg); err != nil {
					atomic.AddInt64(&errs, 1)
					return
				}
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					atomic.AddInt64(&errs, 1)
					return
				}
				if measuring.Load() {
					mine = append(mine, time.Since(t0))
				}
			}
			lat[i] = mine
		}(i, c)
	}
	time.Sleep(*warmup)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(*duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	stop.Store(true)
	wg.Wait()

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		k := int(p * float64(len(all)-1))
		return float64(all[k].Nanoseconds()) / 1e3
	}
	r := result{
		Addr: *addr, Conns: *conns, Size: *size, Seconds: elapsed.Seconds(),
		RoundTrips: int64(len(all)), RTPerSec: float64(len(all)) / elapsed.Seconds(),
		P50us: pct(0.50), P99us: pct(0.99), P999us: pct(0.999), MaxUs: pct(1),
		Errors: errs, Gomaxprocs: runtime.GOMAXPROCS(0),
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
	if errs > 0 {
		os.Exit(1)
	}
}
