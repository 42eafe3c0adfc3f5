package cuda

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/minitron/minitron/backend/cuda/emu"
)

// pendingOnEmu lists conformance cases the CUDA backend does not pass yet,
// by full test name. They are skipped on the CPU stand-ins, by name, and
// fail on a real GPU. Remove an entry once the backend handles the case.
var pendingOnEmu = []string{
	// AttentionBackward with a KV cache (Past), which the flash attention
	// kernels of kernels/attention.cu do not implement yet.
	"TestGPUConformance/AttentionBackward/B=2/T=3/H=2/KV=1/hd=4/past=[2_6]",
}

// skipPattern turns full test names into a -test.skip pattern.
func skipPattern(names []string) string {
	var alts []string
	for _, n := range names {
		var parts []string
		for _, p := range strings.Split(n, "/") {
			parts = append(parts, "^"+regexp.QuoteMeta(p)+"$")
		}
		alts = append(alts, strings.Join(parts, "/"))
	}
	return strings.Join(alts, "|")
}

// TestEmuGPUTests runs the GPU tests of gpu_test.go (the whole conformance
// suite with bfloat16 tolerances, and the fixture parity) on the CPU
// stand-ins for the CUDA libraries, in a subprocess whose LD_LIBRARY_PATH
// finds them first.
func TestEmuGPUTests(t *testing.T) {
	dir := emu.Dir(t)
	args := []string{"-test.run=^(TestGPUConformance|TestGPUFixtureParity)$", "-test.v", "-test.count=1"}
	if len(pendingOnEmu) > 0 {
		args = append(args, "-test.skip="+skipPattern(pendingOnEmu))
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = emu.Env(dir, "MINITRON_REQUIRE_GPU=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the GPU tests on the stand-ins failed (%v):\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "relative error") || strings.Contains(line, "compiled") || strings.HasPrefix(line, "--- ") {
			t.Log(strings.TrimSpace(line))
		}
	}
	t.Logf("GPU tests on the stand-ins took %v", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(string(out), "--- PASS: TestGPUConformance") || !strings.Contains(string(out), "--- PASS: TestGPUFixtureParity") {
		t.Fatalf("the GPU tests did not run:\n%s", out)
	}
}
