package main

import (
	"strings"
	"testing"
)

// TestInspectPlan: the memory plan of the 4.2B student distilled from the
// online 15.6B teacher (bench/configs/distill-4b-15b.yaml): 18 bytes per
// parameter with the GPU defaults, 6 + 12/8 = 7.5 sharded over 8 GPUs, 8
// all-bf16; it fits an H200 and not an H100 80GB with the defaults.
func TestInspectPlan(t *testing.T) {
	base := []string{"inspect", "--config", "../../bench/configs/distill-4b-15b.yaml",
		"--set", "model.config=../../bench/configs/minitron-4b.json", "--set", "teacher.model=../../bench/configs/nemotron-4-15b.json"}
	cases := []struct {
		name  string
		extra []string
		want  []string
	}{
		{"defaults", nil, []string{"4.19B parameters", "15.63B parameters, online", "gradients f32, master weights f32, moments f32: 18.00 bytes per parameter",
			"master weights                     15.6 GiB", "H100 80GB       does not fit", "H200            fits"}},
		{"8 GPUs", []string{"--gpus", "8"}, []string{"per GPU of 8", "7.50 bytes per parameter", "H100 80GB       fits"}},
		{"all bf16", []string{"--set", "optimizer.master_weights=false", "--set", "optimizer.grad_dtype=bf16", "--set", "optimizer.state_dtype=bf16"},
			[]string{"gradients bf16, master weights none", "moments bf16: 8.00 bytes per parameter", "H100 80GB       fits"}},
		{"cpu", []string{"--set", "device=cpu"}, []string{"on cpu (float32)", "master weights none needed", "16.00 bytes per parameter"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := mustRun(t, append(base, c.extra...)...)
			for _, w := range c.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, r.stdout)
				}
			}
		})
	}
	if r := run(t, "", "inspect", "--config", "../../bench/configs/distill-4b-15b.yaml", "--set", "optimizer.grad_dtype=f16"); r.code == 0 || !strings.Contains(r.stderr, "optimizer.grad_dtype") {
		t.Errorf("a bad grad_dtype: exit %d, %s", r.code, r.stderr)
	}
}
