// go_worker: the Go peer of nats_bench's worker, written as a Go shop writes a JetStream
// work-queue worker with nats.go: fetch a batch from the pull consumer, do the work on
// each message, publish each result asynchronously with a message id derived from the
// input (stream and sequence, as rill::nats::publish does), wait for the publish
// acknowledgements, then acknowledge the batch. The same guarantee as the rill worker:
// an input is acknowledged only after its output is stored.
//
//   go_worker -url nats://127.0.0.1:4222 -idle 3s -batch 256
//
// Build (Debian's nats.go, GOPATH mode): benchmarks/nats/run builds it.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// work: FNV-1a over the payload after the header, stored at bytes 16..24 (nats_bench.cpp's
// work(), byte for byte).
func work(in []byte) []byte {
	out := make([]byte, len(in))
	copy(out, in)
	h := uint64(14695981039346656037)
	for _, b := range in[24:] {
		h ^= uint64(b)
		h *= 1099511628211
	}
	binary.LittleEndian.PutUint64(out[16:24], h)
	return out
}

func main() {
	url := flag.String("url", nats.DefaultURL, "server")
	idle := flag.Duration("idle", 3*time.Second, "exit after this long without input")
	batch := flag.Int("batch", 256, "messages per fetch")
	flag.Parse()
	nc, err := nats.Connect(*url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_worker:", err)
		os.Exit(1)
	}
	defer nc.Close()
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(*batch))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_worker:", err)
		os.Exit(1)
	}
	_, err = js.AddConsumer("BIN", &nats.ConsumerConfig{
		Durable: "work", AckPolicy: nats.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxDeliver: 5, MaxAckPending: 1 << 20, FilterSubject: "bench.in"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_worker: add consumer:", err)
	}
	sub, err := js.PullSubscribe("bench.in", "work", nats.Bind("BIN", "work"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_worker:", err)
		os.Exit(1)
	}
	last := time.Now()
	for {
		msgs, err := sub.Fetch(*batch, nats.MaxWait(250*time.Millisecond))
		if len(msgs) == 0 {
			if err != nil && err != nats.ErrTimeout {
				fmt.Fprintln(os.Stderr, "go_worker: fetch:", err)
			}
			if time.Since(last) > *idle {
				return
			}
			continue
		}
		last = time.Now()
		futures := make([]nats.PubAckFuture, 0, len(msgs))
		for _, m := range msgs {
			meta, err := m.Metadata()
			if err != nil {
				fmt.Fprintln(os.Stderr, "go_worker: metadata:", err)
				os.Exit(1)
			}
			out := nats.NewMsg("bench.out")
			out.Data = work(m.Data)
			out.Header.Set(nats.MsgIdHdr, "BIN:"+strconv.FormatUint(meta.Sequence.Stream, 10)+":0")
			f, err := js.PublishMsgAsync(out)
			if err != nil {
				fmt.Fprintln(os.Stderr, "go_worker: publish:", err)
				os.Exit(1)
			}
			futures = append(futures, f)
		}
		<-js.PublishAsyncComplete()
		for i, m := range msgs {
			select {
			case <-futures[i].Ok():
				m.Ack()
			case err := <-futures[i].Err():
				fmt.Fprintln(os.Stderr, "go_worker: publish:", err)
				m.Nak()
			}
		}
	}
}
