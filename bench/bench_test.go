package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestPresets: the real shapes have the published parameter counts
// (Minitron-4B-Base 4.19B, Nemotron-4 15B 15.6B).
func TestPresets(t *testing.T) {
	for name, want := range map[string]float64{"minitron-4b": 4.19e9, "nemotron-15b": 15.6e9} {
		s, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.Config("nemotron")
		if err != nil {
			t.Fatal(err)
		}
		if total, _ := c.NumParams(); math.Abs(float64(total)-want) > 0.01*want {
			t.Errorf("%s: %d parameters, want %.3g", name, total, want)
		}
	}
	if _, err := Preset("huge"); err == nil || !strings.Contains(err.Error(), "minitron-4b") {
		t.Fatalf("unknown preset: %v", err)
	}
}

// TestLoad against a fake server: every request counted once, failures
// apart, and tokens per second from the completion tokens reported.
func TestLoad(t *testing.T) {
	var calls, seeds atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Seed      int64 `json:"seed"`
			MaxTokens int   `json:"max_tokens"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		calls.Add(1)
		seeds.Add(req.Seed)
		if req.Seed%5 == 4 {
			http.Error(w, "no", http.StatusTooManyRequests)
			return
		}
		fmt.Fprintf(w, `{"usage": {"completion_tokens": %d}}`, req.MaxTokens)
	}))
	defer srv.Close()
	res, err := Load(context.Background(), LoadOptions{URL: srv.URL, Prompt: "x", Requests: 20, MaxTokens: 7}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 20 || seeds.Load() != 19*20/2 || res.Requests != 16 || res.Failures != 4 || res.Concurrency != 3 {
		t.Fatalf("%d calls (seed sum %d): %+v", calls.Load(), seeds.Load(), res)
	}
	if got := res.TokensPerSecond / res.RequestsPerSecond; math.Abs(got-7) > 1e-9 {
		t.Fatalf("%v tokens per request, want 7", got)
	}
	if res.P50ms <= 0 || res.P99ms < res.P50ms {
		t.Fatalf("latencies %+v", res)
	}
	srv.Close()
	if _, err := Load(context.Background(), LoadOptions{URL: srv.URL, Requests: 2}, 1); err == nil || !strings.Contains(err.Error(), "every request") {
		t.Fatalf("server down: %v", err)
	}
}
