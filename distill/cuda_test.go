package distill

import (
	"testing"

	"github.com/minitron/minitron/backend/cuda/cudatest"
)

// TestCUDAIntermediateResume: distillation on the CUDA backend (run on the
// CPU stand-ins; bf16 weights with float32 master copies, the
// projection's included) resumes after an interrupt to the same bytes as
// an uninterrupted run.
func TestCUDAIntermediateResume(t *testing.T) { intermediateResume(t, cudatest.Backend(t)) }
