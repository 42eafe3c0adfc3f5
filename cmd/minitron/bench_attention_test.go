package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/minitron/minitron/bench"
)

func TestBenchAttention(t *testing.T) {
	var res bench.Result
	r := mustRun(t, "bench", "attention", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--batch", "2", "--seq", "33", "--min-time", "1ms", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if res.FwdMs <= 0 || res.BwdMs <= 0 || res.KVGBs != 0 {
		t.Fatalf("forward %v ms, backward %v ms, KV %v GB/s", res.FwdMs, res.BwdMs, res.KVGBs)
	}
	// 2 sequences × 4 heads × head_dim 16 × (1+2+...+33) keys × 4 FLOPs.
	const flops = 4 * 2 * 4 * 16 * (33 * 34 / 2)
	if got := res.FwdTFLOPS * 1e12 * res.FwdMs / 1e3; math.Abs(got-flops)/flops > 1e-6 {
		t.Errorf("forward FLOPs %g, want %d", got, flops)
	}
	if got := res.BwdTFLOPS * 1e12 * res.BwdMs / 1e3; math.Abs(got-2.5*flops)/flops > 1e-6 {
		t.Errorf("backward FLOPs %g, want %g", got, 2.5*flops)
	}
	r = mustRun(t, "bench", "attention", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--batch", "1", "--seq", "1", "--past", "40", "--min-time", "1ms", "--json")
	res = bench.Result{}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	// Decoding: 41 keys and values of 2 KV heads × 16 float32 values.
	if res.BwdMs != 0 || math.Abs(res.KVGBs*1e9*res.FwdMs/1e3-2*41*32*4) > 1e-6*2*41*32*4 {
		t.Errorf("decode: backward %v ms, %v GB/s over %v ms", res.BwdMs, res.KVGBs, res.FwdMs)
	}
	if r := run(t, "", "bench", "attention", "--seq", "0"); r.code == 0 || !strings.Contains(r.stderr, "--seq 0") {
		t.Errorf("--seq 0: exit %d, %s", r.code, r.stderr)
	}
}
