//go:build !unix

package cuda

import "time"

// processCPU is not measured here.
func processCPU() time.Duration { return 0 }
