package cuda

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend/cuda/emu"
)

// TestEmuAdamWNoise runs TestGPUAdamWNoise on the CPU stand-ins for the
// CUDA libraries, in a subprocess whose library path finds them first.
func TestEmuAdamWNoise(t *testing.T) {
	dir := emu.Dir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestGPUAdamWNoise$", "-test.v", "-test.count=1")
	cmd.Env = emu.Env(dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestGPUAdamWNoise") {
		t.Fatalf("TestGPUAdamWNoise on the stand-ins (%v):\n%s", err, out)
	}
}
