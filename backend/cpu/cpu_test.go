package cpu_test

import (
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/backendtest"
	"github.com/minitron/minitron/backend/cpu"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return cpu.New() }, backendtest.F32)
}
