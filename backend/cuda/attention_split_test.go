package cuda

import (
	"os"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/backendtest"
)

// TestGPUAttentionSplit runs the attention conformance cases with the keys
// of every row tile split in three (flash-decoding: partial results, then
// attention_combine). Attention splits on its own only when few row tiles
// would leave most multiprocessors idle, as batch-1 decoding does, which
// the suite's shapes rarely reach. Runs where the GPU tests run (on a GPU,
// or on the CPU stand-ins through emu_test.go).
func TestGPUAttentionSplit(t *testing.T) {
	err := Available()
	var b *Backend
	if err == nil {
		b, err = Open(Options{})
	}
	if err != nil {
		if os.Getenv("MINITRON_REQUIRE_GPU") == "1" {
			t.Fatalf("MINITRON_REQUIRE_GPU=1 but no usable GPU: %v", err)
		}
		t.Skipf("no usable GPU: %v", err)
	}
	b.attnSplit = 3
	backendtest.RunOnly(t, func(*testing.T) backend.Backend { return b }, backendtest.BF16, "Attention")
}
