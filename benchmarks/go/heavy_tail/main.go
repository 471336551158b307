// heavy_tail: fan_out_fan_in's programs (bench.FanOut, bench.FanOutBatched) over a heavy-tailed cost: 99% of the
// items ~1 µs, 1% ~1 ms, which ones seeded (bench.HeavyTailMap): load balance.
package main

import "rillbench/internal/bench"

func main() {
	bench.FanMain("heavy_tail", bench.Options.CSItemsHeavyTail, bench.CSExpectedHeavyTail,
		bench.HeavyTailMap)
}
